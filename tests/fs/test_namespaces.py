"""The table of namespaces (dosfs/fs/namespace.py): a namespace added to a mount is served by
every handler without a change to Operations, and what it does not serve is refused with the
mount's usual errnos (NamespaceBase). tests/test_seams.py checks that operations.py has no type
checks; tests/fs/test_operations.py pins every errno of the real namespaces."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from typing import Any, ClassVar

import pyfuse3
import pytest

from dosfs.fs import handles as fs_handles
from dosfs.fs.inodes import FIRST_DYNAMIC_INODE, ROOT_INODE, FixedDir, Node
from dosfs.fs.namespace import Namespace, NamespaceBase, Namespaces
from dosfs.fs.operations import Operations
from tests.fs.fake_engine import FakeEngine
from tests.fs.test_operations import CTX, Token, expect_errno, trio_test

TOY = ROOT_INODE + 6  # a free fixed inode: the toy namespace's folder and its id
assert TOY < FIRST_DYNAMIC_INODE


class ToyFile(Node):
    """toy/<name>: a file whose content is its name."""

    __slots__ = ("name",)
    space = TOY

    def __init__(self, name: bytes) -> None:
        super().__init__()
        self.name = name


@dataclass(eq=False)
class ToyHandle:
    content: bytes
    space: ClassVar[int] = TOY


@dataclass(eq=False)
class ToyListing:
    space: ClassVar[int] = TOY


class Toy(NamespaceBase):
    """A read-only namespace of a few files: only the read side is written."""

    def __init__(self, spaces: Namespaces, ops: Operations) -> None:
        super().__init__(spaces)
        self.ops = ops
        self.dir = FixedDir(TOY, b"toy", TOY)
        ops.table.add_fixed(self.dir)
        self.released: list[ToyHandle] = []

    async def lookup(self, parent: Node, name: bytes) -> pyfuse3.EntryAttributes:
        if parent is not self.dir or name in (b".", b".."):
            return await super().lookup(parent, name)
        if not name.startswith(b"f"):
            raise pyfuse3.FUSEError(errno.ENOENT)
        node = ToyFile(name)
        self.ops.table.register(node)
        return self.spaces.entry(node)

    def getattr(self, node: Node) -> pyfuse3.EntryAttributes:
        if isinstance(node, ToyFile):
            return self.ops.attrs.object(node.ino, len(node.name))
        return self.ops.attrs.directory(node.ino, 0o555, 2, 1.0)

    async def open(self, node: Node, flags: int) -> tuple[ToyHandle, pyfuse3.FileInfo]:
        if not isinstance(node, ToyFile):
            return await super().open(node, flags)
        return ToyHandle(node.name), pyfuse3.FileInfo(keep_cache=True)

    async def read(self, handle: ToyHandle, off: int, size: int) -> bytes:
        return handle.content[off : off + size]

    async def release(self, handle: ToyHandle) -> None:
        self.released.append(handle)

    def opendir(self, node: Node) -> ToyListing:
        if node is not self.dir:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return ToyListing()

    async def readdir(self, handle: ToyListing, start_id: int, token: Any) -> None:
        for index, name in enumerate((b"f1", b"f22")):
            if index >= start_id:
                fs_handles.readdir_reply(token, name, self.ops.attrs.object(0, len(name)),
                                         index + 1)


@pytest.fixture(autouse=True)
def fake_readdir_reply(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fs_handles, "readdir_reply", lambda token, *a: token.reply(*a))


@pytest.fixture
def ops(tmp_path: Any) -> Operations:
    return Operations(FakeEngine(tmp_path))


@trio_test
async def test_a_new_namespace_is_served_by_every_handler(ops: Operations) -> None:
    toy = Toy(ops.spaces, ops)
    checked: Namespace[ToyHandle, ToyListing] = toy  # as mypy checks the real ones
    ops.spaces.add(TOY, checked)
    assert (await ops.getattr(TOY, CTX)).st_mode & 0o777 == 0o555
    attr = await ops.lookup(TOY, b"f123", CTX)
    assert attr.st_size == 4 and (await ops.getattr(attr.st_ino, CTX)).st_size == 4
    await expect_errno(errno.ENOENT, ops.lookup(TOY, b"x", CTX))
    assert (await ops.lookup(TOY, b"..", CTX)).st_ino == TOY  # NamespaceBase: itself
    fi = await ops.open(attr.st_ino, os.O_RDONLY, CTX)
    assert fi.keep_cache and await ops.read(fi.fh, 1, 2) == b"12"
    await ops.flush(fi.fh)  # nothing to flush: NamespaceBase
    await expect_errno(errno.EBADF, ops.write(fi.fh, 0, b"x"))
    await ops.release(fi.fh)
    assert [h.content for h in toy.released] == [b"f123"]
    fh = await ops.opendir(TOY, CTX)
    token = Token(10)
    await ops.readdir(fh, 0, token)
    assert [name for name, _attr, _next in token.entries] == [b"f1", b"f22"]
    await ops.releasedir(fh)
    # the write side it does not implement: the errnos of a read-only namespace
    await expect_errno(errno.EROFS, ops.mkdir(TOY, b"d", 0o755, CTX))
    await expect_errno(errno.EROFS, ops.create(TOY, b"n", 0o644, os.O_WRONLY, CTX))
    await expect_errno(errno.EROFS, ops.rename(TOY, b"f1", TOY, b"f2", 0, CTX))
    await expect_errno(errno.EROFS, ops.setattr(attr.st_ino, pyfuse3.EntryAttributes(),
                                                pyfuse3.SetattrFields(), None, CTX))
    await expect_errno(errno.EROFS, ops.setxattr(attr.st_ino, b"user.x", b"1", CTX))
    await expect_errno(errno.EISDIR, ops.open(TOY, os.O_RDONLY, CTX))
    await expect_errno(errno.ENOTDIR, ops.opendir(attr.st_ino, CTX))
    await expect_errno(errno.EINVAL, ops.readlink(attr.st_ino, CTX))
    await expect_errno(pyfuse3.ENOATTR, ops.getxattr(attr.st_ino, b"user.dosfs.hash", CTX))
    assert await ops.listxattr(attr.st_ino, CTX) == []
    # the real namespaces did not notice
    assert (await ops.lookup(ROOT_INODE, b"by-hash", CTX)).st_mode & 0o777 == 0o555


@trio_test
async def test_a_number_of_no_namespace_of_this_mount(ops: Operations) -> None:
    """A nodes/ folder's number on a mount without --aiida-db (never handed out): served by
    the table's stand-in, as before the table: EIO for its attributes, refusals for the rest."""
    ino = (1 << 62) | 7
    await expect_errno(errno.EIO, ops.getattr(ino, CTX))
    await expect_errno(errno.EIO, ops.lookup(ino, b".", CTX))
    await expect_errno(errno.ENOTDIR, ops.lookup(ino, b"x", CTX))
    await expect_errno(errno.EISDIR, ops.open(ino, os.O_RDONLY, CTX))
    await expect_errno(errno.ENOTDIR, ops.opendir(ino, CTX))
    await expect_errno(errno.EROFS, ops.mkdir(ino, b"d", 0o755, CTX))
