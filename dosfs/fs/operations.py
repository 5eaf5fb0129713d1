"""The pyfuse3 ``Operations`` of a dosfs mount: a thin dispatcher over the namespaces.

An adapter only (no storage logic): every byte comes from the engine (``dosfs.Container`` or
anything with the same shape, see ``dosfs.engine``). Each handler is behind ``boundary``
(only FUSEError escapes; errno from one table), finds the inode or handle, and hands the request
to the namespace it belongs to: the root (two fixed folders), ``by-hash/`` (byhash.ByHash) or
``incoming/`` (incoming.Incoming). What runs on worker threads is decided in offload.py.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Callable, Sequence

import pyfuse3

from dosfs.engine import EngineLike
from dosfs.fs import handles as _handles
from dosfs.fs.attrs import FIXED_TIMEOUT, AttrBuilder
from dosfs.fs.byhash import XATTR_PREFIX, ByHash, cursor_id
from dosfs.fs.errors import boundary, fuse_error, never_raises
from dosfs.fs.handles import (
    HandleTable,
    HashDirHandle,
    ReadHandle,
    RootDirHandle,
    TreeDirHandle,
    WriteHandle,
)
from dosfs.fs.incoming import Incoming
from dosfs.fs.incoming_file import IncomingFile
from dosfs.fs.inodes import (
    BY_HASH_INODE,
    BY_HASH_NAME,
    INCOMING_INODE,
    INCOMING_NAME,
    ROOT_INODE,
    FixedDir,
    InodeTable,
    Node,
    ObjectNode,
    PackedRef,
    ShortLink,
)
from dosfs.fs.limits import DEFAULT_MAX_INODES, DEFAULT_MAX_NAMES, NAME_MAX
from dosfs.fs.nodes import NODES_NAME, Nodes, NodesDirHandle
from dosfs.fs.offload import Offload
from dosfs.fs.stats import Stats
from dosfs.fs.tree import DirNode, LinkNode, TreeNode, check_name
from dosfs.views.rows import Source

log = logging.getLogger("dosfs.fs")

#: statvfs of the backing filesystem is cached this long (df, and cp's free-space probes).
STATFS_TTL = 1.0
#: the root's xattr with the mount's live statistics (JSON; `dosfs stats MOUNTPOINT`)
STATS_XATTR = b"user.dosfs.stats"

__all__ = ["Operations", "cursor_id"]


def _write_only(flags: int) -> bool:
    """Whether an incoming/ file handle bypasses the page cache (``direct_io``).

    Why: the kernel otherwise copies every write into the FUSE file's own page cache (a second
    1 GiB of pages for a 1 GiB cp, allocated in the writer's time and freed when the name turns
    into a link), which the daemon never reads back. Only for write-only handles: those cannot
    be mmap'ed, the one thing direct_io takes away; a read-write handle keeps the page cache.
    """
    return (flags & os.O_ACCMODE) == os.O_WRONLY


class Operations(pyfuse3.Operations):
    """by-hash/ (read-only objects) and incoming/ (a staging tree) over one engine."""

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
        self.root = FixedDir(ROOT_INODE, b"")
        self.by_hash_dir = FixedDir(BY_HASH_INODE, BY_HASH_NAME)
        self.by_hash = ByHash(
            engine, self.table, self.attrs, self.offload, verify=verify,
            invalidate_entry=invalidate_entry, stats=self.stats,
        )
        self.inc = Incoming(
            engine, self.table, self.attrs, self.offload, read_only=read_only,
            max_names=max_names, stats=self.stats,
        )
        self.incoming = self.inc.root
        self.incoming.ino = INCOMING_INODE
        self.incoming.name = INCOMING_NAME
        for node in (self.root, self.by_hash_dir, self.incoming):
            self.table.add_fixed(node)
        self.tree = self.inc.tree
        #: nodes/ (an AiiDA profile's files by node) when a database is given
        self.views = None if views is None else Nodes(
            views, self.by_hash, self.table, self.attrs, self.offload)
        self.files: HandleTable[ReadHandle | WriteHandle] = HandleTable()
        self.dirs: HandleTable[HashDirHandle | TreeDirHandle | RootDirHandle | NodesDirHandle] = (
            HandleTable())
        self._statfs: tuple[float, pyfuse3.StatvfsData] | None = None

    # ------------------------------------------------------------------ attributes

    def _attrs(self, node: Node, entry_timeout: float | None = None) -> pyfuse3.EntryAttributes:
        if isinstance(node, ObjectNode):
            return self.by_hash.node_attrs(node)
        if isinstance(node, PackedRef):
            return self.by_hash.packed_attrs(node)
        if isinstance(node, ShortLink):
            return self.by_hash.short_attrs(node)
        if self.views is not None and self.views.owns(node):
            return self.views.attrs_of(node)
        if isinstance(node, FixedDir):
            if node is self.root:
                return self.attrs.directory(node.ino, 0o555, 4, FIXED_TIMEOUT)
            return self.attrs.directory(
                node.ino, 0o555 if self.listing else 0o111, 2, FIXED_TIMEOUT
            )
        if not isinstance(node, TreeNode):  # pragma: no cover - every node is one of these
            raise fuse_error(errno.EIO)
        return self.inc.node_attrs(node, entry_timeout)

    def _dir(self, ino: int) -> DirNode:
        return self.inc.writable_dir(self.table.get(ino))

    # ------------------------------------------------------------------ names and attributes

    @boundary
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        if parent_inode == BY_HASH_INODE and name != b"." and name != b"..":
            if self.by_hash.index_may_block:  # an s3 mount: the index is read on demand
                return await self.by_hash.lookup_waiting(name)
            return self.by_hash.lookup(name)  # the hot path: one index round trip
        parent = self.table.get(parent_inode)
        views = self.views
        if views is not None and name != b"." and views.owns(parent) and not (
                name == b".." and parent is views.nodes_dir):
            return await views.lookup(parent, name)
        node: Node | None
        if name == b".":
            node = parent
        elif name == b"..":
            if isinstance(parent, TreeNode) and parent.parent is not None:
                node = parent.parent
            elif isinstance(parent, FixedDir):  # by-hash/, incoming/, nodes/
                node = self.root
            else:
                node = parent
        elif parent is self.root:
            node = {BY_HASH_NAME: self.by_hash_dir, INCOMING_NAME: self.incoming,
                    NODES_NAME: views.nodes_dir if views else None}.get(name)
        elif isinstance(parent, DirNode):
            node = await self.inc.child(parent, name)
        else:
            raise fuse_error(errno.ENOTDIR)
        if node is None:
            raise fuse_error(errno.ENOENT)
        if isinstance(node, ObjectNode):
            self.by_hash.remember(node)
        else:
            node.lookups += 1
        return self._attrs(node)

    @never_raises
    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for ino, count in inode_list:
            self.table.forget(ino, count)

    @boundary
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._attrs(self.table.get(inode))

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
        await self.inc.setattr(node, attr, fields, handle)
        return self._attrs(node)

    @boundary
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        node = self.table.get(inode)
        if isinstance(node, ShortLink):
            return node.target
        if not isinstance(node, LinkNode):
            raise fuse_error(errno.EINVAL)
        return node.link_target()

    @boundary
    async def access(self, inode: int, mode: int, ctx: pyfuse3.RequestContext) -> bool:
        self.table.get(inode)
        return True  # the mount always uses default_permissions: the kernel decides

    # ------------------------------------------------------------------ incoming/ names

    @boundary
    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        self._dir(parent_inode)
        check_name(name)
        raise fuse_error(errno.EPERM)  # only files, directories and symlinks live in incoming/

    @boundary
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return self._attrs(self.inc.mkdir(self._dir(parent_inode), name, mode, ctx))

    @boundary
    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return self._attrs(self.inc.symlink(self._dir(parent_inode), name, target, ctx))

    @boundary
    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        self._dir(new_parent_inode)
        check_name(new_name)
        raise fuse_error(errno.EPERM)  # no hard links: names are bookkeeping, one per node

    @boundary
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self.inc.unlink(self._dir(parent_inode), name)

    @boundary
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self.inc.rmdir(self._dir(parent_inode), name)

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
        src_dir = self._dir(parent_inode_old)
        dst_dir = self._dir(parent_inode_new)
        await self.inc.rename(src_dir, name_old, dst_dir, name_new, flags)

    # ------------------------------------------------------------------ files

    @boundary
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        handle = self.inc.create(self._dir(parent_inode), name, mode, ctx)
        fh = self.files.add(handle)
        info = pyfuse3.FileInfo(fh=fh, keep_cache=False, direct_io=_write_only(flags))
        return info, self._attrs(handle.file)

    def _object_info(self, handle: ReadHandle) -> pyfuse3.FileInfo:
        return pyfuse3.FileInfo(fh=self.files.add(handle), keep_cache=True)

    @boundary
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        node = self.table.get(inode)
        writing = (flags & os.O_ACCMODE) != os.O_RDONLY
        if isinstance(node, ObjectNode | PackedRef):
            if writing:
                raise fuse_error(errno.EROFS)
            if self.by_hash.index_may_block:
                return self._object_info(await self.by_hash.open_waiting(node))
            return self._object_info(self.by_hash.open(node))
        if isinstance(node, IncomingFile):
            opened = await self.inc.open(node, writing)
            if isinstance(opened, str):  # committed: its object (hashed by us at commit)
                return self._object_info(self.by_hash.open_committed(opened))
            fh = self.files.add(opened)
            return pyfuse3.FileInfo(fh=fh, keep_cache=False, direct_io=_write_only(flags))
        if isinstance(node, LinkNode | ShortLink):
            raise fuse_error(errno.ELOOP)
        raise fuse_error(errno.EISDIR)

    @boundary
    async def read(self, fh: int, off: int, size: int) -> bytes:
        handle = self.files.get(fh)
        if isinstance(handle, ReadHandle):
            data = await self.by_hash.read(handle, off, size)
        else:
            data = await self.inc.read(handle, off, size)
        self.stats.bytes_read += len(data)
        return data

    @boundary
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        handle = self.files.get(fh)
        if not isinstance(handle, WriteHandle):
            raise fuse_error(errno.EBADF)
        written = await self.inc.write(handle, off, buf)
        self.stats.bytes_written += written
        return written

    @boundary
    async def flush(self, fh: int) -> None:
        handle = self.files.get(fh)
        if isinstance(handle, WriteHandle):
            await self.inc.flush(handle)

    @boundary
    async def fsync(self, fh: int, datasync: bool) -> None:
        handle = self.files.get(fh)
        if isinstance(handle, WriteHandle):
            await self.inc.fsync(handle)

    @boundary
    async def release(self, fh: int) -> None:
        handle = self.files.pop(fh)
        if isinstance(handle, ReadHandle):
            self.by_hash.release(handle)
        elif isinstance(handle, WriteHandle):
            await self.inc.release(handle)

    # ------------------------------------------------------------------ directories

    @boundary
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        node = self.table.get(inode)
        if node is self.root:
            return self.dirs.add(RootDirHandle())
        if node is self.by_hash_dir:
            if not self.listing:
                raise fuse_error(errno.EACCES)
            return self.dirs.add(HashDirHandle())
        if isinstance(node, DirNode):
            return self.dirs.add(TreeDirHandle(node))
        if self.views is not None and self.views.owns(node):
            return self.dirs.add(self.views.opendir(node))
        raise fuse_error(errno.ENOTDIR)

    @boundary
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        handle = self.dirs.get(fh)
        if isinstance(handle, HashDirHandle):
            await self.by_hash.readdir(handle, start_id, token)
        elif isinstance(handle, TreeDirHandle):
            self.inc.readdir(handle, start_id, token)
        elif isinstance(handle, NodesDirHandle) and self.views is not None:
            await self.views.readdir(handle, start_id, token)
        else:
            entries: tuple[tuple[bytes, Node], ...] = (
                (BY_HASH_NAME, self.by_hash_dir),
                (INCOMING_NAME, self.incoming),
            ) + (() if self.views is None else ((NODES_NAME, self.views.nodes_dir),))
            for index in range(start_id, len(entries)):
                name, node = entries[index]
                if not _handles.readdir_reply(token, name, self._attrs(node), index + 1):
                    return
                node.lookups += 1

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
        if inode == ROOT_INODE and name == STATS_XATTR:
            return self.stats.rendered()
        node = self.table.get(inode)
        if self.views is not None and self.views.owns(node):
            key = name[len(XATTR_PREFIX) :].decode("ascii", "replace")
            return await self.views.getxattr(node, key)
        if not isinstance(node, ObjectNode | PackedRef):
            raise fuse_error(pyfuse3.ENOATTR)
        return self.by_hash.getxattr(node, name[len(XATTR_PREFIX) :].decode("ascii", "replace"))

    @boundary
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        if inode == ROOT_INODE:
            return [STATS_XATTR]
        node = self.table.get(inode)
        if self.views is not None and self.views.owns(node):
            return self.views.listxattr(node)
        if not isinstance(node, ObjectNode | PackedRef):
            return []
        return self.by_hash.listxattr(node)

    @boundary
    async def setxattr(
        self, inode: int, name: bytes, value: bytes, ctx: pyfuse3.RequestContext
    ) -> None:
        node = self.table.get(inode)
        if self.read_only or not isinstance(node, TreeNode) or node is self.incoming:
            raise fuse_error(errno.EROFS)
        raise fuse_error(errno.ENOTSUP)

    @boundary
    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        node = self.table.get(inode)
        if self.read_only or not isinstance(node, TreeNode) or node is self.incoming:
            raise fuse_error(errno.EROFS)
        raise fuse_error(pyfuse3.ENOATTR)

    # ------------------------------------------------------------------ lifecycle

    def shutdown(self) -> None:
        """After the loop ended: close readers, settle files still open (incoming.shutdown),
        stop the worker threads."""
        self.offload.close()
        if self.views is not None:
            self.views.source.close()  # the database connections of the worker threads
        writes: list[WriteHandle] = []
        for handle in self.files.values():
            try:
                if isinstance(handle, ReadHandle):
                    self.by_hash.release(handle)
                else:
                    writes.append(handle)
            except Exception as exc:  # noqa: BLE001 - best effort at shutdown
                log.warning("cleanup at unmount: %s", exc)
        try:
            self.inc.shutdown(writes)
        except Exception as exc:  # noqa: BLE001 - best effort at shutdown
            log.warning("cleanup at unmount: %s", exc)

