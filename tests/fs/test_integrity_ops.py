"""Adapter tests of issue 8: verification on read, close() as the commit, name limits.

Driven in-process under trio over the fake engine (see test_operations.py for the harness).
Each of these failed before its fix.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
from typing import Any

import pytest

from dosfs.fs import handles as fs_handles
from dosfs.fs.inodes import BY_HASH_INODE, INCOMING_INODE
from dosfs.fs.operations import Operations
from dosfs.fs.tree import max_link_depth
from tests.fs.fake_engine import FakeEngine
from tests.fs.test_operations import CTX, expect_errno, lookup_path, trio_test


@pytest.fixture(autouse=True)
def fake_readdir_reply(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fs_handles, "readdir_reply", lambda token, *a: token.reply(*a))


@pytest.fixture
def engine(tmp_path: Any) -> FakeEngine:
    return FakeEngine(tmp_path)


@pytest.fixture
def ops(engine: FakeEngine) -> Operations:
    return Operations(engine)


def corrupt(engine: FakeEngine, data: bytes, **kwargs: Any) -> str:
    """An object whose stored bytes differ from the content its key names (one bit)."""
    h = engine.add(data, **kwargs)
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 1
    engine.objects[h] = bytes(flipped)
    return h


async def open_hash(ops: Operations, h: str) -> int:
    ino = (await ops.lookup(BY_HASH_INODE, h.encode(), CTX)).st_ino
    return (await ops.open(ino, os.O_RDONLY, CTX)).fh


# ---------------------------------------------------------------- verification on read


@pytest.mark.parametrize("packed", [False, True])
@trio_test
async def test_small_corrupt_object_is_refused_before_its_first_byte(
    ops: Operations, engine: FakeEngine, caplog: pytest.LogCaptureFixture, packed: bool
) -> None:
    h = corrupt(engine, os.urandom(5000), packed=packed)
    fh = await open_hash(ops, h)
    with caplog.at_level(logging.ERROR, logger="dosfs.fs"):
        await expect_errno(errno.EIO, ops.read(fh, 0, 100))  # not even the first 100 bytes
    assert h in caplog.text and "fake" in caplog.text  # names the hash and where it lives
    await expect_errno(errno.EIO, ops.read(fh, 0, 100))
    await ops.release(fh)
    assert ops.stats.verify_failures == 1


@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize("order", ["forward", "last-first"])
@trio_test
async def test_big_corrupt_object_fails_the_read_that_completes_it(
    ops: Operations, engine: FakeEngine, caplog: pytest.LogCaptureFixture,
    compressed: bool, order: str,
) -> None:
    size = 3 << 20
    h = corrupt(engine, os.urandom(size), packed=compressed, compressed=compressed)
    fh = await open_hash(ops, h)
    chunk = 1 << 20
    offsets = list(range(0, size, chunk))
    if order == "last-first":
        offsets = offsets[::-1]
    found_bad = False
    with caplog.at_level(logging.ERROR, logger="dosfs.fs"):
        for off in offsets:
            if found_bad or off + chunk >= size:  # the read that completes it, and any after
                await expect_errno(errno.EIO, ops.read(fh, off, chunk))
                found_bad = True
            else:
                assert len(await ops.read(fh, off, chunk)) == chunk
    assert h in caplog.text and "content hashes to" in caplog.text
    await ops.release(fh)
    fh = await open_hash(ops, h)  # known bad now: every read refused
    await expect_errno(errno.EIO, ops.read(fh, 0, 10))
    await ops.release(fh)


@trio_test
async def test_intact_objects_are_served_and_remembered(
    ops: Operations, engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = os.urandom(5000)
    big = os.urandom(3 << 20)
    hs, hb = engine.add(small), engine.add(big, packed=True, compressed=True)
    checks: list[str] = []
    verifiers: list[Any] = []
    real_check, real_verifier = engine.check_hash, engine.verifier

    def count_check(h: str, data: bytes, where: str) -> None:
        checks.append(h)
        real_check(h, data, where)

    def count_verifier(reader: Any, **kw: Any) -> Any:
        verifiers.append(reader)
        return real_verifier(reader, **kw)

    monkeypatch.setattr(engine, "check_hash", count_check)
    monkeypatch.setattr(engine, "verifier", count_verifier)
    for _round in range(3):
        fh = await open_hash(ops, hs)
        assert await ops.read(fh, 100, 200) == small[100:300]
        await ops.release(fh)
        fh = await open_hash(ops, hb)
        got = b"".join([await ops.read(fh, off, 1 << 20) for off in range(0, len(big), 1 << 20)])
        assert got == big
        await ops.release(fh)
    assert checks == [hs] and len(verifiers) == 1  # re-opens do not hash again


@trio_test
async def test_verify_off_serves_raw_bytes(engine: FakeEngine) -> None:
    ops = Operations(engine, verify=False)
    data = os.urandom(5000)
    h = corrupt(engine, data)
    fh = await open_hash(ops, h)
    assert await ops.read(fh, 0, 5000) == engine.objects[h]
    await ops.release(fh)


@trio_test
async def test_closing_a_handle_stops_its_verifier(ops: Operations, engine: FakeEngine) -> None:
    h = engine.add(os.urandom(4 << 20), packed=True, compressed=True)
    fh = await open_hash(ops, h)
    await ops.read(fh, 0, 4096)
    handle = ops.files.get(fh)
    verifier = handle.verifier  # type: ignore[union-attr]
    assert verifier is not None
    await ops.release(fh)
    verifier._thread.join(timeout=10)
    assert not verifier._thread.is_alive() and verifier.ok is None  # cancelled, no verdict


# ---------------------------------------------------------------- close() is the commit


@trio_test
async def test_close_of_the_last_writer_commits_before_release(
    ops: Operations, engine: FakeEngine
) -> None:
    data = b"durable when close returns"
    fi, _ = await ops.create(INCOMING_INODE, b"f", 0o644, os.O_WRONLY, CTX)
    await ops.write(fi.fh, 0, data)
    await ops.flush(fi.fh)  # close(2): the kernel waits for this one
    h = hashlib.sha256(data).hexdigest()
    assert engine.commits == [h]
    attr = await ops.lookup(INCOMING_INODE, b"f", CTX)
    assert stat.S_ISLNK(attr.st_mode)
    assert await ops.readlink(attr.st_ino, CTX) == f"../by-hash/{h}".encode()
    await ops.release(fi.fh)
    assert engine.commits == [h]  # release commits nothing more


@trio_test
async def test_two_writers_commit_at_the_last_close(ops: Operations, engine: FakeEngine) -> None:
    fi, attr = await ops.create(INCOMING_INODE, b"f", 0o644, os.O_RDWR, CTX)
    second = await ops.open(attr.st_ino, os.O_WRONLY, CTX)
    await ops.write(fi.fh, 0, b"abc")
    await ops.flush(fi.fh)
    assert engine.commits == []  # another writer still has it open
    await ops.release(fi.fh)
    await ops.write(second.fh, 3, b"def")
    await ops.flush(second.fh)
    assert engine.commits == [hashlib.sha256(b"abcdef").hexdigest()]
    await ops.release(second.fh)


@trio_test
async def test_empty_file_commits_at_release_and_dup_then_write_works(
    ops: Operations, engine: FakeEngine
) -> None:
    # a shell's `cmd > incoming/f`: open, dup2, close (FLUSH of an empty file), write, close
    fi, _ = await ops.create(INCOMING_INODE, b"f", 0o644, os.O_WRONLY, CTX)
    await ops.flush(fi.fh)
    assert engine.commits == []
    await ops.write(fi.fh, 0, b"output")
    await ops.flush(fi.fh)
    await ops.release(fi.fh)
    assert engine.commits == [hashlib.sha256(b"output").hexdigest()]
    fi, _ = await ops.create(INCOMING_INODE, b"empty", 0o644, os.O_WRONLY, CTX)
    await ops.flush(fi.fh)
    await ops.release(fi.fh)
    assert engine.commits[-1] == hashlib.sha256(b"").hexdigest()


@trio_test
async def test_write_after_close_reseeds_and_commits_again(
    ops: Operations, engine: FakeEngine
) -> None:
    # `{ cat a; cat b; } > incoming/f`: the first child's exit closes one descriptor
    fi, _ = await ops.create(INCOMING_INODE, b"f", 0o644, os.O_WRONLY, CTX)
    await ops.write(fi.fh, 0, b"first part,")
    await ops.flush(fi.fh)
    assert stat.S_ISLNK((await ops.lookup(INCOMING_INODE, b"f", CTX)).st_mode)
    await ops.write(fi.fh, 11, b" second part")
    attr = await ops.lookup(INCOMING_INODE, b"f", CTX)
    assert stat.S_ISREG(attr.st_mode) and attr.st_size == 23  # the name is the file again
    await ops.flush(fi.fh)
    await ops.release(fi.fh)
    whole = b"first part, second part"
    assert engine.commits[-1] == hashlib.sha256(whole).hexdigest()
    link = await lookup_path(ops, "incoming/f")
    assert await ops.readlink(link.st_ino, CTX) == f"../by-hash/{engine.commits[-1]}".encode()


@trio_test
async def test_fsync_of_a_reopened_file_marks_it_complete(
    ops: Operations, engine: FakeEngine
) -> None:
    fi, _ = await ops.create(INCOMING_INODE, b"m", 0o644, os.O_RDWR, CTX)
    await ops.write(fi.fh, 0, b"mapped")
    await ops.flush(fi.fh)
    await ops.write(fi.fh, 0, b"MAPPED")  # writeback of a shared mapping after close
    staged = engine.staged[-1]
    assert not staged.complete
    await ops.fsync(fi.fh, False)  # msync(MS_SYNC)
    assert staged.complete
    await ops.release(fi.fh)
    assert engine.commits[-1] == hashlib.sha256(b"MAPPED").hexdigest()


@trio_test
async def test_read_only_handle_reads_on_after_the_commit(
    ops: Operations, engine: FakeEngine
) -> None:
    fi, attr = await ops.create(INCOMING_INODE, b"f", 0o644, os.O_WRONLY, CTX)
    reader = await ops.open(attr.st_ino, os.O_RDONLY, CTX)
    await ops.write(fi.fh, 0, b"visible to the reader")
    await ops.flush(fi.fh)
    await ops.release(fi.fh)
    assert await ops.read(reader.fh, 0, 100) == b"visible to the reader"
    await ops.release(reader.fh)


# ---------------------------------------------------------------- name limits


@trio_test
async def test_names_over_255_bytes_are_refused(ops: Operations) -> None:
    long = b"n" * 256
    ok = b"n" * 255
    await expect_errno(errno.ENAMETOOLONG, ops.create(INCOMING_INODE, long, 0o644, 0, CTX))
    await expect_errno(errno.ENAMETOOLONG, ops.mkdir(INCOMING_INODE, long, 0o755, CTX))
    await expect_errno(errno.ENAMETOOLONG, ops.symlink(INCOMING_INODE, long, b"t", CTX))
    await expect_errno(errno.ENAMETOOLONG, ops.mknod(INCOMING_INODE, long, 0o644, 0, CTX))
    fi, attr = await ops.create(INCOMING_INODE, ok, 0o644, os.O_WRONLY, CTX)
    await expect_errno(errno.ENAMETOOLONG, ops.link(attr.st_ino, INCOMING_INODE, long, CTX))
    await expect_errno(
        errno.ENAMETOOLONG, ops.rename(INCOMING_INODE, ok, INCOMING_INODE, long, 0, CTX)
    )
    await ops.release(fi.fh)
    assert set(ops.incoming.children) == {ok}


@trio_test
async def test_folders_too_deep_for_their_links_are_refused(ops: Operations) -> None:
    limit = max_link_depth(64)
    assert 3 * limit + len("by-hash/") + 64 < 4096 <= 3 * (limit + 1) + len("by-hash/") + 64
    ino = INCOMING_INODE
    for _ in range(limit - 1):  # incoming/ itself is depth 1
        ino = (await ops.mkdir(ino, b"d", 0o755, CTX)).st_ino
    await expect_errno(errno.ENAMETOOLONG, ops.mkdir(ino, b"d", 0o755, CTX))
    fi, _ = await ops.create(ino, b"deepest", 0o644, os.O_WRONLY, CTX)  # files still fit
    await ops.write(fi.fh, 0, b"x")
    await ops.flush(fi.fh)
    await ops.release(fi.fh)
    link = await ops.lookup(ino, b"deepest", CTX)
    assert len(await ops.readlink(link.st_ino, CTX)) < 4096
    # a folder moved under a deep one with its own subfolder is refused as well
    top = (await ops.mkdir(INCOMING_INODE, b"top", 0o755, CTX)).st_ino
    await ops.mkdir(top, b"sub", 0o755, CTX)
    parent = (await ops.lookup(ino, b"..", CTX)).st_ino
    await expect_errno(errno.ENAMETOOLONG, ops.rename(INCOMING_INODE, b"top", parent, b"t", 0, CTX))


# ---------------------------------------------------------------- computed inode numbers


@trio_test
async def test_packed_objects_have_computed_numbers_and_no_table(
    ops: Operations, engine: FakeEngine
) -> None:
    from dosfs.fs.inodes import PACKED_BIT

    keys = [engine.add(b"packed %d" % i, packed=True) for i in range(50)]
    attrs = [await ops.lookup(BY_HASH_INODE, h.encode(), CTX) for h in keys]
    assert all(a.st_ino & PACKED_BIT for a in attrs)
    assert len({a.st_ino for a in attrs}) == 50
    assert len(ops.table) == 3  # nothing tracked: the root, by-hash/, incoming/
    again = await ops.getattr(attrs[7].st_ino, CTX)  # served from the row, no table entry
    assert again.st_size == len(b"packed 7")
    fh = (await ops.open(attrs[7].st_ino, os.O_RDONLY, CTX)).fh
    assert await ops.read(fh, 0, 100) == b"packed 7"
    await ops.release(fh)
    await ops.forget([(a.st_ino, 1) for a in attrs])  # costs nothing, breaks nothing
    assert (await ops.getattr(attrs[7].st_ino, CTX)).st_size == len(b"packed 7")


@trio_test
async def test_a_reused_row_id_never_serves_another_object(
    ops: Operations, engine: FakeEngine
) -> None:
    old = engine.add(b"deleted soon", packed=True)
    ino = (await ops.lookup(BY_HASH_INODE, old.encode(), CTX)).st_ino
    rowid = engine.rowids.pop(old)
    del engine.objects[old], engine.packed[old]
    new = engine.add(b"a newcomer with the same row id", packed=True)
    engine.rowids[new] = rowid  # SQLite gives a deleted max rowid to the next insert
    await expect_errno(errno.ESTALE, ops.getattr(ino, CTX))
    await expect_errno(errno.ESTALE, ops.open(ino, os.O_RDONLY, CTX))
    new_ino = (await ops.lookup(BY_HASH_INODE, new.encode(), CTX)).st_ino
    assert new_ino != ino  # another number: the kernel drops the old inode
    fh = (await ops.open(new_ino, os.O_RDONLY, CTX)).fh
    assert await ops.read(fh, 0, 100) == b"a newcomer with the same row id"
    await ops.release(fh)
