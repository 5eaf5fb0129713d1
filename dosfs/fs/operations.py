"""The pyfuse3 ``Operations`` of a dosfs mount: a table of namespaces, and nothing else.

An adapter only (no storage logic): every byte comes from the engine (``dosfs.Container`` or
anything with the same shape, see ``dosfs.engine``). Each handler is behind ``boundary``
(only FUSEError escapes; errno from one table), finds the inode or handle, and calls the
namespace that serves it (``node.space``, ``handle.space``: an index into the table,
namespace.py): the root (root.Root), ``by-hash/`` (byhash.ByHash), ``incoming/``
(incoming.Incoming) and, with a database, ``nodes/`` (nodes.Nodes). No handler looks at the
type of a node or handle: what differs between namespaces is theirs. What runs on worker
threads is decided in offload.py.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import pyfuse3

from dosfs.engine import EngineLike
from dosfs.fs.attrs import AttrBuilder
from dosfs.fs.byhash import XATTR_PREFIX, ByHash
from dosfs.fs.byhash_listing import cursor_id
from dosfs.fs.errors import boundary, fuse_error, never_raises
from dosfs.fs.handles import HandleTable
from dosfs.fs.incoming import Incoming
from dosfs.fs.inodes import (
    BY_HASH_INODE,
    BY_HASH_NAME,
    INCOMING_INODE,
    INCOMING_NAME,
    NODES_INODE,
    ROOT_INODE,
    FixedDir,
    InodeTable,
    Node,
)
from dosfs.fs.limits import DEFAULT_MAX_INODES, DEFAULT_MAX_NAMES, NAME_MAX
from dosfs.fs.namespace import Handle, Namespace, Namespaces
from dosfs.fs.nodes import NODES_NAME, Nodes
from dosfs.fs.offload import Offload
from dosfs.fs.root import Root
from dosfs.fs.stats import Stats
from dosfs.views.rows import Source

#: statvfs of the backing filesystem is cached this long (df, and cp's free-space probes).
STATFS_TTL = 1.0

__all__ = ["Operations", "cursor_id"]


class Operations(pyfuse3.Operations):
    """by-hash/ (read-only objects), incoming/ (a staging tree) and nodes/ (an AiiDA
    profile's files, with ``views``) over one engine."""

    supports_dot_lookup = True
    enable_writeback_cache = False  # the kernel would read write-only files and reorder writes
    enable_acl = False

    def __init__(
        self,
        engine: EngineLike,
        *,
        read_only: bool = False,
        listing: bool = True,
        verify: bool = True,
        max_names: int = DEFAULT_MAX_NAMES,
        max_inodes: int = DEFAULT_MAX_INODES,
        workers: int = 4,
        uid: int | None = None,
        gid: int | None = None,
        umask: int = 0,
        invalidate_entry: Callable[[int, bytes], None] | None = None,
        thread_init: Callable[[], None] | None = None,
        views: Source | None = None,
        io_timeout: float | None = None,
    ) -> None:
        super().__init__()
        self.engine = engine
        self.read_only = read_only
        self.listing = listing
        self.offload = Offload(workers, thread_init, timeout=io_timeout)
        self.stats = Stats()
        self.attrs = AttrBuilder(
            os.getuid() if uid is None else uid, os.getgid() if gid is None else gid,
            time.time_ns(), umask,
        )
        self.table = InodeTable(max_inodes)
        self.root = FixedDir(ROOT_INODE, b"", ROOT_INODE)
        self.table.add_fixed(self.root)
        self.spaces = Namespaces(self.root)
        self.by_hash = ByHash(
            self.spaces, engine, self.table, self.attrs, self.offload, verify=verify,
            listing=listing, read_only=read_only, invalidate_entry=invalidate_entry,
            stats=self.stats,
        )
        self.inc = Incoming(
            self.spaces, engine, self.table, self.attrs, self.offload, read_only=read_only,
            max_names=max_names, open_object=self.by_hash.open_committed, stats=self.stats,
        )
        self.incoming = self.inc.root
        #: nodes/ (an AiiDA profile's files by node) when a database is given
        self.views = None if views is None else Nodes(
            self.spaces, views, self.by_hash, self.table, self.attrs, self.offload)
        entries: tuple[tuple[bytes, Node], ...] = (
            (BY_HASH_NAME, self.by_hash.dir), (INCOMING_NAME, self.incoming),
        ) + (() if self.views is None else ((NODES_NAME, self.views.nodes_dir),))
        self.spaces.add(ROOT_INODE, Root(self.spaces, self.attrs, self.stats, entries))
        self.spaces.add(BY_HASH_INODE, self.by_hash)
        self.spaces.add(INCOMING_INODE, self.inc)
        if self.views is not None:
            self.spaces.add(NODES_INODE, self.views)
        #: namespace id -> namespace (the list itself: one index per request)
        self._spaces: list[Namespace[Any, Any]] = self.spaces.table
        self.files: HandleTable[Handle] = HandleTable()
        self.dirs: HandleTable[Handle] = HandleTable()
        self._statfs: tuple[float, pyfuse3.StatvfsData] | None = None

    # ------------------------------------------------------------------ names and attributes

    @boundary
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        parent = self.table.get(parent_inode)
        return await self._spaces[parent.space].lookup(parent, name)

    @never_raises
    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for ino, count in inode_list:
            self.table.forget(ino, count)

    @boundary
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = self.table.get(inode)
        return self._spaces[node.space].getattr(node)

    @boundary
    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        node = self.table.get(inode)
        handle = self.files.get(fh) if fh is not None else None
        space = self._spaces[node.space]
        await space.setattr(node, attr, fields, handle)
        return space.getattr(node)

    @boundary
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        node = self.table.get(inode)
        return self._spaces[node.space].readlink(node)

    @boundary
    async def access(self, inode: int, mode: int, ctx: pyfuse3.RequestContext) -> bool:
        self.table.get(inode)
        return True  # the mount always uses default_permissions: the kernel decides

    # ------------------------------------------------------------------ names changed

    @boundary
    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        parent = self.table.get(parent_inode)
        return await self._spaces[parent.space].mknod(parent, name, mode, rdev, ctx)

    @boundary
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        parent = self.table.get(parent_inode)
        return await self._spaces[parent.space].mkdir(parent, name, mode, ctx)

    @boundary
    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        parent = self.table.get(parent_inode)
        return await self._spaces[parent.space].symlink(parent, name, target, ctx)

    @boundary
    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        parent = self.table.get(new_parent_inode)
        return await self._spaces[parent.space].link(inode, parent, new_name, ctx)

    @boundary
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        parent = self.table.get(parent_inode)
        await self._spaces[parent.space].unlink(parent, name)

    @boundary
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        parent = self.table.get(parent_inode)
        await self._spaces[parent.space].rmdir(parent, name)

    @boundary
    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        parent = self.table.get(parent_inode_old)
        await self._spaces[parent.space].rename(
            parent, name_old, parent_inode_new, name_new, flags)

    # ------------------------------------------------------------------ files

    @boundary
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        parent = self.table.get(parent_inode)
        handle, info, attrs = await self._spaces[parent.space].create(
            parent, name, mode, flags, ctx)
        info.fh = self.files.add(handle)
        return info, attrs

    @boundary
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        node = self.table.get(inode)
        handle, info = await self._spaces[node.space].open(node, flags)
        info.fh = self.files.add(handle)
        return info

    @boundary
    async def read(self, fh: int, off: int, size: int) -> bytes:
        handle = self.files.get(fh)
        data: bytes = await self._spaces[handle.space].read(handle, off, size)
        self.stats.bytes_read += len(data)
        return data

    @boundary
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        handle = self.files.get(fh)
        written: int = await self._spaces[handle.space].write(handle, off, buf)
        self.stats.bytes_written += written
        return written

    @boundary
    async def flush(self, fh: int) -> None:
        handle = self.files.get(fh)
        await self._spaces[handle.space].flush(handle)

    @boundary
    async def fsync(self, fh: int, datasync: bool) -> None:
        handle = self.files.get(fh)
        await self._spaces[handle.space].fsync(handle)

    @boundary
    async def release(self, fh: int) -> None:
        handle = self.files.pop(fh)
        if handle is not None:
            await self._spaces[handle.space].release(handle)

    # ------------------------------------------------------------------ directories

    @boundary
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        node = self.table.get(inode)
        return self.dirs.add(self._spaces[node.space].opendir(node))

    @boundary
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        handle = self.dirs.get(fh)
        await self._spaces[handle.space].readdir(handle, start_id, token)

    @boundary
    async def releasedir(self, fh: int) -> None:
        self.dirs.pop(fh)

    @boundary
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        self.dirs.get(fh)  # names in incoming/ are not persistent; objects are durable at commit

    # ------------------------------------------------------------------ filesystem-wide

    @boundary
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        now = time.monotonic()
        if self._statfs is not None and now - self._statfs[0] < STATFS_TTL:
            return self._statfs[1]
        st = os.statvfs(self.engine.folder)
        data = pyfuse3.StatvfsData()
        data.f_bsize = st.f_bsize
        data.f_frsize = st.f_frsize
        data.f_blocks = st.f_blocks
        data.f_bfree = st.f_bfree
        data.f_bavail = st.f_bavail
        data.f_files = st.f_files
        data.f_ffree = st.f_ffree
        data.f_favail = st.f_favail
        data.f_namemax = NAME_MAX
        self._statfs = (now, data)
        return data

    # ------------------------------------------------------------------ xattrs

    @boundary
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        if not name.startswith(XATTR_PREFIX):
            # No security labels, ACLs or trusted names here: "not supported" (as on a
            # filesystem without them), not "no such attribute". The difference is measurable:
            # `ls -l` probes security.selinux and system.posix_acl_access on every entry and
            # stops, for the whole device, at the first ENOTSUP (2 requests per listing instead
            # of 2 per entry).
            if not name.startswith(b"user."):
                raise fuse_error(errno.EOPNOTSUPP)
            raise fuse_error(pyfuse3.ENOATTR)
        node = self.table.get(inode)
        key = name[len(XATTR_PREFIX) :].decode("ascii", "replace")
        return await self._spaces[node.space].getxattr(node, key)

    @boundary
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        node = self.table.get(inode)
        return self._spaces[node.space].listxattr(node)

    @boundary
    async def setxattr(
        self, inode: int, name: bytes, value: bytes, ctx: pyfuse3.RequestContext
    ) -> None:
        node = self.table.get(inode)
        self._spaces[node.space].setxattr(node, name, value)

    @boundary
    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        node = self.table.get(inode)
        self._spaces[node.space].removexattr(node, name)

    # ------------------------------------------------------------------ lifecycle

    def shutdown(self) -> None:
        """After the loop ended: stop the worker threads, then each namespace settles its
        files still open and closes what it holds (incoming.shutdown: commit or discard)."""
        self.offload.close()
        self.spaces.shutdown(self.files.values())
