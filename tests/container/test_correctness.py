"""Correctness holes found in review (issue 8): each test here failed before its fix.

Wrong bytes (forked readers, verification on read), crash leftovers of repack, duplicates, a
shrinking pack under validate, repack with a compression change, zero-length writes, WAL
checkpoints that must never wait for readers, and reads on a full disk.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dosfs import Container, CorruptObject, InconsistentContent


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _other_process(folder: Path, code: str) -> None:
    """Run `code` with `c = Container(folder)` in a fresh interpreter (another process)."""
    script = f"from dosfs import Container\nc = Container({str(folder)!r})\n{code}\nc.close()\n"
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)


# -- 1. forked readers ------------------------------------------------------------------------
def test_fork_after_repack_reads_right_bytes(folder: Path) -> None:
    builder = Container(folder)
    builder.init_container()
    doomed = builder.add_objects_to_pack([b"doomed %d " % i * 50 for i in range(20)])
    kept_blobs = [b"kept %d " % i * 40 for i in range(20)]
    kept = builder.add_objects_to_pack(kept_blobs)
    builder.close()
    # the parent reads from pack 0 with a fresh connection (its data_version is the initial
    # one, as a forked child's new connection will be): its descriptor cache holds pack 0
    c = Container(folder)
    assert c.get_object_content(kept[5]) == kept_blobs[5]
    assert c.get_objects_content(kept[:3]) == dict(zip(kept[:3], kept_blobs[:3], strict=True))
    # another process deletes objects and repacks: pack 0 is a new file, offsets moved
    _other_process(folder, f"c.delete_objects({doomed!r})\nc.repack()")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: must see the repacked pack, not the parent's cached descriptor
        status = 0
        try:
            for k, b in zip(kept, kept_blobs, strict=True):
                if c.get_object_content(k) != b:
                    status |= 1
            got = c.get_objects_content(kept)
            if any(got[k] != b for k, b in zip(kept, kept_blobs, strict=True)):
                status |= 2
            with c.get_object_stream(kept[7]) as stream:
                if stream.read() != kept_blobs[7]:
                    status |= 4
        except BaseException:  # noqa: BLE001 - reported through the exit status
            status |= 8
        os.write(write, bytes([status]))
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    status = os.read(read, 1)[0]
    os.close(read)
    assert status == 0, f"forked child read wrong bytes (status bits {status:04b})"
    # and the parent too, after the repack
    assert c.get_objects_content(kept) == dict(zip(kept, kept_blobs, strict=True))
    c.close()


def test_lazy_loading_is_thread_safe(container: Container) -> None:
    folder = container.folder
    keys = container.add_objects_to_pack([b"race %d" % i for i in range(10)])
    for _round in range(20):
        fresh = Container(folder)
        barrier = threading.Barrier(8)
        seen: list[object] = []
        errors: list[BaseException] = []

        def touch(
            c: Container = fresh,
            barrier: threading.Barrier = barrier,
            seen: list[object] = seen,
            errors: list[BaseException] = errors,
        ) -> None:
            try:
                barrier.wait()
                seen.append(c.index)
                assert c.get_object_content(keys[0]) == b"race 0"
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=touch) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert len({id(i) for i in seen}) == 1, "two threads built two different indexes"
        fresh.close()


# -- 2. verification on read (engine, opt-in) --------------------------------------------------
def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))


def test_verify_catches_a_flipped_byte_loose_and_packed(container: Container) -> None:
    folder = container.folder
    loose_blob = b"loose content " * 1000
    h_loose = container.add_object(loose_blob)
    packed_blob = os.urandom(300_000)
    h_packed = container.add_objects_to_pack([packed_blob])[0]
    _flip(folder / "loose" / h_loose[:2] / h_loose[2:], 5)
    meta = container.get_object_meta(h_packed)
    _flip(folder / "packs" / str(meta.pack_id), meta.pack_offset + 1234)
    for h in (h_loose, h_packed):
        # without verify: served (that is what the flag is for)
        assert sha(container.get_object_content(h)) != h
        with pytest.raises(CorruptObject, match=h):
            container.get_object_content(h, verify=True)
        with pytest.raises(CorruptObject, match=h):
            container.get_objects_content([h], verify=True)
        with pytest.raises(CorruptObject, match=h):
            with container.get_object_stream(h, verify=True) as stream:
                while stream.read(4096):
                    pass
        with pytest.raises(CorruptObject, match=h):
            with container.get_objects_stream_and_meta([h], verify=True) as triplets:
                for _h, stream, _meta in triplets:
                    stream.read()
    report = container.validate_report()
    assert h_loose in report.invalid_hashes_loose and h_packed in report.invalid_hashes_packed


def test_verify_passes_intact_objects_any_read_order(container: Container) -> None:
    blobs = [os.urandom(n) for n in (0, 1, 5000, 2_000_000)]
    keys = [container.add_object(b) for b in blobs[:2]]
    keys += container.add_objects_to_pack(blobs[2:3], compress=True)
    keys += container.add_objects_to_pack(blobs[3:])
    for k, b in zip(keys, blobs, strict=True):
        assert container.get_object_content(k, verify=True) == b
        with container.get_object_stream(k, verify=True) as stream:  # out of order, then EOF
            stream.seek(len(b) // 2)
            tail = stream.read()
            stream.seek(0)
            head = stream.read(len(b) // 2)
            assert head + tail == b
    assert container.get_objects_content(keys, verify=True) == dict(zip(keys, blobs, strict=True))


# -- 5. checkpoints never wait for readers ------------------------------------------------------
def test_repack_and_vacuum_do_not_wait_for_a_reader_snapshot(container: Container) -> None:
    keys = container.add_objects_to_pack([b"x%d" % i * 100 for i in range(200)])
    container.delete_objects(keys[:100])
    reader = sqlite3.connect(str(container.folder / "packs.idx"), isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM db_object").fetchone()  # holds a read snapshot
    done: list[str] = []

    def work() -> None:
        container.repack()
        done.append("repack")
        container.clean_storage(vacuum=True)
        done.append("vacuum")

    t = threading.Thread(target=work, daemon=True)
    t.start()
    t.join(timeout=30)  # the busy timeout is 60 s: waiting on the reader would show here
    try:
        assert done == ["repack", "vacuum"], f"blocked behind a reader; finished: {done}"
    finally:
        reader.execute("COMMIT")
        reader.close()
        t.join()
    assert container.get_objects_content(keys[100:]) == {k: None for k in ()} | {
        k: b"x%d" % i * 100 for i, k in enumerate(keys) if i >= 100
    }


def test_pack_commits_are_checkpointed_into_the_main_file(container: Container) -> None:
    # a long-lived reader connection (like the daemon's) keeps the WAL alive
    reader = sqlite3.connect(str(container.folder / "packs.idx"), isolation_level=None)
    reader.execute("SELECT count(*) FROM db_object").fetchone()
    try:
        for i in range(5):
            container.add_object(b"loose %d" % i)
        container.pack_all_loose()
        # the main file alone (no -wal) must hold the rows: read it as an immutable copy
        copy = container.folder.parent / "copy.idx"
        copy.write_bytes((container.folder / "packs.idx").read_bytes())
        alone = sqlite3.connect(f"file:{copy}?immutable=1", uri=True)
        assert alone.execute("SELECT count(*) FROM db_object").fetchone()[0] == 5
        alone.close()
    finally:
        reader.close()


# -- 6. repack crash leftovers ------------------------------------------------------------------
def test_clean_removes_repack_leftovers_and_validate_reports_them(container: Container) -> None:
    keys = container.add_objects_to_pack([b"left %d" % i * 10 for i in range(10)])
    packs = container.folder / "packs"
    os.link(packs / "0", packs / "0.dosfs-repack")  # as a crash between link and replace leaves
    (packs / "-1").write_bytes((packs / "0").read_bytes())  # a full old pack as -1
    report = container.validate_report()
    assert report.is_valid()
    assert "0.dosfs-repack" in report.repack_leftovers and "-1" in report.unreferenced_pack_files
    container.clean_storage()
    assert sorted(p.name for p in packs.iterdir()) == ["0"]
    assert not container.validate_report().has_warnings()
    assert all(container.get_object_content(k) == b"left %d" % i * 10 for i, k in enumerate(keys))


# -- 7. duplicates into a missing shard ---------------------------------------------------------
def test_clean_restores_a_duplicate_into_a_missing_shard(container: Container) -> None:
    data = b"only a duplicate is left"
    h = sha(data)
    (container.folder / "duplicates" / f"{h}.abc").write_bytes(data)
    assert not (container.folder / "loose" / h[:2]).exists()
    container.clean_storage()
    assert container.get_object_content(h) == data
    assert not list((container.folder / "duplicates").iterdir())


# -- 8. re-adding content whose loose copy is corrupt ------------------------------------------
@pytest.mark.parametrize("size", [100, 3 << 20])
def test_readd_replaces_a_corrupt_loose_file(container: Container, size: int) -> None:
    data = os.urandom(size)
    h = container.add_object(data)
    path = container.folder / "loose" / h[:2] / h[2:]
    _flip(path, size // 2)
    assert container.add_object(data) == h
    assert path.read_bytes() == data
    _flip(path, 0)
    with open(path, "r+b") as f:
        f.truncate(size - 1)  # wrong size too
    import io

    assert container.add_streamed_object(io.BytesIO(data)) == h
    assert path.read_bytes() == data
    assert container.validate_report().is_valid()


# -- 9. validate on a shrinking pack and a negative offset --------------------------------------
def test_validate_reports_truncated_pack_and_negative_offset(container: Container) -> None:
    keys = container.add_objects_to_pack([os.urandom(5000) for _ in range(4)])
    pack = container.folder / "packs" / "0"
    with open(pack, "r+b") as f:
        f.truncate(pack.stat().st_size - 100)
    conn = sqlite3.connect(str(container.folder / "packs.idx"), isolation_level=None)
    conn.execute("UPDATE db_object SET offset = -5 WHERE hashkey = ?", (keys[0],))
    conn.close()
    result: list[object] = []
    t = threading.Thread(target=lambda: result.append(container.validate_report()), daemon=True)
    t.start()
    t.join(timeout=30)
    assert result, "validate did not finish on a truncated pack"
    report = result[0]
    assert not report.is_valid()  # type: ignore[attr-defined]
    assert keys[3] in report.rows_past_end_of_pack  # type: ignore[attr-defined]
    assert keys[0] in report.invalid_rows_packed  # type: ignore[attr-defined]


def test_validate_does_not_spin_when_a_pack_shrinks_under_it(container: Container) -> None:
    blob = os.urandom(40 << 20)
    h = container.add_objects_to_pack([blob])[0]
    pack = container.folder / "packs" / "0"
    stop = threading.Event()

    def shrink() -> None:  # cut the pack while validate reads it
        time.sleep(0.01)
        with open(pack, "r+b") as f:
            f.truncate(1 << 20)
        stop.set()

    result: list[object] = []
    t = threading.Thread(target=lambda: result.append(container.validate_report()), daemon=True)
    s = threading.Thread(target=shrink)
    s.start()
    t.start()
    t.join(timeout=60)
    s.join()
    assert result, "validate spun on a pack that shrank"
    report = result[0]
    assert not report.is_valid()  # type: ignore[attr-defined]
    assert h in report.rows_past_end_of_pack + report.invalid_hashes_packed  # type: ignore[attr-defined]


# -- 10. repack with a compression change ------------------------------------------------------
def test_repack_changing_compression_refuses_corrupt_objects(container: Container) -> None:
    blobs = [b"compress me please " * 500 for _ in range(1)] + [os.urandom(3000)]
    keys = container.add_objects_to_pack(blobs)
    meta = container.get_object_meta(keys[0])
    _flip(container.folder / "packs" / "0", meta.pack_offset + 10)
    before = (container.folder / "packs" / "0").read_bytes()
    with pytest.raises(InconsistentContent, match=keys[0]):
        container.repack(compress_mode="yes")
    assert (container.folder / "packs" / "0").read_bytes() == before  # nothing rewritten
    assert not (container.folder / "packs" / "-1").exists()


def test_repack_changing_compression_copies_length_not_size(container: Container) -> None:
    blob = b"z" * 10_000
    h = container.add_objects_to_pack([blob], compress=True)[0]
    other = container.add_objects_to_pack([os.urandom(100)])[0]
    container.repack(compress_mode="no")
    assert container.get_object_meta(h).pack_compressed is False
    assert container.get_object_content(h, verify=True) == blob
    container.repack(compress_mode="yes")
    assert container.get_object_meta(h).pack_length < 10_000
    assert container.get_object_content(h, verify=True) == blob
    assert sha(container.get_object_content(other)) == other
    assert container.validate_report().is_valid()


# -- 11. a zero-length write past the end ------------------------------------------------------
def test_zero_length_pwrite_past_end_does_not_extend(container: Container) -> None:
    staged = container.new_staged_object()
    staged.pwrite(b"abc", 0)
    staged.pwrite(b"", 100)
    assert staged.size == 3
    assert container.get_object_content(staged.commit()) == b"abc"


# -- 12. write connections are synchronous=FULL and need no UPDATE ... FROM --------------------
def test_write_connections_are_synchronous_full(container: Container) -> None:
    conn = container.index.write_conn()
    try:
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        conn.close()


def _sql_statements(module: object) -> list[str]:
    """The SQL text of a module: its string constants, adjacent ones joined."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(module))  # type: ignore[arg-type]
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(
        n.value, str) and n.value.lstrip().upper().startswith(("UPDATE", "INSERT", "DELETE"))]


def test_no_update_from_anywhere() -> None:
    """`UPDATE ... FROM` needs SQLite >= 3.33: no write statement of the engine uses it."""
    import re

    from dosfs.container import index, maintenance, packing, repack

    for module in (index, maintenance, packing, repack):
        for sql in _sql_statements(module):
            top = sql
            while re.search(r"\([^()]*\)", top):
                top = re.sub(r"\([^()]*\)", "", top)  # drop subqueries and value lists
            assert not (sql.upper().startswith("UPDATE") and " FROM " in top.upper()), sql


def test_repack_holds_the_pack_lock(container: Container) -> None:
    container.add_objects_to_pack([b"a" * 100, b"b" * 100])
    container.delete_objects([sha(b"a" * 100)])
    pack0 = str(container.folder / "packs" / "0")
    seen: list[bool] = []
    real_replace = os.replace

    def spy(src: object, dst: object, *args: object, **kwargs: object) -> None:
        if os.fspath(dst) == pack0:  # type: ignore[call-overload]
            seen.append((container.folder / "packs" / "0.lock").exists())
        real_replace(src, dst, *args, **kwargs)  # type: ignore[arg-type]

    os.replace = spy  # type: ignore[assignment]
    try:
        container.repack()
    finally:
        os.replace = real_replace
    assert seen == [True], "pack 0 was replaced without holding packs/0.lock"
    assert not (container.folder / "packs" / "0.lock").exists()


# -- 2b. the hashing helper process the mount verifies big objects with -----------------------
@pytest.mark.parametrize("compress", [False, True])
def test_helper_process_verdicts(container: Container, compress: bool) -> None:
    from dosfs.container.verify import ProcessVerifier

    good = b"".join(b"%07d helper\n" % i for i in range(200_000))
    h = container.add_objects_to_pack([good], compress=compress)[0]
    verdicts: list[bool | None] = []
    with container.open_object(h) as reader:
        v = container.verifier(reader, eager=True, on_done=lambda v: verdicts.append(v.ok))
        assert isinstance(v, ProcessVerifier)
        assert v.wait(30) and verdicts == [True]
    meta = container.get_object_meta(h)
    _flip(container.folder / "packs" / "0", meta.pack_offset + meta.pack_length // 2)
    with container.open_object(h) as reader:
        v = container.verifier(reader, eager=True)
        assert v.wait(30) is False and v.reason


def test_helper_process_death_falls_back_to_a_thread(container: Container) -> None:
    from dosfs.container import verify

    staged = container.new_staged_object()
    block = os.urandom(1 << 20)
    for _ in range(96):
        staged.write(block)
    h = staged.commit()  # 96 MiB: the helper needs a while, it is killed before replying
    service = verify.HashService()
    with container.open_object(h) as reader:
        stored = reader.stored_range()
        assert stored is not None
        fd, offset, length, compressed = stored
        v = verify.ProcessVerifier(reader, "sha256", fd, (offset, length, compressed),
                                   service=service)
        assert service._proc is not None
        service._proc.kill()
        service._proc.wait()
        assert v.wait(60) is True  # hashed in-process instead: no wrong verdict
        assert v._fallback is not None
        v2 = verify.ProcessVerifier(reader, "sha256", fd, (offset, length, compressed),
                                    service=service)  # a new helper starts
        assert v2.wait(60) is True and v2._fallback is None
    service.close()


def test_repack_leftovers_are_read_by_disk_objectstore_too(container: Container) -> None:
    import disk_objectstore

    blobs = [b"both tools %d" % i * 20 for i in range(10)]
    keys = container.add_objects_to_pack(blobs)
    packs = container.folder / "packs"
    os.link(packs / "0", packs / "0.dosfs-repack")
    (packs / "-1").write_bytes((packs / "0").read_bytes())
    with disk_objectstore.Container(container.folder) as dos:
        assert dos.validate().is_valid()
        assert dos.get_objects_content(keys) == dict(zip(keys, blobs, strict=True))
    container.clean_storage()
    with disk_objectstore.Container(container.folder) as dos:
        assert dos.validate().is_valid()
        dos.pack_all_loose()
        assert dos.count_objects()["packed"] == 10
