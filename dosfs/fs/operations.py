"""The pyfuse3 ``Operations`` of a dosfs mount: inode and handle numbers in, attributes out.

An adapter only (no storage logic): every byte comes from the engine (``dosfs.Container`` or
anything with the same shape, see ``dosfs.fs.engine``). Rules this file follows:

* Every handler is behind ``boundary`` (only FUSEError escapes; errno from one table).
* One OS thread runs all handlers, so anything slow is awaited in a worker thread under one
  ``CapacityLimiter``: decompression, fsync, commit (hashing when writes were not sequential,
  rename, directory fsync), the by-hash listing (SQLite pages + shard listings + one meta each).
  Cheap calls stay inline because a thread hop costs more than they do: an uncompressed
  ``pread`` (page cache), an object lookup, staged ``pwrite`` with on-the-fly sha256.
* Objects are immutable: long entry/attr timeouts and ``keep_cache``; a miss is never cached
  (ENOENT is raised, not returned as a negative entry), so new objects appear at once.
* incoming/ names change under the kernel's feet (a file becomes a link at close), so they get
  zero timeouts.
"""

from __future__ import annotations

import bisect
import errno
import logging
import os
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pyfuse3
import trio

from dosfs.container.errors import NotExistent
from dosfs.fs.engine import EngineLike, meta_get
from dosfs.fs.errors import boundary, errno_for, fuse_error, never_raises
from dosfs.fs.handles import (
    HandleTable,
    HashDirHandle,
    ReadHandle,
    RootDirHandle,
    TreeDirHandle,
    WriteHandle,
)
from dosfs.fs.memory import Trimmer
from dosfs.fs.nodes import (
    BY_HASH_INODE,
    BY_HASH_NAME,
    DEFAULT_MAX_INODES,
    DEFAULT_MAX_NAMES,
    INCOMING_INODE,
    INCOMING_NAME,
    ROOT_INODE,
    DirNode,
    FileNode,
    FixedDir,
    IncomingTree,
    InodeTable,
    LinkNode,
    Node,
    ObjectNode,
    TreeNode,
)
from dosfs.fs.workers import WorkerPool
from dosfs.fs.writebehind import START_AFTER, WriteBehind

log = logging.getLogger("dosfs.fs")

#: Entry and attribute timeout of by-hash objects: content is immutable.
OBJECT_TIMEOUT = 24 * 3600.0
#: The root, by-hash/ and incoming/ themselves never change type or place.
FIXED_TIMEOUT = 3600.0
#: incoming/ entries: a file turns into a link at close, names come and go.
INCOMING_TIMEOUT = 0.0
#: Closing a compressed reader of at least this size returns freed heap memory to the OS.
TRIM_AFTER = 8 << 20
#: Reported block size: cp and friends size their buffers from it (1 MiB writes measured faster).
BLOCK_SIZE = 1 << 20
#: How many (hashkey, size) a by-hash listing fetches per worker-thread round trip.
LISTING_BATCH = 256

#: statvfs of the backing filesystem is cached this long (df, and cp's free-space probes).
STATFS_TTL = 1.0
#: xattr names served for by-hash objects (``user.dosfs.<key>``).
XATTR_PREFIX = b"user.dosfs."
XATTR_ALWAYS = ("type", "size")
XATTR_PACKED = ("pack_id", "pack_offset", "pack_length", "compressed")

# Indirection so adapter tests can call readdir without a kernel token.
readdir_reply = pyfuse3.readdir_reply


def cursor_id(hashkey: str) -> int:
    """Readdir cursor of a by-hash entry: 16 + its first 60 bits, ordered like the hashes."""
    return 16 + int(hashkey[:15], 16)


def _meta_type(meta: Any) -> str:
    kind = meta_get(meta, "type", "missing")
    return str(getattr(kind, "value", kind))


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
        max_names: int = DEFAULT_MAX_NAMES,
        max_inodes: int = DEFAULT_MAX_INODES,
        workers: int = 4,
        uid: int | None = None,
        gid: int | None = None,
        invalidate_entry: Callable[[int, bytes], None] | None = None,
        thread_init: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self.engine = engine
        self.read_only = read_only
        self.listing = listing
        self.uid = os.getuid() if uid is None else uid
        self.gid = os.getgid() if gid is None else gid
        self.pool = WorkerPool(workers, thread_init)
        self.start_ns = time.time_ns()
        self.table = InodeTable(max_inodes)
        #: asks the kernel to drop a directory entry (pyfuse3.invalidate_entry_async in a mount;
        #: None in adapter tests). Used to keep the by-hash inodes bounded.
        self.invalidate_entry = invalidate_entry
        self.root = FixedDir(ROOT_INODE, b"")
        self.by_hash = FixedDir(BY_HASH_INODE, BY_HASH_NAME)
        incoming_mode = 0o555 if read_only else 0o755
        self.incoming = DirNode(incoming_mode, self.uid, self.gid, is_incoming_root=True)
        self.incoming.ino = INCOMING_INODE
        self.incoming.name = INCOMING_NAME
        for node in (self.root, self.by_hash, self.incoming):
            self.table.add_fixed(node)
        self.tree = IncomingTree(self.table, self.incoming, max_names)
        self.files: HandleTable[ReadHandle | WriteHandle] = HandleTable()
        self.dirs: HandleTable[HashDirHandle | TreeDirHandle | RootDirHandle] = HandleTable()
        self._statfs: tuple[float, pyfuse3.StatvfsData] | None = None
        self.trimmer = Trimmer()

    # ------------------------------------------------------------------ helpers

    async def _in_thread(self, fn: Any, *args: Any) -> Any:
        return await self.pool.run(fn, *args)

    def _base_attrs(self, ino: int, mode: int, timeout: float) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = ino
        a.st_mode = mode
        a.st_nlink = 1
        a.st_uid = self.uid
        a.st_gid = self.gid
        a.st_blksize = BLOCK_SIZE
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = self.start_ns
        a.entry_timeout = timeout
        a.attr_timeout = timeout
        return a

    def _object_attrs(self, node: ObjectNode, entry_timeout: float) -> pyfuse3.EntryAttributes:
        a = self._base_attrs(node.ino, stat.S_IFREG | 0o444, OBJECT_TIMEOUT)
        a.entry_timeout = entry_timeout
        a.st_size = node.size
        a.st_blocks = (node.size + 511) // 512
        return a

    def _untracked_attrs(self, size: int) -> pyfuse3.EntryAttributes:
        a = self._base_attrs(self.table.spare_number(), stat.S_IFREG | 0o444, 0.0)
        a.st_size = size
        a.st_blocks = (size + 511) // 512
        return a

    def _attrs(self, node: Node, entry_timeout: float | None = None) -> pyfuse3.EntryAttributes:
        if isinstance(node, ObjectNode):
            timeout = OBJECT_TIMEOUT if entry_timeout is None else entry_timeout
            return self._object_attrs(node, timeout)
        if isinstance(node, FixedDir):
            if node is self.root:
                a = self._base_attrs(node.ino, stat.S_IFDIR | 0o555, FIXED_TIMEOUT)
                a.st_nlink = 4
            else:
                mode = 0o555 if self.listing else 0o111
                a = self._base_attrs(node.ino, stat.S_IFDIR | mode, FIXED_TIMEOUT)
                a.st_nlink = 2
            return a
        assert isinstance(node, TreeNode)
        timeout = FIXED_TIMEOUT if node is self.incoming else INCOMING_TIMEOUT
        a = self._base_attrs(node.ino, node.mode, timeout)
        a.st_uid, a.st_gid = node.uid, node.gid
        a.st_atime_ns, a.st_mtime_ns, a.st_ctime_ns = node.atime_ns, node.mtime_ns, node.ctime_ns
        if isinstance(node, FileNode):
            size = node.final_size if node.state != "writing" else self._file_size(node)
            a.st_size = size
            a.st_blocks = (size + 511) // 512
        elif isinstance(node, LinkNode):
            a.st_size = len(node.link_target())
        elif isinstance(node, DirNode):
            a.st_size = 0
        if entry_timeout is not None:
            a.entry_timeout = entry_timeout
        return a

    @staticmethod
    def _file_size(node: FileNode) -> int:
        """Size of a file being written, counting writes still queued behind."""
        size: int = node.staged.size  # type: ignore[attr-defined]
        behind = node.behind
        if isinstance(behind, WriteBehind):
            size = max(size, behind.end)
        return size

    @staticmethod
    async def _settle(node: FileNode) -> None:
        """Wait for queued writes, so the staged object is what the writer wrote."""
        behind = node.behind
        if isinstance(behind, WriteBehind):
            await behind.drain()
            if behind.error is not None and not node.error:
                node.error = errno_for(behind.error)[0]

    def _writable_dir(self, ino: int) -> DirNode:
        """The incoming/ directory that a create/mkdir/unlink/rename touches, or the right errno."""
        node = self.table.get(ino)
        if self.read_only or isinstance(node, FixedDir):
            raise fuse_error(errno.EROFS)
        if not isinstance(node, DirNode):
            raise fuse_error(errno.ENOTDIR)
        if node.parent is None and not node.is_incoming_root:
            raise fuse_error(errno.ENOENT)  # a directory removed while someone was inside it
        return node

    async def _child(self, parent: DirNode, name: bytes) -> TreeNode | None:
        """``parent/name``, waiting out a commit in progress (the name then is a link)."""
        node = parent.children.get(name)
        while isinstance(node, FileNode) and node.state == "committing" and node.done is not None:
            await node.done.wait()  # type: ignore[attr-defined]
            node = parent.children.get(name)
        return node

    def path_of(self, node: TreeNode) -> str:
        """incoming/... path of a node, for log messages."""
        parts: list[bytes] = []
        current: TreeNode | None = node
        while current is not None:
            parts.append(current.name)
            current = current.parent
        return os.fsdecode(b"/".join(reversed(parts)))

    def _remember_object(self, node: ObjectNode) -> None:
        """One more kernel reference to ``node``; past the bound, old entries are invalidated
        in the kernel so that it forgets them (memory stays flat for any listing size)."""
        stale = self.table.remember_object(node)
        if stale and self.invalidate_entry is not None:
            for old in stale:
                self.invalidate_entry(BY_HASH_INODE, old.hashkey.encode())

    def _lookup_object(self, name: bytes) -> ObjectNode:
        try:
            hashkey = name.decode("ascii")
        except UnicodeDecodeError:
            raise fuse_error(errno.ENOENT) from None
        node = self.table.find_object(hashkey)
        if node is not None:
            return node  # known to the kernel already: immutable, no engine call needed
        if not self.engine.is_valid_hashkey(hashkey):
            raise fuse_error(errno.ENOENT)
        meta = self.engine.get_object_meta(hashkey)
        if _meta_type(meta) == "missing":
            raise fuse_error(errno.ENOENT)
        return self.table.object_node(hashkey, int(meta_get(meta, "size")))

    # ------------------------------------------------------------------ names and attributes

    @boundary
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        parent = self.table.get(parent_inode)
        node: Node | None
        if name == b".":
            node = parent
        elif name == b"..":
            if isinstance(parent, TreeNode) and parent.parent is not None:
                node = parent.parent
            elif parent is self.by_hash or parent is self.incoming:
                node = self.root
            else:
                node = parent
        elif parent is self.root:
            node = {BY_HASH_NAME: self.by_hash, INCOMING_NAME: self.incoming}.get(name)
        elif parent is self.by_hash:
            node = self._lookup_object(name)
        elif isinstance(parent, DirNode):
            node = await self._child(parent, name)
        else:
            raise fuse_error(errno.ENOTDIR)
        if node is None:
            raise fuse_error(errno.ENOENT)
        if isinstance(node, ObjectNode):
            self._remember_object(node)
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
        if self.read_only or not isinstance(node, TreeNode):
            raise fuse_error(errno.EROFS)
        if fields.update_size:
            if isinstance(node, DirNode):
                raise fuse_error(errno.EISDIR)
            if not isinstance(node, FileNode):
                raise fuse_error(errno.EINVAL)
            if node.state != "writing":
                raise fuse_error(errno.EROFS)
            await self._settle(node)
            if node.error:
                raise fuse_error(node.error)
            node.staged.truncate(attr.st_size)  # type: ignore[attr-defined]
            if isinstance(node.behind, WriteBehind):
                node.behind.end = attr.st_size
            node.touch()
        if isinstance(node, FileNode) and node.state not in ("writing", "committing"):
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
        return self._attrs(node)

    @boundary
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        node = self.table.get(inode)
        if not isinstance(node, LinkNode):
            raise fuse_error(errno.EINVAL)
        return node.link_target()

    @boundary
    async def access(self, inode: int, mode: int, ctx: pyfuse3.RequestContext) -> bool:
        self.table.get(inode)
        return True  # the mount always uses default_permissions: the kernel decides

    # ------------------------------------------------------------------ incoming/ namespace

    def _new_name(self, parent: DirNode, name: bytes) -> None:
        if name in parent.children:
            raise fuse_error(errno.EEXIST)
        self.tree.make_room()

    @boundary
    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        self._writable_dir(parent_inode)
        raise fuse_error(errno.EPERM)  # only files, directories and symlinks live in incoming/

    @boundary
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        parent = self._writable_dir(parent_inode)
        self._new_name(parent, name)
        node = DirNode(mode & ~ctx.umask, ctx.uid, ctx.gid)
        self.table.register(node)
        self.tree.attach(parent, name, node)
        node.lookups += 1
        return self._attrs(node)

    @boundary
    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        parent = self._writable_dir(parent_inode)
        self._new_name(parent, name)
        node = LinkNode(ctx.uid, ctx.gid, target=target)
        self.table.register(node)
        self.tree.attach(parent, name, node)
        node.lookups += 1
        return self._attrs(node)

    @boundary
    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        self._writable_dir(new_parent_inode)
        raise fuse_error(errno.EPERM)  # no hard links: names are bookkeeping, one per node

    @boundary
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        parent = self._writable_dir(parent_inode)
        node = await self._child(parent, name)
        if node is None:
            raise fuse_error(errno.ENOENT)
        if isinstance(node, DirNode):
            raise fuse_error(errno.EISDIR)
        self.tree.detach(node)  # a file still open is discarded at its last close

    @boundary
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        parent = self._writable_dir(parent_inode)
        node = parent.children.get(name)
        if node is None:
            raise fuse_error(errno.ENOENT)
        if not isinstance(node, DirNode):
            raise fuse_error(errno.ENOTDIR)
        if node.children:
            raise fuse_error(errno.ENOTEMPTY)
        self.tree.detach(node)

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
        src_dir = self._writable_dir(parent_inode_old)
        dst_dir = self._writable_dir(parent_inode_new)
        if flags & ~(pyfuse3.RENAME_EXCHANGE | pyfuse3.RENAME_NOREPLACE):
            raise fuse_error(errno.EINVAL)
        node = await self._child(src_dir, name_old)
        if node is None:
            raise fuse_error(errno.ENOENT)
        existing = await self._child(dst_dir, name_new)
        if isinstance(node, DirNode) and self.tree.is_ancestor(node, dst_dir):
            raise fuse_error(errno.EINVAL)
        if flags & pyfuse3.RENAME_EXCHANGE:
            if existing is None:
                raise fuse_error(errno.ENOENT)
            if isinstance(existing, DirNode) and self.tree.is_ancestor(existing, src_dir):
                raise fuse_error(errno.EINVAL)
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

    # ------------------------------------------------------------------ files

    @boundary
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        parent = self._writable_dir(parent_inode)
        self._new_name(parent, name)
        staged = self.engine.new_staged_object()
        node = FileNode(mode & ~ctx.umask, ctx.uid, ctx.gid, staged)
        self.table.register(node)
        self.tree.attach(parent, name, node)
        node.lookups += 1
        node.open_count += 1
        fh = self.files.add(WriteHandle(node, writable=True))
        info = pyfuse3.FileInfo(fh=fh, keep_cache=False, direct_io=_write_only(flags))
        return info, self._attrs(node)

    def _open_object(self, hashkey: str) -> pyfuse3.FileInfo:
        reader = self.engine.open_object(hashkey)
        fh = self.files.add(ReadHandle(reader, hashkey))
        return pyfuse3.FileInfo(fh=fh, keep_cache=True)

    @boundary
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        node = self.table.get(inode)
        writing = (flags & os.O_ACCMODE) != os.O_RDONLY
        if isinstance(node, ObjectNode):
            if writing:
                raise fuse_error(errno.EROFS)
            return self._open_object(node.hashkey)
        if isinstance(node, FileNode):
            if node.state == "committing" and node.done is not None:
                await node.done.wait()  # type: ignore[attr-defined]
            if node.state == "writing":
                if node.error and writing:
                    raise fuse_error(node.error)
                node.open_count += 1
                fh = self.files.add(WriteHandle(node, writable=writing))
                return pyfuse3.FileInfo(fh=fh, keep_cache=False, direct_io=_write_only(flags))
            if node.state == "committed" and node.hashkey is not None:
                if writing:
                    raise fuse_error(errno.EROFS)  # committed content is an immutable object
                return self._open_object(node.hashkey)
            raise fuse_error(errno.ENOENT)  # failed or discarded: nothing was committed
        if isinstance(node, LinkNode):
            raise fuse_error(errno.ELOOP)
        raise fuse_error(errno.EISDIR)

    @boundary
    async def read(self, fh: int, off: int, size: int) -> bytes:
        handle = self.files.get(fh)
        if isinstance(handle, ReadHandle):
            reader = handle.reader
            if reader.compressed:
                return await self._in_thread(reader.pread, off, size)  # type: ignore[no-any-return]
            return reader.pread(off, size)
        node = handle.node
        await self._settle(node)
        if node.state != "writing":
            raise fuse_error(errno.EBADF)
        return node.staged.pread(off, size)  # type: ignore[attr-defined,no-any-return]

    def _fail(self, node: FileNode, exc: BaseException, what: str) -> pyfuse3.FUSEError:
        """Record a failed write: the file will never be committed; the writer gets the errno."""
        code, _, known = errno_for(exc)
        if not node.error:
            node.error = code
        log.log(
            logging.WARNING if known else logging.ERROR,
            "%s of %s failed (%s): it will not be committed",
            what,
            self.path_of(node),
            exc,
            exc_info=None if known else exc,
        )
        return fuse_error(code)

    @boundary
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        handle = self.files.get(fh)
        if not isinstance(handle, WriteHandle) or not handle.writable:
            raise fuse_error(errno.EBADF)
        node = handle.node
        if node.error:
            raise fuse_error(node.error)
        behind = node.behind
        if isinstance(behind, WriteBehind):
            if behind.error is not None:
                raise self._fail(node, behind.error, "write")
            await behind.write(buf, off)
            node.mtime_ns = time.time_ns()
            return len(buf)
        staged: Any = node.staged
        try:
            written: int = staged.pwrite(buf, off)
        except Exception as exc:  # noqa: BLE001 - recorded, then answered with its errno
            raise self._fail(node, exc, "write") from None
        node.mtime_ns = time.time_ns()
        if staged.size >= START_AFTER and node.behind is None:
            # big file: overlap hashing; the path lets it start writeback early (a hint)
            node.behind = WriteBehind(
                staged.pwrite,
                staged.size,
                getattr(staged, "path", None),
                getattr(staged, "hash_update", None),  # hashing on a second thread
            )
        return written

    async def _sync(self, node: FileNode, what: str) -> None:
        await self._settle(node)
        if node.error:
            raise fuse_error(node.error)
        if node.state != "writing":
            return
        try:
            await self._in_thread(node.staged.fsync)  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - recorded, then answered with its errno
            raise self._fail(node, exc, what) from None

    @boundary
    async def flush(self, fh: int) -> None:
        handle = self.files.get(fh)
        if isinstance(handle, WriteHandle) and handle.writable:
            # close() must report what would stop the commit (ENOSPC/EIO at writeback): the
            # commit itself runs at release, whose errors no process can receive.
            await self._sync(handle.node, "flush")

    @boundary
    async def fsync(self, fh: int, datasync: bool) -> None:
        handle = self.files.get(fh)
        if isinstance(handle, WriteHandle):
            await self._sync(handle.node, "fsync")

    @boundary
    async def release(self, fh: int) -> None:
        handle = self.files.pop(fh)
        if handle is None:
            return
        if isinstance(handle, ReadHandle):
            handle.reader.close()
            if handle.reader.compressed and handle.reader.size >= TRIM_AFTER:
                self.trimmer.maybe_trim()  # its checkpoints were freed: give the pages back
            return
        node = handle.node
        node.open_count -= 1
        if node.open_count == 0:
            await self._finish(node)

    async def _finish(self, node: FileNode) -> None:
        """Last close of an incoming file: commit it and put a link at its name, or discard."""
        if node.state != "writing":
            return
        staged: Any = node.staged
        await self._settle(node)
        if isinstance(node.behind, WriteBehind):
            node.behind.stop()
            node.behind = None
        if node.state != "writing" or node.open_count:
            return  # reopened while the queued writes finished: the new last close commits
        if node.error or node.parent is None:
            node.state = "failed" if node.error else "discarded"
            self.tree.detach(node)  # a failed file leaves no name behind
            try:
                await self._in_thread(staged.discard)
            except Exception as exc:  # noqa: BLE001 - nothing partial may stay; log and go on
                log.warning("discarding %s failed: %s", self.path_of(node), exc)
            self.table.maybe_drop(node)
            return
        node.state = "committing"
        node.final_size = staged.size
        done = trio.Event()
        node.done = done
        try:
            hashkey = await self._in_thread(staged.commit)
        except Exception as exc:  # noqa: BLE001 - the file is dropped, the error logged
            code, _, known = errno_for(exc)
            node.error = code
            node.state = "failed"
            log.log(
                logging.WARNING if known else logging.ERROR,
                "commit of %s failed, nothing was stored: %s",
                self.path_of(node),
                exc,
                exc_info=None if known else exc,
            )
            self.tree.detach(node)
        else:
            node.hashkey = hashkey
            node.state = "committed"
            if node.parent is not None:
                link = LinkNode(node.uid, node.gid, hashkey=hashkey)
                link.mtime_ns, link.atime_ns = node.mtime_ns, node.atime_ns
                # Linux ignores a symlink's permission bits; showing the file's own lets tools
                # that compare modes after close (rsync) see nothing left to change.
                link.mode = stat.S_IFLNK | stat.S_IMODE(node.mode)
                self.table.register(link)
                self.tree.replace(node, link)
            log.debug("committed %s as %s", self.path_of(node), hashkey)
        finally:
            node.staged = None
            done.set()
            self.table.maybe_drop(node)

    # ------------------------------------------------------------------ directories

    @boundary
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        node = self.table.get(inode)
        if node is self.root:
            return self.dirs.add(RootDirHandle())
        if node is self.by_hash:
            if not self.listing:
                raise fuse_error(errno.EACCES)
            return self.dirs.add(HashDirHandle())
        if isinstance(node, DirNode):
            return self.dirs.add(TreeDirHandle(node))
        raise fuse_error(errno.ENOTDIR)

    @boundary
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        handle = self.dirs.get(fh)
        if isinstance(handle, HashDirHandle):
            await self._readdir_by_hash(handle, start_id, token)
        elif isinstance(handle, TreeDirHandle):
            self._readdir_tree(handle, start_id, token)
        else:
            entries: tuple[tuple[bytes, Node], ...] = (
                (BY_HASH_NAME, self.by_hash),
                (INCOMING_NAME, self.incoming),
            )
            for index in range(start_id, len(entries)):
                name, node = entries[index]
                if not readdir_reply(token, name, self._attrs(node), index + 1):
                    return
                node.lookups += 1

    def _readdir_tree(self, handle: TreeDirHandle, start_id: int, token: Any) -> None:
        directory = handle.dir
        if start_id == 0 or handle.snapshot is None:
            handle.snapshot = [(n.seq, name, n) for name, n in directory.children.items()]
        snapshot = handle.snapshot
        index = bisect.bisect_right(snapshot, start_id, key=lambda entry: entry[0])
        for seq, name, node in snapshot[index:]:
            if node.parent is not directory or node.name != name:
                continue  # renamed or removed since the snapshot
            if not readdir_reply(token, name, self._attrs(node, INCOMING_TIMEOUT), seq):
                return
            node.lookups += 1

    async def _readdir_by_hash(self, handle: HashDirHandle, start_id: int, token: Any) -> None:
        async with handle.lock:
            if start_id != handle.position:
                if start_id == 0:
                    after = None
                else:
                    after = handle.recent.get(start_id)
                    if after is None:  # a cursor older than we remember: resume by its prefix
                        prefix = format(start_id - 16, "015x")
                        after = prefix + "f" * (self.engine.hash_length - len(prefix))
                handle.reset(after)
                handle.position = start_id
            while True:
                if not handle.buffer:
                    if handle.exhausted:
                        return
                    await self._fill_listing(handle)
                    continue
                hashkey, size = handle.buffer[0]
                next_id = cursor_id(hashkey)
                node = self.table.find_object(hashkey)
                if node is None and self.table.object_count >= self.table.max_objects:
                    # The kernel keeps every READDIRPLUS entry (until memory pressure), and it
                    # can only drop the ones we invalidate between getdents calls. Past the
                    # bound, hand out a number we do not track, with zero timeouts: any use of
                    # the entry revalidates it by name first and gets a tracked inode.
                    attrs = self._untracked_attrs(size)
                    if not readdir_reply(token, hashkey.encode(), attrs, next_id):
                        return
                else:
                    created = node is None
                    if node is None:
                        node = self.table.object_node(hashkey, size)
                    # Tracked entries get the long timeouts of lookups (`ls -l` then needs no
                    # lookups) and count against the bound like them.
                    attrs = self._object_attrs(node, OBJECT_TIMEOUT)
                    if not readdir_reply(token, hashkey.encode(), attrs, next_id):
                        if created:
                            self.table.maybe_drop(node)
                        return
                    self._remember_object(node)
                handle.buffer.popleft()
                handle.accepted(next_id, hashkey)

    async def _fill_listing(self, handle: HashDirHandle) -> None:
        engine = self.engine

        def fetch(after: str | None) -> tuple[list[tuple[str, int]], str | None, bool]:
            items: list[tuple[str, int]] = []
            last = after
            iterator: Iterator[str] = engine.iter_hashkeys(after=after)
            try:
                for hashkey in iterator:
                    last = hashkey
                    try:
                        meta = engine.get_object_meta(hashkey)
                    except NotExistent:
                        continue  # deleted between listing and meta: skip it
                    if _meta_type(meta) == "missing":
                        continue
                    items.append((hashkey, int(meta_get(meta, "size"))))
                    if len(items) >= LISTING_BATCH:
                        return items, last, False
                return items, last, True
            finally:
                close = getattr(iterator, "close", None)
                if close is not None:
                    close()

        items, last, exhausted = await self._in_thread(fetch, handle.after)
        handle.buffer.extend(items)
        handle.after = last
        handle.exhausted = exhausted

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
        data.f_namemax = 255
        self._statfs = (now, data)
        return data

    # ------------------------------------------------------------------ xattrs

    @boundary
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        if not name.startswith(XATTR_PREFIX):
            raise fuse_error(pyfuse3.ENOATTR)  # security.* probes on every file: answer fast
        node = self.table.get(inode)
        if not isinstance(node, ObjectNode):
            raise fuse_error(pyfuse3.ENOATTR)
        key = name[len(XATTR_PREFIX) :].decode("ascii", "replace")
        meta = self.engine.get_object_meta(node.hashkey)
        kind = _meta_type(meta)
        if key == "type":
            return kind.encode()
        if key == "size":
            return str(int(meta_get(meta, "size"))).encode()
        if key in XATTR_PACKED and kind == "packed":
            field = "pack_compressed" if key == "compressed" else key
            value = meta_get(meta, field)
            if key == "compressed":
                value = int(bool(value))
            return str(value).encode()
        raise fuse_error(pyfuse3.ENOATTR)

    @boundary
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        node = self.table.get(inode)
        if not isinstance(node, ObjectNode):
            return []
        keys: tuple[str, ...] = XATTR_ALWAYS
        if _meta_type(self.engine.get_object_meta(node.hashkey)) == "packed":
            keys += XATTR_PACKED
        return [XATTR_PREFIX + key.encode() for key in keys]

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
        """After the loop ended: close readers, drop unfinished incoming files (never commit
        a partial file), stop the worker threads."""
        self.pool.close()
        for handle in self.files.values():
            try:
                if isinstance(handle, ReadHandle):
                    handle.reader.close()
                elif handle.node.state == "writing" and handle.node.staged is not None:
                    if isinstance(handle.node.behind, WriteBehind):
                        handle.node.behind.stop(wait=True)
                    handle.node.state = "discarded"
                    handle.node.staged.discard()  # type: ignore[attr-defined]
                    log.warning(
                        "unmounted while %s was open for writing: not committed",
                        self.path_of(handle.node),
                    )
            except Exception as exc:  # noqa: BLE001 - best effort at shutdown
                log.warning("cleanup at unmount: %s", exc)
