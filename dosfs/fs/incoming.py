"""incoming/: a writable staging tree whose finished files become links to their objects.

The `Incoming` namespace does the names (lookup, create, mkdir, symlink, rename, unlink, rmdir,
setattr) and the listing; its open files go to `IncomingHandles` (incoming_handles.py: open
to close, the commit at close), each file's states to `IncomingFile` (incoming_file.py).
"""

from __future__ import annotations

import bisect
import errno
import stat
import time
from collections.abc import Callable
from typing import Any

import pyfuse3

from dosfs.engine import EngineLike
from dosfs.fs import handles as _handles
from dosfs.fs.attrs import FIXED_TIMEOUT, INCOMING_TIMEOUT, AttrBuilder
from dosfs.fs.errors import fuse_error
from dosfs.fs.handles import ReadHandle, TreeDirHandle, WriteHandle
from dosfs.fs.incoming_file import FileState, IncomingFile
from dosfs.fs.incoming_handles import IncomingHandles, write_only
from dosfs.fs.inodes import INCOMING_INODE, INCOMING_NAME, FixedDir, InodeTable, Node, ViewNode
from dosfs.fs.namespace import Handle, NamespaceBase, Namespaces
from dosfs.fs.offload import Offload
from dosfs.fs.stats import Stats
from dosfs.fs.tree import (
    DirNode,
    IncomingTree,
    LinkNode,
    TreeNode,
    check_name,
    subtree_depth,
)


class Incoming(NamespaceBase):
    """The incoming/ namespace: names, files and their handles. A committed file opened again
    is its object, opened by ``open_object`` (by-hash/'s)."""

    def __init__(
        self,
        spaces: Namespaces,
        engine: EngineLike,
        table: InodeTable,
        attrs: AttrBuilder,
        offload: Offload,
        *,
        read_only: bool,
        max_names: int,
        open_object: Callable[[str], ReadHandle],
        stats: Stats | None = None,
    ) -> None:
        super().__init__(spaces)
        self.engine = engine
        self.table = table
        self.attrs = attrs
        self.offload = offload
        self.read_only = read_only
        self.stats = stats if stats is not None else Stats()
        self.root = DirNode(
            (0o555 if read_only else 0o755) & ~attrs.umask, attrs.uid, attrs.gid,
            is_incoming_root=True,
        )
        self.root.ino = INCOMING_INODE
        self.root.name = INCOMING_NAME
        table.add_fixed(self.root)
        self.tree = IncomingTree(table, self.root, max_names, engine.hash_length)
        self.handles = IncomingHandles(engine, table, self.tree, offload, self.stats,
                                       open_object)

    # ------------------------------------------------------------------ helpers
    def writable_dir(self, node: Node) -> DirNode:
        """The directory a create/mkdir/unlink/rename touches, or the right errno."""
        if self.read_only or isinstance(node, FixedDir | ViewNode):
            raise fuse_error(errno.EROFS)
        if not isinstance(node, DirNode):
            raise fuse_error(errno.ENOTDIR)
        if node.parent is None and not node.is_incoming_root:
            raise fuse_error(errno.ENOENT)  # a directory removed while someone was inside it
        return node

    async def lookup(self, parent: Node, name: bytes) -> pyfuse3.EntryAttributes:
        node: TreeNode | None
        if name == b".":
            return self.spaces.entry(parent)
        if name == b"..":  # incoming/ itself (and a removed folder) answers with itself
            up = parent.parent if isinstance(parent, TreeNode) else None
            return self.spaces.entry(parent if up is None else up)
        if not isinstance(parent, DirNode):
            raise fuse_error(errno.ENOTDIR)
        node = await self.child(parent, name)
        if node is None:
            raise fuse_error(errno.ENOENT)
        node.lookups += 1
        return self.node_attrs(node)

    async def child(self, parent: DirNode, name: bytes) -> TreeNode | None:
        """``parent/name``, waiting out a commit in progress (the name then is a link)."""
        node = parent.children.get(name)
        while isinstance(node, IncomingFile) and node.state is FileState.COMMITTING:
            await node.wait_committed()
            node = parent.children.get(name)
        return node

    def getattr(self, node: Node) -> pyfuse3.EntryAttributes:
        if not isinstance(node, TreeNode):  # pragma: no cover - every node here is one
            raise fuse_error(errno.EIO)
        return self.node_attrs(node)

    def readlink(self, node: Node) -> bytes:
        if not isinstance(node, LinkNode):
            raise fuse_error(errno.EINVAL)
        return node.link_target()

    def node_attrs(
        self, node: TreeNode, entry_timeout: float | None = None
    ) -> pyfuse3.EntryAttributes:
        timeout = FIXED_TIMEOUT if node is self.root else INCOMING_TIMEOUT
        a = self.attrs.base(node.ino, node.mode, timeout)
        a.st_uid, a.st_gid = node.uid, node.gid
        a.st_atime_ns, a.st_mtime_ns, a.st_ctime_ns = node.atime_ns, node.mtime_ns, node.ctime_ns
        if isinstance(node, IncomingFile):
            size = node.size
            a.st_size = size
            a.st_blocks = (size + 511) // 512
        elif isinstance(node, LinkNode):
            a.st_size = len(node.link_target())
        else:
            a.st_size = 0
        if entry_timeout is not None:
            a.entry_timeout = entry_timeout
        return a

    def _new_name(self, parent: DirNode, name: bytes) -> None:
        check_name(name)
        if name in parent.children:
            raise fuse_error(errno.EEXIST)
        self.tree.make_room()

    # ------------------------------------------------------------------ names
    async def mkdir(self, parent: Node, name: bytes, mode: int,
                    ctx: Any) -> pyfuse3.EntryAttributes:
        folder = self.writable_dir(parent)
        self._new_name(folder, name)
        self.tree.check_depth(folder, 0)
        node = DirNode(mode & ~ctx.umask, ctx.uid, ctx.gid)
        self.table.register(node)
        self.tree.attach(folder, name, node)
        node.lookups += 1
        return self.node_attrs(node)

    async def symlink(self, parent: Node, name: bytes, target: bytes,
                      ctx: Any) -> pyfuse3.EntryAttributes:
        folder = self.writable_dir(parent)
        self._new_name(folder, name)
        node = LinkNode(ctx.uid, ctx.gid, target=target)
        self.table.register(node)
        self.tree.attach(folder, name, node)
        node.lookups += 1
        return self.node_attrs(node)

    async def mknod(self, parent: Node, name: bytes, mode: int, rdev: int,
                    ctx: Any) -> pyfuse3.EntryAttributes:
        self.writable_dir(parent)
        check_name(name)
        raise fuse_error(errno.EPERM)  # only files, directories and symlinks live here

    async def link(self, inode: int, parent: Node, name: bytes,
                   ctx: Any) -> pyfuse3.EntryAttributes:
        self.writable_dir(parent)
        check_name(name)
        raise fuse_error(errno.EPERM)  # no hard links: names are bookkeeping, one per node

    async def unlink(self, parent: Node, name: bytes) -> None:
        node = await self.child(self.writable_dir(parent), name)
        if node is None:
            raise fuse_error(errno.ENOENT)
        if isinstance(node, DirNode):
            raise fuse_error(errno.EISDIR)
        self.tree.detach(node)  # a file still open is discarded at its last close

    async def rmdir(self, parent: Node, name: bytes) -> None:
        node = self.writable_dir(parent).children.get(name)
        if node is None:
            raise fuse_error(errno.ENOENT)
        if not isinstance(node, DirNode):
            raise fuse_error(errno.ENOTDIR)
        if node.children:
            raise fuse_error(errno.ENOTEMPTY)
        self.tree.detach(node)

    async def rename(
        self, parent: Node, name_old: bytes, new_parent: int, name_new: bytes, flags: int
    ) -> None:
        src_dir = self.writable_dir(parent)
        dst_dir = self.writable_dir(self.table.get(new_parent))  # of whatever namespace
        check_name(name_new)
        if flags & ~(pyfuse3.RENAME_EXCHANGE | pyfuse3.RENAME_NOREPLACE):
            raise fuse_error(errno.EINVAL)
        node = await self.child(src_dir, name_old)
        if node is None:
            raise fuse_error(errno.ENOENT)
        existing = await self.child(dst_dir, name_new)
        if isinstance(node, DirNode) and self.tree.is_ancestor(node, dst_dir):
            raise fuse_error(errno.EINVAL)
        if isinstance(node, DirNode) and dst_dir is not src_dir:
            self.tree.check_depth(dst_dir, subtree_depth(node))
        if flags & pyfuse3.RENAME_EXCHANGE:
            if existing is None:
                raise fuse_error(errno.ENOENT)
            if isinstance(existing, DirNode) and self.tree.is_ancestor(existing, src_dir):
                raise fuse_error(errno.EINVAL)
            if isinstance(existing, DirNode) and dst_dir is not src_dir:
                self.tree.check_depth(src_dir, subtree_depth(existing))
            del src_dir.children[name_old]
            del dst_dir.children[name_new]
            self.tree.move(node, dst_dir, name_new)
            self.tree.move(existing, src_dir, name_old)
            return
        if existing is node:
            return
        if existing is not None:
            if flags & pyfuse3.RENAME_NOREPLACE:
                raise fuse_error(errno.EEXIST)
            if isinstance(node, DirNode):
                if not isinstance(existing, DirNode):
                    raise fuse_error(errno.ENOTDIR)
                if existing.children:
                    raise fuse_error(errno.ENOTEMPTY)
            elif isinstance(existing, DirNode):
                raise fuse_error(errno.EISDIR)
            self.tree.detach(existing)
        self.tree.move(node, dst_dir, name_new)

    async def setattr(
        self, node: Node, attr: pyfuse3.EntryAttributes, fields: Any, handle: Handle | None
    ) -> None:
        if self.read_only or not isinstance(node, TreeNode):
            raise fuse_error(errno.EROFS)
        if fields.update_size:
            if isinstance(node, DirNode):
                raise fuse_error(errno.EISDIR)
            if not isinstance(node, IncomingFile):
                raise fuse_error(errno.EINVAL)
            if (
                node.state is FileState.COMMITTED
                and isinstance(handle, WriteHandle)
                and handle.writable
                and handle.file is node
            ):
                await self.handles.reseed(node)  # ftruncate on a descriptor still open after close
            if node.state is not FileState.WRITING:
                raise fuse_error(errno.EROFS)
            await node.truncate(attr.st_size)
        if isinstance(node, IncomingFile) and node.state not in (
            FileState.WRITING,
            FileState.COMMITTING,
        ):
            raise fuse_error(errno.EROFS)
        if fields.update_mode:
            node.mode = stat.S_IFMT(node.mode) | (attr.st_mode & 0o7777)
        if fields.update_uid:
            node.uid = attr.st_uid
        if fields.update_gid:
            node.gid = attr.st_gid
        if fields.update_atime:
            node.atime_ns = attr.st_atime_ns
        if fields.update_mtime:
            node.mtime_ns = attr.st_mtime_ns
        node.ctime_ns = time.time_ns()

    def setxattr(self, node: Node, name: bytes, value: bytes) -> None:
        if self.read_only or node is self.root:
            raise fuse_error(errno.EROFS)
        raise fuse_error(errno.ENOTSUP)

    def removexattr(self, node: Node, name: bytes) -> None:
        if self.read_only or node is self.root:
            raise fuse_error(errno.EROFS)
        raise fuse_error(pyfuse3.ENOATTR)

    # ------------------------------------------------------------------ files
    async def create(
        self, parent: Node, name: bytes, mode: int, flags: int, ctx: Any
    ) -> tuple[WriteHandle, pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        folder = self.writable_dir(parent)
        self._new_name(folder, name)
        staged = self.engine.new_staged_object()
        file = IncomingFile(mode & ~ctx.umask, ctx.uid, ctx.gid, staged)
        self.table.register(file)
        self.tree.attach(folder, name, file)
        file.lookups += 1
        info = pyfuse3.FileInfo(keep_cache=False, direct_io=write_only(flags))
        return self.handles.handle(file, writable=True), info, self.node_attrs(file)

    async def open(
        self, node: Node, flags: int
    ) -> tuple[WriteHandle | ReadHandle, pyfuse3.FileInfo]:
        if not isinstance(node, IncomingFile):
            raise fuse_error(errno.ELOOP if isinstance(node, LinkNode) else errno.EISDIR)
        return await self.handles.open(node, flags)

    async def read(self, handle: WriteHandle, off: int, size: int) -> bytes:
        return await self.handles.read(handle, off, size)

    async def write(self, handle: WriteHandle, off: int, buf: bytes) -> int:
        return await self.handles.write(handle, off, buf)

    async def flush(self, handle: WriteHandle) -> None:
        await self.handles.flush(handle)

    async def fsync(self, handle: WriteHandle) -> None:
        await self.handles.fsync(handle)

    async def release(self, handle: WriteHandle) -> None:
        await self.handles.release(handle)

    # ------------------------------------------------------------------ listing
    def opendir(self, node: Node) -> TreeDirHandle:
        if not isinstance(node, DirNode):
            raise fuse_error(errno.ENOTDIR)
        return TreeDirHandle(node)

    async def readdir(self, handle: TreeDirHandle, start_id: int, token: Any) -> None:
        directory = handle.dir
        if start_id == 0 or handle.snapshot is None:
            handle.snapshot = [(n.seq, name, n) for name, n in directory.children.items()]
        snapshot = handle.snapshot
        index = bisect.bisect_right(snapshot, start_id, key=lambda entry: entry[0])
        for seq, name, node in snapshot[index:]:
            if node.parent is not directory or node.name != name:
                continue  # renamed or removed since the snapshot
            attrs = self.node_attrs(node, INCOMING_TIMEOUT)
            if not _handles.readdir_reply(token, name, attrs, seq):
                return
            node.lookups += 1

    # ------------------------------------------------------------------ lifecycle
    def shutdown(self, handles: list[WriteHandle]) -> None:
        self.handles.shutdown(handles)
