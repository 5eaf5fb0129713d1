"""Adapter tests: ``Operations`` driven directly under trio over a fake engine (no kernel).

These pin down every errno the mount answers and the bookkeeping (inodes, lookup counts,
handles, incoming/ names) precisely, which a real mount can only observe indirectly.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import inspect
import logging
import os
import stat
import threading
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pyfuse3
import pytest
import trio

from dosfs.container.errors import (
    CorruptObject,
    InconsistentContent,
    InvalidHashKey,
    LockedError,
    ModificationNotAllowed,
    NotExistent,
)
from dosfs.fs import byhash as fs_byhash
from dosfs.fs import byhash_listing as fs_byhash_listing
from dosfs.fs import errors as fs_errors
from dosfs.fs import handles as fs_handles
from dosfs.fs import incoming as fs_incoming
from dosfs.fs import incoming_file as fs_incoming_file
from dosfs.fs import incoming_handles as fs_incoming_handles
from dosfs.fs import memory, writebehind
from dosfs.fs import namespace as fs_namespace
from dosfs.fs import nodes as fs_nodes
from dosfs.fs import operations as fs_operations
from dosfs.fs import root as fs_root
from dosfs.fs.errors import ERRNO_TABLE, boundary, errno_for
from dosfs.fs.inodes import BY_HASH_INODE, INCOMING_INODE, ROOT_INODE
from dosfs.fs.operations import Operations, cursor_id
from dosfs.fs.writebehind import WriteBehind
from tests.fs.fake_engine import FakeEngine

CTX = SimpleNamespace(uid=os.getuid(), gid=os.getgid(), umask=0o022, pid=1)


def trio_test(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return trio.run(functools.partial(fn, *args, **kwargs))

    return wrapper


class Token:
    """Stands in for the kernel's readdir buffer: accepts ``capacity`` entries per call."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.entries: list[tuple[bytes, Any, int]] = []

    def reply(self, name: bytes, attr: Any, next_id: int) -> bool:
        if len(self.entries) >= self.capacity:
            return False
        self.entries.append((name, attr, next_id))
        return True


@pytest.fixture(autouse=True)
def fake_readdir_reply(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fs_handles, "readdir_reply", lambda token, *a: token.reply(*a))


@pytest.fixture
def engine(tmp_path: Any) -> FakeEngine:
    return FakeEngine(tmp_path)


@pytest.fixture
def ops(engine: FakeEngine) -> Operations:
    return Operations(engine)


async def expect_errno(code: int, awaitable: Awaitable[Any]) -> None:
    with pytest.raises(pyfuse3.FUSEError) as info:
        await awaitable
    assert info.value.errno == code, (errno.errorcode.get(info.value.errno), errno.errorcode[code])


async def lookup_path(ops: Operations, path: str) -> pyfuse3.EntryAttributes:
    ino = ROOT_INODE
    attr = await ops.getattr(ino, CTX)
    for part in path.split("/"):
        attr = await ops.lookup(ino, part.encode(), CTX)
        ino = attr.st_ino
    return attr


async def write_file(ops: Operations, path: str, data: bytes, *, chunk: int = 7) -> int:
    """Create incoming/<path>, write ``data`` sequentially, close it; return the file's inode."""
    parent, _, name = path.rpartition("/")
    parent_ino = (await lookup_path(ops, parent)).st_ino
    fi, attr = await ops.create(parent_ino, name.encode(), 0o644, os.O_WRONLY, CTX)
    for off in range(0, len(data), chunk):
        assert await ops.write(fi.fh, off, data[off : off + chunk]) == len(data[off : off + chunk])
    await ops.flush(fi.fh)
    await ops.release(fi.fh)
    return attr.st_ino


# ---------------------------------------------------------------- the errno table


def test_errno_table_rows_are_not_shadowed() -> None:
    classes = [row[0] for row in ERRNO_TABLE]
    for i, earlier in enumerate(classes):
        for later in classes[i + 1 :]:
            assert not issubclass(later, earlier), f"{later.__name__} shadowed by {earlier}"


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (InvalidHashKey("x"), errno.ENOENT),
        (NotExistent("x"), errno.ENOENT),
        (LockedError("pack lock"), errno.EBUSY),
        (ModificationNotAllowed("ro"), errno.EROFS),
        (CorruptObject("ab" * 32, "short read"), errno.EIO),
        (InconsistentContent("index says otherwise"), errno.EIO),
        (OSError(errno.ENOSPC, "No space left on device"), errno.ENOSPC),
        (FileNotFoundError(errno.ENOENT, "gone"), errno.ENOENT),
        (PermissionError(errno.EACCES, "denied"), errno.EACCES),
        (OSError("no errno"), errno.EIO),
        (RuntimeError("bug"), errno.EIO),
        (KeyError("bug"), errno.EIO),
    ],
)
def test_errno_for(exc: BaseException, code: int) -> None:
    assert errno_for(exc)[0] == code


@trio_test
async def test_boundary_maps_logs_and_lets_cancellation_through(
    caplog: pytest.LogCaptureFixture,
) -> None:
    @boundary
    async def broken() -> None:
        raise ZeroDivisionError("a bug")

    @boundary
    async def corrupt() -> None:
        raise CorruptObject("cd" * 32, "adler32 mismatch")

    @boundary
    async def interrupted() -> None:
        raise KeyboardInterrupt

    with caplog.at_level(logging.DEBUG, logger="dosfs.fs"):
        await expect_errno(errno.EIO, broken())
        await expect_errno(errno.EIO, corrupt())
    messages = [(r.levelno, r.getMessage(), r.exc_info) for r in caplog.records]
    assert any(level == logging.ERROR and info and "broken" in msg for level, msg, info in messages)
    assert any(level == logging.ERROR and "cd" * 32 in msg for level, msg, _ in messages)
    with pytest.raises(KeyboardInterrupt):
        await interrupted()
    with trio.move_on_after(0.01) as scope:  # trio.Cancelled is a BaseException: untouched

        @boundary
        async def sleeper() -> None:
            await trio.sleep(10)

        await sleeper()
    assert scope.cancelled_caught


def test_every_handler_is_behind_the_boundary() -> None:
    names = [
        name
        for name, member in inspect.getmembers(pyfuse3.Operations)
        if inspect.iscoroutinefunction(member) and name in Operations.__dict__
    ]
    assert len(names) >= 25
    for name in names:
        wrapped = getattr(Operations.__dict__[name], "__wrapped__", None)
        assert wrapped is not None, f"{name} is not wrapped"


@trio_test
async def test_forget_never_raises(ops: Operations, monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*_: Any) -> None:
        raise RuntimeError("bug in forget")

    monkeypatch.setattr(ops.table, "forget", explode)
    await ops.forget([(12345, 1)])  # no exception at all, not even FUSEError


# ---------------------------------------------------------------- by-hash/


@trio_test
async def test_lookup_object_attributes(ops: Operations, engine: FakeEngine) -> None:
    h = engine.add(b"hello world")
    attr = await ops.lookup(BY_HASH_INODE, h.encode(), CTX)
    assert stat.S_ISREG(attr.st_mode) and stat.S_IMODE(attr.st_mode) == 0o444
    assert attr.st_size == 11
    assert attr.st_blksize == 1 << 20
    assert attr.entry_timeout >= 3600 and attr.attr_timeout >= 3600
    again = await ops.lookup(BY_HASH_INODE, h.encode(), CTX)
    assert again.st_ino == attr.st_ino
    assert (await ops.getattr(attr.st_ino, CTX)).st_size == 11


@trio_test
async def test_unknown_and_malformed_names_are_enoent(ops: Operations, engine: FakeEngine) -> None:
    h = hashlib.sha256(b"not there").hexdigest()
    await expect_errno(errno.ENOENT, ops.lookup(BY_HASH_INODE, h.encode(), CTX))
    engine.calls.clear()
    for bad in [h.upper(), h[:-1], h + "0", "../" + h[3:], "", "é" * 64]:
        await expect_errno(errno.ENOENT, ops.lookup(BY_HASH_INODE, bad.encode(), CTX))
    await expect_errno(errno.ENOENT, ops.lookup(BY_HASH_INODE, b"\xff" * 64, CTX))
    assert engine.calls.get("get_object_meta", 0) == 0  # malformed names never reach storage
    # no negative caching: the object appears as soon as it exists
    engine.add(b"not there")
    assert (await ops.lookup(BY_HASH_INODE, h.encode(), CTX)).st_size == 9


@trio_test
async def test_forget_drops_and_numbers_are_never_reused(
    ops: Operations, engine: FakeEngine
) -> None:
    h = engine.add(b"x")
    first = (await ops.lookup(BY_HASH_INODE, h.encode(), CTX)).st_ino
    await ops.lookup(BY_HASH_INODE, h.encode(), CTX)
    await ops.forget([(first, 1)])
    assert ops.table.find_object(h) is not None  # still one lookup held by the kernel
    await ops.forget([(first, 1)])
    assert ops.table.find_object(h) is None
    await expect_errno(errno.ESTALE, ops.getattr(first, CTX))
    second = (await ops.lookup(BY_HASH_INODE, h.encode(), CTX)).st_ino
    assert second > first


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (CorruptObject("ab" * 32, "bad"), errno.EIO),
        (PermissionError(errno.EACCES, "denied"), errno.EACCES),
        (RuntimeError("bug"), errno.EIO),
        (LockedError("locked"), errno.EBUSY),
    ],
)
@trio_test
async def test_engine_errors_reach_the_caller_mapped(
    ops: Operations, engine: FakeEngine, exc: BaseException, code: int
) -> None:
    h = engine.add(b"data")
    engine.fail["get_object_meta"] = exc
    await expect_errno(code, ops.lookup(BY_HASH_INODE, h.encode(), CTX))
    del engine.fail["get_object_meta"]
    ino = (await ops.lookup(BY_HASH_INODE, h.encode(), CTX)).st_ino
    engine.fail["open_object"] = exc
    await expect_errno(code, ops.open(ino, os.O_RDONLY, CTX))
    del engine.fail["open_object"]
    fi = await ops.open(ino, os.O_RDONLY, CTX)
    engine.fail["pread"] = exc
    await expect_errno(code, ops.read(fi.fh, 0, 4))
    del engine.fail["pread"]
    assert await ops.read(fi.fh, 0, 4) == b"data"


@trio_test
async def test_open_gone_object_is_enoent(ops: Operations, engine: FakeEngine) -> None:
    h = engine.add(b"soon gone")
    ino = (await ops.lookup(BY_HASH_INODE, h.encode(), CTX)).st_ino
    del engine.objects[h]
    await expect_errno(errno.ENOENT, ops.open(ino, os.O_RDONLY, CTX))


@trio_test
async def test_reads_loose_inline_compressed_in_a_worker(
    ops: Operations, engine: FakeEngine
) -> None:
    data = os.urandom(300_000)
    plain = engine.add(data)
    comp = engine.add(data[::-1], packed=True, compressed=True)
    fi_plain = await ops.open(
        (await ops.lookup(BY_HASH_INODE, plain.encode(), CTX)).st_ino, os.O_RDONLY, CTX
    )
    fi_comp = await ops.open(
        (await ops.lookup(BY_HASH_INODE, comp.encode(), CTX)).st_ino, os.O_RDONLY, CTX
    )
    assert fi_plain.keep_cache and fi_comp.keep_cache
    for off, size in [(0, 4096), (123_457, 131_072), (299_000, 131_072), (400_000, 10)]:
        assert await ops.read(fi_plain.fh, off, size) == data[off : off + size]
        assert await ops.read(fi_comp.fh, off, size) == data[::-1][off : off + size]
    me = threading.get_ident()
    plain_reader, comp_reader = engine.readers
    assert set(plain_reader.threads) == {me}
    assert me not in comp_reader.threads
    await ops.release(fi_plain.fh)
    await ops.release(fi_comp.fh)
    assert plain_reader.closed and comp_reader.closed
    assert len(ops.files) == 0


@trio_test
async def test_writes_under_by_hash_and_root_are_erofs(ops: Operations, engine: FakeEngine) -> None:
    h = engine.add(b"immutable")
    ino = (await ops.lookup(BY_HASH_INODE, h.encode(), CTX)).st_ino
    for flags in (os.O_WRONLY, os.O_RDWR):
        await expect_errno(errno.EROFS, ops.open(ino, flags, CTX))
    fields = pyfuse3.SetattrFields()
    attr = pyfuse3.EntryAttributes()
    for target in (ino, ROOT_INODE, BY_HASH_INODE):
        await expect_errno(errno.EROFS, ops.setattr(target, attr, fields, None, CTX))
    for parent in (ROOT_INODE, BY_HASH_INODE):
        await expect_errno(errno.EROFS, ops.create(parent, b"new", 0o644, os.O_WRONLY, CTX))
        await expect_errno(errno.EROFS, ops.mkdir(parent, b"d", 0o755, CTX))
        await expect_errno(errno.EROFS, ops.unlink(parent, h.encode(), CTX))
        await expect_errno(errno.EROFS, ops.symlink(parent, b"l", b"t", CTX))
        await expect_errno(
            errno.EROFS, ops.rename(parent, h.encode(), INCOMING_INODE, b"x", 0, CTX)
        )
        await expect_errno(errno.EROFS, ops.rename(INCOMING_INODE, b"x", parent, b"y", 0, CTX))
    await expect_errno(errno.EROFS, ops.setxattr(ino, b"user.x", b"1", CTX))
    await expect_errno(errno.EROFS, ops.removexattr(ino, b"user.x", CTX))
    await expect_errno(errno.ENOTDIR, ops.create(ino, b"x", 0o644, os.O_WRONLY, CTX))


@trio_test
async def test_xattrs(ops: Operations, engine: FakeEngine) -> None:
    loose = engine.add(b"loose bytes")
    packed = engine.add(b"packed bytes" * 10, packed=True, compressed=True)
    ino_l = (await ops.lookup(BY_HASH_INODE, loose.encode(), CTX)).st_ino
    ino_p = (await ops.lookup(BY_HASH_INODE, packed.encode(), CTX)).st_ino
    get = ops.getxattr
    assert await get(ino_l, b"user.dosfs.type", CTX) == b"loose"
    assert await get(ino_l, b"user.dosfs.size", CTX) == b"11"
    await expect_errno(pyfuse3.ENOATTR, get(ino_l, b"user.dosfs.pack_id", CTX))
    assert await get(ino_p, b"user.dosfs.type", CTX) == b"packed"
    assert await get(ino_p, b"user.dosfs.pack_id", CTX) == b"3"
    assert await get(ino_p, b"user.dosfs.pack_offset", CTX) == b"1000"
    assert await get(ino_p, b"user.dosfs.pack_length", CTX) == b"60"
    assert await get(ino_p, b"user.dosfs.compressed", CTX) == b"1"
    assert await get(ino_p, b"user.dosfs.hash", CTX) == packed.encode()
    assert len(await ops.listxattr(ino_l, CTX)) == 3
    assert len(await ops.listxattr(ino_p, CTX)) == 7
    engine.calls.clear()
    for name in (b"security.capability", b"security.selinux", b"system.posix_acl_access",
                 b"trusted.x"):
        await expect_errno(errno.EOPNOTSUPP, get(ino_p, name, CTX))  # ls stops asking
    for name in (b"user.other", b"user.dosfs.nope"):
        await expect_errno(pyfuse3.ENOATTR, get(ino_p, name, CTX))
    assert engine.calls.get("get_object_meta", 0) == 1  # only user.dosfs.nope asked storage
    await expect_errno(pyfuse3.ENOATTR, get(ROOT_INODE, b"user.dosfs.type", CTX))
    # the object is packed later: the xattr follows, it is not cached
    engine.packed[loose] = {
        "pack_id": 0,
        "pack_offset": 0,
        "pack_length": 11,
        "pack_compressed": False,
    }
    assert await get(ino_l, b"user.dosfs.type", CTX) == b"packed"
    assert await get(ino_l, b"user.dosfs.compressed", CTX) == b"0"


@trio_test
async def test_statfs_reports_backing_fs_and_is_cached(ops: Operations, engine: FakeEngine) -> None:
    first = await ops.statfs(CTX)
    assert first.f_blocks > 0 and first.f_namemax == 255
    assert (await ops.statfs(CTX)) is first


# ---------------------------------------------------------------- by-hash listing


async def list_all(ops: Operations, fh: int, capacity: int) -> list[tuple[bytes, Any, int]]:
    seen: list[tuple[bytes, Any, int]] = []
    start = 0
    while True:
        token = Token(capacity)
        await ops.readdir(fh, start, token)
        if not token.entries:
            return seen
        seen.extend(token.entries)
        start = token.entries[-1][2]


@trio_test
async def test_listing_streams_in_hash_order_across_pages(
    ops: Operations, engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fs_byhash_listing, "LISTING_BATCH", 16)
    hashes = sorted(engine.add(str(i).encode()) for i in range(300))
    fh = await ops.opendir(BY_HASH_INODE, CTX)
    entries = await list_all(ops, fh, capacity=7)
    assert [e[0].decode() for e in entries] == hashes
    assert [e[2] for e in entries] == sorted(e[2] for e in entries)
    sizes = {h: len(engine.objects[h]) for h in hashes}
    assert all(e[1].st_size == sizes[e[0].decode()] for e in entries)
    assert all(e[1].entry_timeout >= 3600 for e in entries)
    # only accepted entries hold a lookup; forgetting them empties the table again
    assert sum(n.lookups for n in ops.table.nodes() if hasattr(n, "hashkey")) == 300
    await ops.forget([(e[1].st_ino, 1) for e in entries])
    assert len(ops.table) == 3
    # the buffer never held more than one batch
    assert engine.calls["iter_hashkeys"] >= 300 // 16
    await ops.releasedir(fh)
    assert len(ops.dirs) == 0


@trio_test
async def test_kernel_held_objects_are_bounded(engine: FakeEngine) -> None:
    invalidated: list[tuple[int, bytes]] = []
    ops = Operations(
        engine, max_inodes=100, invalidate_entry=lambda p, n: invalidated.append((p, n))
    )
    hashes = sorted(engine.add(b"%d" % i) for i in range(1000))
    # a listing tracks entries up to the bound, then hands out untracked, never reused numbers
    fh = await ops.opendir(BY_HASH_INODE, CTX)
    entries = await list_all(ops, fh, capacity=50)
    assert [e[0].decode() for e in entries] == hashes
    tracked, untracked = entries[:100], entries[100:]
    assert all(e[1].entry_timeout >= 3600 for e in tracked)
    assert all(e[1].entry_timeout == 0 and e[1].attr_timeout == 0 for e in untracked)
    numbers = [e[1].st_ino for e in entries]
    assert len(set(numbers)) == 1000
    assert len(ops.table) - 3 == 100
    await expect_errno(errno.ESTALE, ops.getattr(untracked[0][1].st_ino, CTX))
    await ops.forget([(e[1].st_ino, 1) for e in untracked])  # harmless
    assert invalidated == []
    # lookups past the bound make the kernel drop the oldest entries (second chance for
    # entries looked up again), and its forgets bring the table back under the bound
    await ops.lookup(BY_HASH_INODE, hashes[0].encode(), CTX)  # hashes[0] is used again
    for h in hashes[100:300]:
        await ops.lookup(BY_HASH_INODE, h.encode(), CTX)
    dropped = [name.decode() for _, name in invalidated]
    assert all(parent == BY_HASH_INODE for parent, _ in invalidated)
    assert dropped[0] == hashes[1]  # oldest first, but hashes[0] had a second chance
    assert hashes[0] not in dropped[:99]
    assert 200 <= len(dropped) <= 256
    held = {h: ops.table.find_object(h) for h in dropped}
    await ops.forget([(n.ino, n.lookups) for n in held.values() if n is not None])
    assert len(ops.table) - 3 <= 100
    # a dropped name looked up again is served normally (fresh number)
    again = await ops.lookup(BY_HASH_INODE, dropped[0].encode(), CTX)
    assert again.st_ino > max(numbers)


@trio_test
async def test_listing_resumes_exactly_and_from_old_cursors(
    ops: Operations, engine: FakeEngine
) -> None:
    hashes = sorted(engine.add(str(i).encode()) for i in range(50))
    fh = await ops.opendir(BY_HASH_INODE, CTX)
    first = Token(10)
    await ops.readdir(fh, 0, first)
    # objects added/removed between pages do not make others skip or repeat
    engine.add(b"new object")
    resume = first.entries[4][2]  # seekdir back to the 5th entry
    again = Token(3)
    await ops.readdir(fh, resume, again)
    assert [e[0].decode() for e in again.entries] == hashes[5:8]
    # a cursor the handle does not remember: resolved by prefix in a fresh handle
    fh2 = await ops.opendir(BY_HASH_INODE, CTX)
    other = Token(2)
    await ops.readdir(fh2, cursor_id(hashes[20]), other)
    assert [e[0].decode() for e in other.entries] == [
        h for h in sorted(engine.objects) if h > hashes[20]
    ][:2]
    # rewind
    rewound = Token(1)
    await ops.readdir(fh, 0, rewound)
    assert rewound.entries[0][0].decode() == min(engine.objects)


@trio_test
async def test_listing_can_be_turned_off(engine: FakeEngine) -> None:
    ops = Operations(engine, listing=False)
    await expect_errno(errno.EACCES, ops.opendir(BY_HASH_INODE, CTX))
    attr = await ops.getattr(BY_HASH_INODE, CTX)
    assert stat.S_IMODE(attr.st_mode) == 0o111
    h = engine.add(b"still reachable by name")
    assert (await ops.lookup(BY_HASH_INODE, h.encode(), CTX)).st_size == 23


@trio_test
async def test_root_listing(ops: Operations) -> None:
    fh = await ops.opendir(ROOT_INODE, CTX)
    entries = await list_all(ops, fh, capacity=1)
    assert [e[0] for e in entries] == [b"by-hash", b"incoming"]


# ---------------------------------------------------------------- incoming/


@trio_test
async def test_write_commit_and_link(ops: Operations, engine: FakeEngine) -> None:
    data = os.urandom(10_000)
    old_ino = await write_file(ops, "incoming/file.bin", data)
    h = hashlib.sha256(data).hexdigest()
    assert engine.objects[h] == data
    attr = await lookup_path(ops, "incoming/file.bin")
    assert stat.S_ISLNK(attr.st_mode) and attr.st_ino != old_ino
    assert await ops.readlink(attr.st_ino, CTX) == f"../by-hash/{h}".encode()
    assert attr.st_size == len(f"../by-hash/{h}")
    assert engine.staged[0].fsyncs >= 1  # flush made it durable before close returned


@trio_test
async def test_links_have_the_right_depth_after_renames(
    ops: Operations, engine: FakeEngine
) -> None:
    a = (await ops.mkdir(INCOMING_INODE, b"a", 0o755, CTX)).st_ino
    await ops.mkdir(a, b"b", 0o755, CTX)
    await write_file(ops, "incoming/a/b/deep", b"deep")
    h = hashlib.sha256(b"deep").hexdigest()
    link = await lookup_path(ops, "incoming/a/b/deep")
    assert await ops.readlink(link.st_ino, CTX) == f"../../../by-hash/{h}".encode()
    b_ino = (await lookup_path(ops, "incoming/a/b")).st_ino
    await ops.rename(b_ino, b"deep", INCOMING_INODE, b"shallow", 0, CTX)
    assert await ops.readlink(link.st_ino, CTX) == f"../by-hash/{h}".encode()
    # moving a whole directory changes the depth of links inside it
    await ops.rename(INCOMING_INODE, b"shallow", b_ino, b"again", 0, CTX)
    await ops.rename(a, b"b", INCOMING_INODE, b"b", 0, CTX)
    assert await ops.readlink(link.st_ino, CTX) == f"../../by-hash/{h}".encode()


@trio_test
async def test_random_pattern_writes_and_truncate(ops: Operations, engine: FakeEngine) -> None:
    fi, attr = await ops.create(INCOMING_INODE, b"sparse", 0o644, os.O_RDWR, CTX)
    await ops.write(fi.fh, 100, b"tail")
    await ops.write(fi.fh, 0, b"head")
    assert await ops.read(fi.fh, 0, 4) == b"head"
    assert (await ops.getattr(attr.st_ino, CTX)).st_size == 104
    # SetattrFields cannot be filled from Python: a stand-in with the same attributes
    trunc = SimpleNamespace(
        update_size=True,
        update_mode=False,
        update_uid=False,
        update_gid=False,
        update_atime=False,
        update_mtime=False,
    )
    new = pyfuse3.EntryAttributes()
    new.st_size = 50
    assert (await ops.setattr(attr.st_ino, new, trunc, fi.fh, CTX)).st_size == 50
    await ops.release(fi.fh)
    expected = b"head" + b"\0" * 46
    assert engine.objects[hashlib.sha256(expected).hexdigest()] == expected


@trio_test
async def test_enospc_on_write_is_visible_and_commits_nothing(
    ops: Operations, engine: FakeEngine
) -> None:
    fi, attr = await ops.create(INCOMING_INODE, b"big", 0o644, os.O_WRONLY, CTX)
    await ops.write(fi.fh, 0, b"a" * 10)
    engine.fail["pwrite"] = OSError(errno.ENOSPC, "No space left on device")
    await expect_errno(errno.ENOSPC, ops.write(fi.fh, 10, b"b" * 10))
    del engine.fail["pwrite"]
    await expect_errno(errno.ENOSPC, ops.write(fi.fh, 20, b"c"))  # the file stays failed
    await expect_errno(errno.ENOSPC, ops.flush(fi.fh))  # so close() reports it too
    await ops.release(fi.fh)
    assert engine.commits == [] and engine.staged[0].state == "discarded"
    await expect_errno(errno.ENOENT, ops.lookup(INCOMING_INODE, b"big", CTX))
    await ops.forget([(attr.st_ino, 1)])
    assert len(ops.table) == 3


@trio_test
async def test_eio_at_fsync_reaches_close_and_commits_nothing(
    ops: Operations, engine: FakeEngine
) -> None:
    fi, _ = await ops.create(INCOMING_INODE, b"f", 0o644, os.O_WRONLY, CTX)
    await ops.write(fi.fh, 0, b"bytes")
    engine.fail["fsync"] = OSError(errno.EIO, "Input/output error")
    await expect_errno(errno.EIO, ops.flush(fi.fh))
    await ops.release(fi.fh)
    assert engine.commits == [] and engine.staged[0].state == "discarded"


@trio_test
async def test_commit_failure_leaves_no_name(
    ops: Operations, engine: FakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    engine.fail["commit"] = OSError(errno.ENOSPC, "No space left on device")
    with caplog.at_level(logging.WARNING, logger="dosfs.fs"):
        fi, _ = await ops.create(INCOMING_INODE, b"f", 0o644, os.O_WRONLY, CTX)
        await ops.write(fi.fh, 0, b"content")
        await expect_errno(errno.ENOSPC, ops.flush(fi.fh))  # close() is the commit: it says so
        await ops.release(fi.fh)
    assert engine.commits == []
    await expect_errno(errno.ENOENT, ops.lookup(INCOMING_INODE, b"f", CTX))
    assert "incoming/f" in caplog.text


@trio_test
async def test_unlinked_while_open_is_not_committed(ops: Operations, engine: FakeEngine) -> None:
    fi, _ = await ops.create(INCOMING_INODE, b"tmp", 0o644, os.O_RDWR, CTX)
    await ops.write(fi.fh, 0, b"scratch")
    await ops.unlink(INCOMING_INODE, b"tmp", CTX)
    assert await ops.read(fi.fh, 0, 7) == b"scratch"  # still readable through the handle
    await ops.release(fi.fh)
    assert engine.commits == [] and engine.staged[0].state == "discarded"


@trio_test
async def test_write_only_handles_bypass_the_page_cache(ops: Operations) -> None:
    # direct_io spares the kernel a copy of every write; write-only handles cannot be mmap'ed,
    # so they lose nothing by it, while a read-write handle keeps the page cache (mmap works)
    fi, attr = await ops.create(INCOMING_INODE, b"wo", 0o644, os.O_WRONLY | os.O_CREAT, CTX)
    assert fi.direct_io and not fi.keep_cache
    fi_rw, _ = await ops.create(INCOMING_INODE, b"rw", 0o644, os.O_RDWR, CTX)
    assert not fi_rw.direct_io
    assert (await ops.open(attr.st_ino, os.O_WRONLY | os.O_APPEND, CTX)).direct_io
    assert not (await ops.open(attr.st_ino, os.O_RDWR, CTX)).direct_io
    assert not (await ops.open(attr.st_ino, os.O_RDONLY, CTX)).direct_io


@trio_test
async def test_two_handles_commit_on_last_release(ops: Operations, engine: FakeEngine) -> None:
    fi, attr = await ops.create(INCOMING_INODE, b"shared", 0o644, os.O_WRONLY, CTX)
    fi2 = await ops.open(attr.st_ino, os.O_WRONLY, CTX)
    await ops.write(fi.fh, 0, b"one ")
    await ops.write(fi2.fh, 4, b"two")
    await ops.release(fi.fh)
    assert engine.commits == []
    await ops.release(fi2.fh)
    assert engine.objects[engine.commits[0]] == b"one two"
    # the old file inode, still known to the kernel, reads the object, but cannot be written
    fi3 = await ops.open(attr.st_ino, os.O_RDONLY, CTX)
    assert await ops.read(fi3.fh, 0, 100) == b"one two"
    await expect_errno(errno.EROFS, ops.open(attr.st_ino, os.O_WRONLY, CTX))


@trio_test
async def test_lookup_during_commit_waits_for_the_link(ops: Operations, engine: FakeEngine) -> None:
    gate = threading.Event()
    fi, _ = await ops.create(INCOMING_INODE, b"slow", 0o644, os.O_WRONLY, CTX)
    await ops.write(fi.fh, 0, b"slow commit")
    staged = engine.staged[0]
    original = staged.commit

    def slow_commit() -> str:
        gate.wait(5)
        return original()

    staged.commit = slow_commit  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ops.release, fi.fh)
        await trio.sleep(0.01)
        assert ops.incoming.children[b"slow"].state == "committing"  # type: ignore[attr-defined]

        async def lookup() -> None:
            attr = await ops.lookup(INCOMING_INODE, b"slow", CTX)
            assert stat.S_ISLNK(attr.st_mode)

        nursery.start_soon(lookup)
        await trio.sleep(0.01)
        gate.set()


@trio_test
async def test_names_are_bounded_oldest_links_first(engine: FakeEngine) -> None:
    ops = Operations(engine, max_names=3)
    for i in range(3):
        await write_file(ops, f"incoming/f{i}", b"%d" % i)
    await write_file(ops, "incoming/f3", b"3")
    names = set(ops.incoming.children)
    assert names == {b"f1", b"f2", b"f3"}
    assert len(engine.commits) == 4  # dropping a name never drops the object
    await ops.mkdir(INCOMING_INODE, b"d1", 0o755, CTX)
    await ops.mkdir(INCOMING_INODE, b"d2", 0o755, CTX)
    fi, _ = await ops.create(INCOMING_INODE, b"open", 0o644, os.O_WRONLY, CTX)
    assert set(ops.incoming.children) == {b"d1", b"d2", b"open"}
    await expect_errno(errno.ENOSPC, ops.mkdir(INCOMING_INODE, b"d3", 0o755, CTX))
    await ops.release(fi.fh)
    await ops.mkdir(INCOMING_INODE, b"d3", 0o755, CTX)  # the committed link made room
    assert set(ops.incoming.children) == {b"d1", b"d2", b"d3"}


@trio_test
async def test_namespace_errors(ops: Operations, engine: FakeEngine) -> None:
    d = (await ops.mkdir(INCOMING_INODE, b"d", 0o755, CTX)).st_ino
    await ops.mkdir(d, b"sub", 0o755, CTX)
    await write_file(ops, "incoming/d/f", b"f")
    await write_file(ops, "incoming/g", b"g")
    await expect_errno(errno.EEXIST, ops.mkdir(INCOMING_INODE, b"d", 0o755, CTX))
    await expect_errno(errno.EEXIST, ops.create(INCOMING_INODE, b"g", 0o644, os.O_WRONLY, CTX))
    await expect_errno(errno.ENOTEMPTY, ops.rmdir(INCOMING_INODE, b"d", CTX))
    await expect_errno(errno.ENOTDIR, ops.rmdir(INCOMING_INODE, b"g", CTX))
    await expect_errno(errno.EISDIR, ops.unlink(INCOMING_INODE, b"d", CTX))
    await expect_errno(errno.ENOENT, ops.unlink(INCOMING_INODE, b"nope", CTX))
    await expect_errno(errno.ENOENT, ops.rename(INCOMING_INODE, b"nope", d, b"x", 0, CTX))
    await expect_errno(errno.EINVAL, ops.rename(INCOMING_INODE, b"d", d, b"inside", 0, CTX))
    await expect_errno(
        errno.EEXIST, ops.rename(INCOMING_INODE, b"g", d, b"f", pyfuse3.RENAME_NOREPLACE, CTX)
    )
    await expect_errno(errno.EISDIR, ops.rename(INCOMING_INODE, b"g", d, b"sub", 0, CTX))
    await expect_errno(errno.ENOTDIR, ops.rename(d, b"sub", INCOMING_INODE, b"g", 0, CTX))
    await expect_errno(
        errno.EPERM, ops.mknod(INCOMING_INODE, b"fifo", stat.S_IFIFO | 0o644, 0, CTX)
    )
    g = await ops.lookup(INCOMING_INODE, b"g", CTX)
    await expect_errno(errno.EPERM, ops.link(g.st_ino, d, b"hard", CTX))
    await expect_errno(errno.ENOTSUP, ops.setxattr(d, b"user.x", b"1", CTX))
    # replace a file by rename, exchange two names
    await ops.rename(INCOMING_INODE, b"g", d, b"f", 0, CTX)
    assert await ops.readlink((await lookup_path(ops, "incoming/d/f")).st_ino, CTX) == (
        b"../../by-hash/" + hashlib.sha256(b"g").hexdigest().encode()
    )
    await ops.symlink(INCOMING_INODE, b"mine", b"/etc/hostname", CTX)
    await ops.rename(INCOMING_INODE, b"mine", d, b"sub", pyfuse3.RENAME_EXCHANGE, CTX)
    assert stat.S_ISDIR((await ops.lookup(INCOMING_INODE, b"mine", CTX)).st_mode)
    assert await ops.readlink((await lookup_path(ops, "incoming/d/sub")).st_ino, CTX) == (
        b"/etc/hostname"
    )
    await ops.rmdir(INCOMING_INODE, b"mine", CTX)
    # a directory removed while a process is inside it accepts no new names
    e = (await ops.mkdir(INCOMING_INODE, b"e", 0o755, CTX)).st_ino
    await ops.rmdir(INCOMING_INODE, b"e", CTX)
    await expect_errno(errno.ENOENT, ops.create(e, b"z", 0o644, os.O_WRONLY, CTX))
    await expect_errno(errno.ENOENT, ops.mkdir(e, b"z", 0o755, CTX))


@trio_test
async def test_incoming_listing_is_stable_under_removal(ops: Operations) -> None:
    for i in range(20):
        await ops.mkdir(INCOMING_INODE, b"d%02d" % i, 0o755, CTX)
    fh = await ops.opendir(INCOMING_INODE, CTX)
    first = Token(5)
    await ops.readdir(fh, 0, first)
    await ops.rmdir(INCOMING_INODE, b"d06", CTX)
    await ops.rename(INCOMING_INODE, b"d07", INCOMING_INODE, b"z07", 0, CTX)
    seen = [e[0] for e in first.entries]
    start = first.entries[-1][2]
    while True:
        token = Token(4)
        await ops.readdir(fh, start, token)
        if not token.entries:
            break
        seen.extend(e[0] for e in token.entries)
        start = token.entries[-1][2]
    expected = [b"d%02d" % i for i in range(20) if i not in (6, 7)]
    assert seen == expected  # nothing skipped or repeated; the renamed one shows on rewind
    rewind = Token(100)
    await ops.readdir(fh, 0, rewind)
    assert [e[0] for e in rewind.entries][-1] == b"z07"


@trio_test
async def test_read_only_mount(engine: FakeEngine) -> None:
    ops = Operations(engine, read_only=True)
    attr = await ops.getattr(INCOMING_INODE, CTX)
    assert stat.S_IMODE(attr.st_mode) == 0o555
    await expect_errno(errno.EROFS, ops.create(INCOMING_INODE, b"x", 0o644, os.O_WRONLY, CTX))
    await expect_errno(errno.EROFS, ops.mkdir(INCOMING_INODE, b"x", 0o755, CTX))
    h = engine.add(b"readable")
    ino = (await ops.lookup(BY_HASH_INODE, h.encode(), CTX)).st_ino
    fi = await ops.open(ino, os.O_RDONLY, CTX)
    assert await ops.read(fi.fh, 0, 100) == b"readable"


@trio_test
async def test_shutdown_discards_unfinished_files(ops: Operations, engine: FakeEngine) -> None:
    fi, _ = await ops.create(INCOMING_INODE, b"partial", 0o644, os.O_WRONLY, CTX)
    await ops.write(fi.fh, 0, b"half of it")
    h = engine.add(b"open reader")
    rfi = await ops.open(
        (await ops.lookup(BY_HASH_INODE, h.encode(), CTX)).st_ino, os.O_RDONLY, CTX
    )
    assert rfi.fh
    ops.shutdown()
    assert engine.commits == [] and engine.staged[0].state == "discarded"
    assert engine.readers[0].closed


def test_errors_module_has_one_table() -> None:
    # the table is the only mapping: handlers raise FUSEError only for decisions of their own
    for module in (fs_operations, fs_namespace, fs_root, fs_byhash, fs_byhash_listing, fs_incoming,
                   fs_incoming_handles, fs_incoming_file, fs_nodes):
        source = inspect.getsource(module)
        assert "ERRNO_TABLE" not in source and "except OSError" not in source
    assert fs_errors.ERRNO_TABLE is ERRNO_TABLE


# ---------------------------------------------------------------- write-behind (big files)


@pytest.fixture
def small_write_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fs_incoming_file, "START_AFTER", 64)
    monkeypatch.setattr("dosfs.fs.writebehind.MAX_PENDING", 256)


@trio_test
async def test_write_behind_keeps_order_size_and_reads(
    ops: Operations, engine: FakeEngine, small_write_behind: None
) -> None:
    fi, attr = await ops.create(INCOMING_INODE, b"big", 0o644, os.O_RDWR, CTX)
    data = os.urandom(5000)
    for off in range(0, len(data), 100):
        await ops.write(fi.fh, off, data[off : off + 100])
        assert (await ops.getattr(attr.st_ino, CTX)).st_size == off + 100  # never behind
    node = ops.incoming.children[b"big"]
    assert node.behind is not None  # type: ignore[attr-defined]
    assert await ops.read(fi.fh, 4900, 200) == data[4900:]  # reads wait for queued writes
    await ops.flush(fi.fh)
    await ops.release(fi.fh)
    assert engine.objects[hashlib.sha256(data).hexdigest()] == data


@trio_test
async def test_write_behind_error_reaches_next_write_and_close(
    ops: Operations, engine: FakeEngine, small_write_behind: None
) -> None:
    fi, _ = await ops.create(INCOMING_INODE, b"big", 0o644, os.O_WRONLY, CTX)
    await ops.write(fi.fh, 0, b"a" * 100)  # inline; switches to write-behind
    engine.fail["pwrite"] = OSError(errno.ENOSPC, "No space left on device")
    await ops.write(fi.fh, 100, b"b" * 100)  # queued: its failure shows up later
    with pytest.raises(pyfuse3.FUSEError) as info:
        for off in range(200, 100_000, 100):
            await ops.write(fi.fh, off, b"c" * 100)
            await trio.sleep(0.001)
    assert info.value.errno == errno.ENOSPC
    await expect_errno(errno.ENOSPC, ops.flush(fi.fh))
    await ops.release(fi.fh)
    assert engine.commits == [] and engine.staged[0].state == "discarded"
    assert b"big" not in ops.incoming.children


def test_write_behind_starts_writeback_early(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writebehind, "WRITEBACK_STEP", 1000)
    path = tmp_path / "staging"
    path.write_bytes(b"")
    calls: list[tuple[int, int]] = []
    real = writebehind._sync_file_range
    assert real is not None  # Linux/glibc

    def spy(fd: int, offset: int, length: int, flags: int) -> int:
        calls.append((offset, length))
        return real(fd, offset, length, flags)

    monkeypatch.setattr(writebehind, "_sync_file_range", spy)
    data = os.urandom(5000)

    def pwrite(buf: bytes, off: int) -> int:
        return os.pwrite(fd, buf, off)

    async def main() -> WriteBehind:
        behind = writebehind.WriteBehind(pwrite, 0, str(path))
        for off in range(0, len(data), 300):
            await behind.write(data[off : off + 300], off)
        await behind.drain()
        behind.stop(wait=True)
        return behind

    fd = os.open(path, os.O_WRONLY)
    try:
        behind = trio.run(main)
    finally:
        os.close(fd)
    assert path.read_bytes() == data
    # consecutive ranges from 0, each started once at least WRITEBACK_STEP bytes were written
    assert calls and calls[0][0] == 0 and all(n >= 1000 for _, n in calls)
    assert all(a + n == b for (a, n), (b, _) in zip(calls, calls[1:], strict=False))
    assert behind._wb_fd is None  # its own descriptor is closed with the thread
    assert behind.error is None


@trio_test
async def test_closing_a_big_compressed_reader_trims_the_heap(
    ops: Operations, engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fs_byhash, "TRIM_AFTER", 1000)
    calls: list[int] = []
    monkeypatch.setattr(memory, "_malloc_trim", lambda pad: calls.append(pad) or 1)
    small_comp = engine.add(b"x" * 999, packed=True, compressed=True)
    plain = engine.add(os.urandom(5000))
    comp = engine.add(b"y" * 5000, packed=True, compressed=True)
    comp2 = engine.add(b"z" * 5000, packed=True, compressed=True)

    async def open_close(hashkey: str) -> None:
        ino = (await ops.lookup(BY_HASH_INODE, hashkey.encode(), CTX)).st_ino
        await ops.release((await ops.open(ino, os.O_RDONLY, CTX)).fh)

    await open_close(small_comp)
    await open_close(plain)
    assert calls == []  # only big compressed readers leave much freed memory behind
    await open_close(comp)
    assert calls == [0]
    await open_close(comp2)
    assert calls == [0]  # rate-limited
    monkeypatch.setattr(memory, "MIN_INTERVAL", 0.0)
    await open_close(comp2)
    assert calls == [0, 0]


def test_real_malloc_trim_is_callable() -> None:
    assert memory._malloc_trim is not None  # glibc
    assert memory.Trimmer().maybe_trim()


@trio_test
async def test_lookup_snapshot_is_released_when_idle(ops: Operations, engine: FakeEngine) -> None:
    key = engine.add(b"looked up", packed=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ops.by_hash.snapshot_keeper)
        await ops.lookup(BY_HASH_INODE, key.encode(), CTX)
        assert engine.snapshots_held
        with trio.fail_after(5):
            while engine.snapshots_held:  # noqa: ASYNC110 - the fake engine has no event
                await trio.sleep(0.01)  # released SNAPSHOT_IDLE after the last lookup
        await ops.lookup(BY_HASH_INODE, key.encode(), CTX)  # and taken again by the next
        assert engine.snapshots_held
        nursery.cancel_scope.cancel()
