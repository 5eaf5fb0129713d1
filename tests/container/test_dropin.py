"""dosfs.Container as a drop-in for disk-objectstore 1.5's Container (issue 9): the same public
methods with the same parameters, order and defaults, each parameter doing what it does there,
the same result shapes, and nothing left open."""

from __future__ import annotations

import gc
import hashlib
import inspect
import io
import os
from pathlib import Path
from typing import Any

import disk_objectstore
import pytest
from disk_objectstore.container import ObjectType as DosObjectType
from disk_objectstore.utils import CompressMode as DosCompressMode

from dosfs import Container, InconsistentContent, LockedError, ObjectType, ValidationIssues


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def public_methods(cls: type) -> dict[str, Any]:
    return {
        name: member
        for name, member in inspect.getmembers(cls)
        if not name.startswith("_")
        and callable(member)
        and not isinstance(inspect.getattr_static(cls, name), property)
    }


def test_every_public_method_has_disk_objectstores_signature() -> None:
    ours = public_methods(Container)
    theirs = public_methods(disk_objectstore.Container)
    missing = sorted(set(theirs) - set(ours))
    assert not missing, f"missing methods: {missing}"
    for name, dos_method in theirs.items():
        dos_params = list(inspect.signature(dos_method).parameters.values())[1:]
        our_params = list(inspect.signature(ours[name]).parameters.values())[1:]
        assert len(our_params) >= len(dos_params), name
        for dos_p, our_p in zip(dos_params, our_params, strict=False):
            assert (our_p.name, our_p.kind) == (dos_p.name, dos_p.kind), (name, our_p, dos_p)
            assert our_p.default == dos_p.default, (name, our_p.name, our_p.default)
        extra = our_params[len(dos_params) :]
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in extra), (name, extra)
    for name in theirs:
        kinds = {p.kind for p in inspect.signature(ours[name]).parameters.values()}
        assert inspect.Parameter.VAR_KEYWORD not in kinds, f"{name} swallows unknown keywords"
    theirs_props = {
        n for n in dir(disk_objectstore.Container)
        if isinstance(inspect.getattr_static(disk_objectstore.Container, n), property)
    }
    assert theirs_props <= set(dir(Container))


def test_an_unknown_keyword_is_a_type_error(container: Container) -> None:
    with pytest.raises(TypeError):
        container.add_objects_to_pack([b"x"], no_hole=True)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        container.pack_all_loose(clean_loose=True)  # type: ignore[call-arg]
    container.pack_all_loose(False, True, True, None, True)  # the positional order


# -- callbacks ------------------------------------------------------------------------------------
class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def __call__(self, action: str, value: Any) -> None:
        self.events.append((action, value))

    def sessions(self) -> list[tuple[str, int, int]]:
        """(description, total, sum of updates) per init..close."""
        out: list[tuple[str, int, int]] = []
        current: list[Any] | None = None
        for action, value in self.events:
            if action == "init":
                current = [value["description"], value["total"], 0]
            elif action == "update":
                assert current is not None, "update before init"
                current[2] += value
            elif action == "close":
                assert current is not None, "close before init"
                out.append((current[0], current[1], current[2]))
                current = None
        assert current is None, "no close"
        return out


def test_callbacks_follow_disk_objectstores_protocol(small_packs: Container) -> None:
    blobs = [b"callback %d " % i * 50 for i in range(30)]
    rec = Recorder()
    small_packs.add_objects_to_pack(blobs, callback=rec)
    assert rec.sessions() == [("Bulk storing", 30, 30)]  # objects

    rec = Recorder()
    data = os.urandom(3 << 20)
    small_packs.add_streamed_object_to_pack(io.BytesIO(data), callback=rec,
                                            callback_size_hint=len(data))
    assert rec.sessions() == [("Streamed object", len(data), len(data))]  # bytes

    rec = Recorder()
    small_packs.add_streamed_objects_to_pack([io.BytesIO(b) for b in blobs[:5]], callback=rec)
    assert rec.sessions() == [("Bulk storing", 5, 5)]

    loose = [os.urandom(1000 + i) for i in range(10)]
    for b in loose:
        small_packs.add_object(b)
    rec = Recorder()
    small_packs.pack_all_loose(callback=rec)
    total = sum(map(len, loose))
    assert rec.sessions() == [("Packing loose objects", total, total)]  # bytes

    rec = Recorder()
    small_packs.repack(callback=rec)  # no holes anywhere: still reported, pack by pack
    sessions = rec.sessions()
    assert len(sessions) == len(list((small_packs.folder / "packs").iterdir()))
    assert all(total == done for _d, total, done in sessions)
    assert sum(total for _d, total, _ in sessions) == small_packs.get_total_size().total_size_packed

    rec = Recorder()
    small_packs.repack_pack("0", callback=rec)
    assert rec.sessions()[0][0] == "Repack 0"

    rec = Recorder()
    small_packs.validate(callback=rec)
    assert [d for d, _t, _u in rec.sessions()][0] == "Loose objects"


# -- parameters -----------------------------------------------------------------------------------
def test_no_holes_and_do_commit_are_moot_but_accepted(container: Container) -> None:
    blobs = [os.urandom(500) for _ in range(10)]
    container.add_objects_to_pack(blobs, no_holes=False, do_commit=False)
    size = (container.folder / "packs" / "0").stat().st_size
    for no_holes in (False, True):
        for twice in (False, True):
            container.add_objects_to_pack(blobs, no_holes=no_holes, no_holes_read_twice=twice)
            container.add_streamed_objects_to_pack([io.BytesIO(b) for b in blobs],
                                                   no_holes=no_holes, no_holes_read_twice=twice)
    assert (container.folder / "packs" / "0").stat().st_size == size  # never a duplicate
    other = Container(container.folder)  # do_commit=False: committed anyway
    assert all(other.get_object_meta(sha(b)).type == "packed" for b in blobs)
    other.close()


def test_do_fsync_false_skips_the_fsync_of_the_pack(container: Container, tmp_path: Path) -> None:
    from tests.container.test_durability import SYNC, find, trace

    with_sync = trace(container.folder, "c.add_objects_to_pack([b'a'])", tmp_path)
    without = trace(container.folder, "c.add_objects_to_pack([b'b'], do_fsync=False)", tmp_path)
    assert find(with_sync, SYNC, "/packs/0") and not find(without, SYNC, "/packs/0")
    assert container.get_object_content(sha(b"b")) == b"b"


def test_validate_objects(container: Container) -> None:
    h = container.add_object(b"genuine")
    (container.folder / "loose" / h[:2] / h[2:]).write_bytes(b"tampered")
    with pytest.raises(InconsistentContent, match=h):
        container.pack_all_loose(validate_objects=True)
    container.pack_all_loose(validate_objects=False)  # trusts the name, as disk-objectstore
    assert container.get_object_meta(h).type == "packed"
    assert not container.validate().is_valid()


def test_an_unreadable_loose_file_is_skipped(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = container.add_object(b"locked by someone")
    good = container.add_object(b"readable")
    real_open = os.open
    bad_path = str(container.folder / "loose" / bad[:2] / bad[2:])

    def deny(path: Any, *args: Any, **kwargs: Any) -> int:
        if os.fspath(path) == bad_path:  # root reads anything: deny it here, as EACCES would
            raise PermissionError(13, "Permission denied", bad_path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", deny)
    container.pack_all_loose()
    monkeypatch.undo()
    assert container.get_object_meta(good).type == "packed"
    assert container.get_object_meta(bad).type == "loose"


def test_import_objects_from_both_tools(container: Container, tmp_path: Path) -> None:
    dos = disk_objectstore.Container(tmp_path / "dos")
    dos.init_container()
    blobs = [os.urandom(n) for n in (0, 10, 5000, 3 << 20)]
    keys = [dos.add_object(b) for b in blobs[:2]] + dos.add_objects_to_pack(blobs[2:])
    rec = Recorder()
    mapping = container.import_objects(keys, dos, target_memory_bytes=4000, callback=rec)
    assert mapping == {k: k for k in keys}
    assert container.get_objects_content(keys) == dict(zip(keys, blobs, strict=True))
    # disk-objectstore's phases (tests/container/test_dropin_api.py compares them with its own)
    assert rec.sessions() == [("Listing objects", 4, 4), ("Copy objects", 4, 4),
                              ("Final flush", 2, 2)]  # the two under target_memory_bytes
    dos.close()
    sha1 = Container(tmp_path / "sha1")
    sha1.init_container(hash_type="sha1")
    mapping = sha1.import_objects(keys, container, compress=True)
    assert mapping == {k: hashlib.sha1(b).hexdigest() for k, b in zip(keys, blobs, strict=True)}
    assert sha1.get_object_meta(mapping[keys[3]]).pack_compressed
    sha1.close()


def test_loosen_lazy_stream_lock_pack(container: Container) -> None:
    text = b"".join(b"%06d lazily\n" % i for i in range(50_000))
    h = container.add_objects_to_pack([text], compress=True)[0]
    path = container.loosen_object(h)
    assert path.read_bytes() == text and path == container.folder / "loose" / h[:2] / h[2:]
    lazy = container.get_lazy_loose_stream(h)
    assert lazy.closed and lazy.seekable() and lazy.mode == "rb"
    with lazy as stream:
        stream.seek(-10, io.SEEK_END)
        assert stream.read() == text[-10:] and stream.tell() == len(text)
    assert lazy.closed
    with container.lock_pack("0") as handle:
        assert (container.folder / "packs" / "0.lock").exists() and handle.writable()
        with pytest.raises(LockedError):
            with container.lock_pack("0"):
                pass
    assert not (container.folder / "packs" / "0.lock").exists()


# -- shapes ---------------------------------------------------------------------------------------
def test_validate_answers_in_disk_objectstores_shape(container: Container) -> None:
    h = container.add_object(b"fine")
    issues = container.validate()
    assert isinstance(issues, ValidationIssues)
    assert issues.is_valid() and not any(issues.values())
    assert list(issues.keys())[:4] == [
        "invalid_hashes_loose", "invalid_hashes_packed", "invalid_sizes_packed",
        "overlapping_packed",
    ]
    (container.folder / "loose" / h[:2] / h[2:]).write_bytes(b"broken")
    issues = container.validate()
    assert not issues.is_valid() and issues["invalid_hashes_loose"] == [h]
    assert any(issues.values())
    report = container.validate_report()  # the whole report: warnings and counters too
    assert report.checked_loose == 1 and not report.is_valid()


def test_object_type_and_meta_compare_like_disk_objectstores(container: Container) -> None:
    h = container.add_objects_to_pack([b"meta"])[0]
    meta = container.get_object_meta(h)
    assert meta["type"] == DosObjectType.PACKED and DosObjectType.PACKED == meta.type  # noqa: SIM300
    assert meta.type != DosObjectType.LOOSE and meta.type == "packed"
    assert {"packed": 1}[meta.type] == 1
    assert isinstance(meta["pack_id"], int) and meta["pack_compressed"] is False
    missing = dict(container.get_objects_meta(["a" * 64], skip_if_missing=False))
    assert missing["a" * 64]["type"] == DosObjectType.MISSING
    assert ObjectType.LOOSE == DosObjectType.LOOSE
    container.pack_all_loose(compress=DosCompressMode.YES)
    container.repack(compress_mode=DosCompressMode.KEEP)
    # dict-like as disk-objectstore's meta dicts, but immutable (a shared one cannot be changed)
    assert set(meta.keys()) == set(meta) == {"type", "size", "pack_id", "pack_compressed",
                                             "pack_offset", "pack_length"}
    assert dict(meta)["size"] == 4 and meta.get("nope", 7) == 7 and "size" in meta
    with pytest.raises(AttributeError):
        meta.size = 5  # type: ignore[misc]
    with pytest.raises(KeyError):
        meta["nope"]


def test_bulk_reads_yield_each_key_once_across_rounds(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dosfs.container import bulk

    monkeypatch.setattr(bulk, "KEYS_PER_ROUND", 3)
    keys = container.add_objects_to_pack([b"round %d" % i for i in range(5)])
    asked = keys + keys[::-1] + ["b" * 64, "b" * 64]
    got = list(container.get_objects_meta(asked, skip_if_missing=False))
    assert sorted(h for h, _ in got) == sorted(keys + ["b" * 64])
    with container.get_objects_stream_and_meta(asked) as triplets:
        assert sorted(h for h, _s, _m in triplets) == sorted(keys)
    assert set(container.get_objects_content(asked)) == set(keys)


def test_get_objects_meta_rechecks_objects_packed_meanwhile(container: Container) -> None:
    keys = [container.add_object(b"meanwhile %d" % i) for i in range(6)]
    it = container.get_objects_meta(keys)
    first = next(it)
    assert first[1].type == "loose"
    packer = Container(container.folder)
    packer.pack_all_loose(clean_loose_per_pack=True)
    packer.close()
    rest = list(it)
    assert len(rest) == 5 and all(meta.type == "packed" for _h, meta in rest)


def test_loose_streams_behave_like_disk_objectstores(container: Container) -> None:
    h = container.add_object(b"a loose stream")
    with container.get_object_stream(h) as stream:
        assert stream.name == str(container.folder / "loose" / h[:2] / h[2:])
        assert stream.readable() and stream.seekable() and not stream.closed
        assert stream.mode == "rb" and stream.read(1) == b"a"
    assert stream.closed


def _open_fds(folder: Path) -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(folder)):
            out.append(target)
    return out


def test_nothing_stays_open_after_close_or_gc(folder: Path) -> None:
    c = Container(folder)
    c.init_container()
    keys = c.add_objects_to_pack([b"open %d" % i for i in range(10)])
    c.add_object(b"loose")
    assert c.get_objects_content(keys)[keys[0]] == b"open 0"
    assert c.get_object_content(keys[1]) == b"open 1"
    assert _open_fds(folder)  # the index and pack 0 are open while in use
    c.close()
    assert _open_fds(folder) == []
    c = Container(folder)
    assert c.get_object_content(keys[2]) == b"open 2"
    del c
    gc.collect()
    assert _open_fds(folder) == []
