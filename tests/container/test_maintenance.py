"""pack_all_loose, clean_storage, repack, delete_objects, validate, and the container lock."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dosfs import Container, InconsistentContent, LockedError, NotExistent


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("compress", [False, True, "auto"])
def test_pack_all_loose(small_packs: Container, make_blobs, compress) -> None:  # type: ignore[no-untyped-def]
    blobs = make_blobs(60)
    keys = [small_packs.add_object(b) for b in blobs]
    small_packs.pack_all_loose(compress=compress)
    count = small_packs.count_objects()
    assert count.packed == 60 and count.loose == 60  # like disk-objectstore: loose copies stay
    for k, b in zip(keys, blobs, strict=True):
        meta = small_packs.get_object_meta(k)
        assert meta.type == "packed" and small_packs.get_object_content(k) == b
        if compress is True:
            assert meta.pack_compressed
        if compress is False:
            assert not meta.pack_compressed
    small_packs.clean_storage()
    assert small_packs.count_objects().loose == 0
    assert small_packs.validate_report().is_valid()
    small_packs.pack_all_loose()  # nothing to do
    assert small_packs.count_objects().packed == 60


def test_pack_all_loose_cleaning(container: Container) -> None:
    keys = [container.add_object(bytes([i]) * 10) for i in range(30)]
    container.pack_all_loose(clean_loose_per_pack=True)
    assert container.count_objects().loose == 0
    assert all(container.get_object_meta(k).type == "packed" for k in keys)


def test_pack_all_loose_rejects_corrupt_loose(container: Container, folder: Path) -> None:
    h = container.add_object(b"genuine")
    (folder / "loose" / h[:2] / h[2:]).write_bytes(b"tampered")
    with pytest.raises(InconsistentContent, match=h):
        container.pack_all_loose()
    assert container.count_objects().packed == 0
    assert (
        (folder / "packs" / "0").stat().st_size == 0 if (folder / "packs" / "0").exists() else True
    )
    report = container.validate_report()
    assert report.invalid_hashes_loose == [h] and not report.is_valid()


def test_pack_progress_callback(container: Container) -> None:
    for i in range(5):
        container.add_object(bytes([i]))
    events: list[str] = []
    container.pack_all_loose(callback=lambda action, value: events.append(action))
    assert events[0] == "init" and events[-1] == "close" and "update" in events


def test_delete_objects(container: Container, folder: Path) -> None:
    loose = container.add_object(b"loose")
    packed, both = container.add_objects_to_pack([b"packed", b"both"])
    container.add_object(b"both")
    (folder / "duplicates" / f"{loose}.abc").write_bytes(b"loose")
    deleted = container.delete_objects([loose, packed, both, "0" * 64, "junk"])
    assert sorted(deleted) == sorted([loose, packed, both])
    for k in (loose, packed, both):
        with pytest.raises(NotExistent):
            container.get_object_content(k)
    assert os.listdir(folder / "duplicates") == []
    assert container.validate_report().is_valid()


def test_repack_removes_holes_and_keeps_content(
    small_packs: Container, folder: Path, make_blobs
) -> None:  # type: ignore[no-untyped-def]
    blobs = make_blobs(50)
    keys = small_packs.add_objects_to_pack(blobs[:25]) + small_packs.add_objects_to_pack(
        blobs[25:], compress=True
    )
    before = sum((folder / "packs" / p).stat().st_size for p in os.listdir(folder / "packs"))
    small_packs.delete_objects(keys[::3])
    small_packs.repack()
    after = sum((folder / "packs" / p).stat().st_size for p in os.listdir(folder / "packs"))
    assert after < before
    assert not (folder / "packs" / "-1").exists()
    live = {k: b for i, (k, b) in enumerate(zip(keys, blobs, strict=True)) if i % 3}
    assert small_packs.get_objects_content(list(live)) == live
    report = small_packs.validate_report()
    assert report.is_valid() and not report.has_warnings(), report.summary()
    total = small_packs.get_total_size()
    assert total.total_size_packed_on_disk == total.total_size_packfiles_on_disk


@pytest.mark.parametrize("mode", ["yes", "no", "auto"])
def test_repack_changes_compression(container: Container, mode: str) -> None:
    text, noise = b"t" * 50_000, os.urandom(5000)
    keys = container.add_objects_to_pack([text, noise], compress=(mode != "yes"))
    container.repack(compress_mode=mode)
    metas = [container.get_object_meta(k) for k in keys]
    if mode == "yes":
        assert all(m.pack_compressed for m in metas)
    elif mode == "no":
        assert not any(m.pack_compressed for m in metas)
    else:
        assert metas[0].pack_compressed and not metas[1].pack_compressed
    assert container.get_object_content(keys[0]) == text
    assert container.get_object_content(keys[1]) == noise
    assert container.validate_report().is_valid()


def test_repack_drops_empty_packs(small_packs: Container, folder: Path) -> None:
    keys = small_packs.add_objects_to_pack([bytes([i]) * 4000 for i in range(12)])
    small_packs.delete_objects(keys[:6])
    small_packs.repack()
    assert small_packs.count_objects().pack_files < 4
    assert small_packs.validate_report().is_valid()


def test_repack_recovers_interrupted_repack(container: Container, folder: Path) -> None:
    """Rows left on pack -1 (a repack that died between its commits) are given a new pack."""
    (h,) = container.add_objects_to_pack([b"survivor"])
    os.link(folder / "packs" / "0", folder / "packs" / "-1")
    conn = container.index.write_conn()
    conn.execute("UPDATE db_object SET pack_id = -1")
    conn.close()
    assert container.get_object_content(h) == b"survivor"  # readable in the middle state
    report = container.validate_report()
    assert report.is_valid() and report.unreferenced_pack_files == ["0"]
    container.repack()
    assert container.get_object_content(h) == b"survivor"
    assert container.get_object_meta(h).pack_id >= 0
    assert not (folder / "packs" / "-1").exists()
    assert container.validate_report().is_valid()


def test_clean_storage(container: Container, folder: Path) -> None:
    h = container.add_object(b"dup")
    (folder / "duplicates" / f"{h}.x1").write_bytes(b"dup")
    (folder / "duplicates" / ".DS_Store").write_bytes(b"")
    (folder / "sandbox" / "orphan").write_bytes(b"partial")
    (folder / "packs" / "-1").write_bytes(b"leftover")
    container.add_objects_to_pack([b"dup"])
    report = container.validate_report()
    assert report.is_valid() and report.has_warnings()
    assert report.sandbox_leftovers == ["orphan"] and report.duplicates == [f"{h}.x1"]
    assert report.unreferenced_pack_files == ["-1"]
    container.clean_storage(vacuum=True)  # orphan is too young to be removed
    assert os.listdir(folder / "duplicates") == [".DS_Store"]
    assert not (folder / "loose" / h[:2] / h[2:]).exists()
    assert os.listdir(folder / "sandbox") == ["orphan"]
    container.clean_storage(sandbox_max_age=0)
    assert os.listdir(folder / "sandbox") == []
    report = container.validate_report()
    assert report.is_valid() and not report.has_warnings(), report.summary()


def test_clean_storage_restores_good_duplicate(container: Container, folder: Path) -> None:
    h = container.add_object(b"precious")
    (folder / "loose" / h[:2] / h[2:]).write_bytes(b"rotten")
    (folder / "duplicates" / f"{h}.1").write_bytes(b"precious")
    container.clean_storage()
    assert container.get_object_content(h) == b"precious"
    (folder / "duplicates" / f"{h}.2").write_bytes(b"bad")
    (folder / "loose" / h[:2] / h[2:]).write_bytes(b"rotten")
    with pytest.raises(InconsistentContent):
        container.clean_storage()


def test_clean_keeps_loose_if_pack_is_missing(container: Container, folder: Path) -> None:
    h = container.add_object(b"only copy")
    container.pack_all_loose()
    (folder / "packs" / "0").unlink()
    container.clean_storage()
    assert (folder / "loose" / h[:2] / h[2:]).exists()


def test_validate_detects_overlap_and_size(container: Container) -> None:
    a, b = container.add_objects_to_pack([b"aaaa", b"bbbb"])
    conn = container.index.write_conn()
    conn.execute("UPDATE db_object SET offset = 2 WHERE hashkey = ?", (b,))
    conn.execute("UPDATE db_object SET size = 99 WHERE hashkey = ?", (a,))
    conn.close()
    report = container.validate_report()
    assert report.overlapping_packed == [b]
    assert report.invalid_sizes_packed == [a]
    assert report.invalid_hashes_packed == [b]
    assert "PROBLEMS" in report.summary()
    assert report["overlapping_packed"] == [b] and report.get("nope", 1) == 1
    assert "invalid_hashes_loose" in list(report.keys())


def test_validate_invalid_loose_names(container: Container, folder: Path) -> None:
    (folder / "loose" / "zz").mkdir()
    (folder / "loose" / "ab").mkdir()
    (folder / "loose" / "ab" / "short").write_bytes(b"")
    report = container.validate_report()
    assert sorted(report.invalid_loose_names) == ["ab/short", "zz"]


_HOLDER = textwrap.dedent(
    """
    import sys, time
    from dosfs import Container
    c = Container(sys.argv[1])
    with c.lock.hold("a long test operation"):
        print("held", flush=True)
        sys.stdin.readline()
    """
)


def test_maintenance_lock_refuses_across_processes(container: Container) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(container.folder)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        for op in (
            lambda: container.pack_all_loose(),
            lambda: container.add_objects_to_pack([b"x"]),
            lambda: container.repack(),
            lambda: container.delete_objects(["0" * 64]),
            lambda: container.clean_storage(),
        ):
            with pytest.raises(LockedError, match="a long test operation"):
                op()
        assert container.lock.is_held_elsewhere()
        # readers and loose writers do not care
        h = container.add_object(b"still fine")
        assert container.get_object_content(h) == b"still fine"
    finally:
        assert proc.stdin is not None
        proc.stdin.write("\n")
        proc.stdin.close()
        proc.wait(timeout=30)
    container.pack_all_loose()
    assert not container.lock.is_held_elsewhere()


def test_lock_reentrant_and_threads_queue(container: Container) -> None:
    import threading

    with container.lock.hold("outer"):
        with container.lock.hold("inner"):
            pass
    results: list[object] = []

    def pack(i: int) -> None:
        try:
            results.append(container.add_objects_to_pack([bytes([i]) * 100]))
        except Exception as exc:  # noqa: BLE001
            results.append(exc)

    threads = [threading.Thread(target=pack, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(isinstance(r, list) for r in results), results
    assert container.count_objects().packed == 8
