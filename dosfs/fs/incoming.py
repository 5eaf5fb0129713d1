"""incoming/: a writable staging tree whose finished files become links to their objects.

An `IncomingFile` (incoming_file.py) owns its lifecycle; the `Incoming` namespace does the names
(create, mkdir, symlink, rename, unlink, rmdir, setattr) and drives files from the handlers.

Why commit at FLUSH: the kernel's FLUSH is synchronous with close(2) (RELEASE is not), so when
close() of the last writable handle returns 0 the object is durable and the name is the link; a
daemon that dies right after loses nothing. FLUSH comes at every close() of a descriptor, and
the daemon cannot tell whether another descriptor of the same open file remains (dup2 + close,
as shells do for every redirection; a forked child's exit; a shared mapping). So:

* an empty file is not committed at FLUSH (every `cmd > incoming/f` closes its first descriptor
  before writing anything) but at its last RELEASE;
* a file written again after a commit (another descriptor of it was still open) is reseeded
  with the committed bytes, goes back to WRITING and is committed again at its next FLUSH or
  last RELEASE; the earlier content stays stored as an object of its own. Writes through a
  mapping after the last close reach the daemon without a FLUSH: an fsync/msync of such a file
  marks its staging file complete, which the next mount or `dosfs clean` commits if the daemon
  dies before the final RELEASE.
"""

from __future__ import annotations

import bisect
import errno
import logging
import os
import stat
import time
from typing import Any

import pyfuse3

from dosfs.engine import EngineLike, ObjectReaderLike
from dosfs.fs import handles as _handles
from dosfs.fs.attrs import FIXED_TIMEOUT, INCOMING_TIMEOUT, AttrBuilder
from dosfs.fs.errors import fuse_error
from dosfs.fs.handles import TreeDirHandle, WriteHandle
from dosfs.fs.incoming_file import FileState, IncomingFile
from dosfs.fs.inodes import FixedDir, InodeTable, Node, ViewNode
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

log = logging.getLogger("dosfs.fs")

#: bytes per read when a reopened file is reseeded with its committed content
RESEED_CHUNK = 1 << 20


class Incoming:
    """The incoming/ namespace: names, files and their handles."""

    def __init__(
        self,
        engine: EngineLike,
        table: InodeTable,
        attrs: AttrBuilder,
        offload: Offload,
        *,
        read_only: bool,
        max_names: int,
        stats: Stats | None = None,
    ) -> None:
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
        self.tree = IncomingTree(table, self.root, max_names, engine.hash_length)

    # ------------------------------------------------------------------ helpers
    def path_of(self, node: TreeNode) -> str:
        """incoming/... path of a node, for log messages."""
        parts: list[bytes] = []
        current: TreeNode | None = node
        while current is not None:
            parts.append(current.name)
            current = current.parent
        return os.fsdecode(b"/".join(reversed(parts)))

    def writable_dir(self, node: Node) -> DirNode:
        """The directory a create/mkdir/unlink/rename touches, or the right errno."""
        if self.read_only or isinstance(node, FixedDir | ViewNode):
            raise fuse_error(errno.EROFS)
        if not isinstance(node, DirNode):
            raise fuse_error(errno.ENOTDIR)
        if node.parent is None and not node.is_incoming_root:
            raise fuse_error(errno.ENOENT)  # a directory removed while someone was inside it
        return node

    async def child(self, parent: DirNode, name: bytes) -> TreeNode | None:
        """``parent/name``, waiting out a commit in progress (the name then is a link)."""
        node = parent.children.get(name)
        while isinstance(node, IncomingFile) and node.state is FileState.COMMITTING:
            await node.wait_committed()
            node = parent.children.get(name)
        return node

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
    def mkdir(self, parent: DirNode, name: bytes, mode: int, ctx: Any) -> DirNode:
        self._new_name(parent, name)
        self.tree.check_depth(parent, 0)
        node = DirNode(mode & ~ctx.umask, ctx.uid, ctx.gid)
        self.table.register(node)
        self.tree.attach(parent, name, node)
        node.lookups += 1
        return node

    def symlink(self, parent: DirNode, name: bytes, target: bytes, ctx: Any) -> LinkNode:
        self._new_name(parent, name)
        node = LinkNode(ctx.uid, ctx.gid, target=target)
        self.table.register(node)
        self.tree.attach(parent, name, node)
        node.lookups += 1
        return node

    async def unlink(self, parent: DirNode, name: bytes) -> None:
        node = await self.child(parent, name)
        if node is None:
            raise fuse_error(errno.ENOENT)
        if isinstance(node, DirNode):
            raise fuse_error(errno.EISDIR)
        self.tree.detach(node)  # a file still open is discarded at its last close

    def rmdir(self, parent: DirNode, name: bytes) -> None:
        node = parent.children.get(name)
        if node is None:
            raise fuse_error(errno.ENOENT)
        if not isinstance(node, DirNode):
            raise fuse_error(errno.ENOTDIR)
        if node.children:
            raise fuse_error(errno.ENOTEMPTY)
        self.tree.detach(node)

    async def rename(
        self, src_dir: DirNode, name_old: bytes, dst_dir: DirNode, name_new: bytes, flags: int
    ) -> None:
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
        self, node: Node, attr: pyfuse3.EntryAttributes, fields: Any, handle: object
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
                await self._reseed(node)  # ftruncate on a descriptor still open after close
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

    # ------------------------------------------------------------------ files
    def create(self, parent: DirNode, name: bytes, mode: int, ctx: Any) -> WriteHandle:
        self._new_name(parent, name)
        staged = self.engine.new_staged_object()
        file = IncomingFile(mode & ~ctx.umask, ctx.uid, ctx.gid, staged)
        self.table.register(file)
        self.tree.attach(parent, name, file)
        file.lookups += 1
        return self._handle(file, writable=True)

    def _handle(self, file: IncomingFile, writable: bool) -> WriteHandle:
        file.open_count += 1
        if writable:
            file.writers += 1
        return WriteHandle(file, writable=writable)

    async def open(self, file: IncomingFile, writing: bool) -> WriteHandle | str:
        """A handle on a file being written, or the key of a committed one (opened as an
        object by the caller)."""
        await file.wait_committed()
        if file.state is FileState.WRITING:
            if file.error and writing:
                raise fuse_error(file.error)
            return self._handle(file, writable=writing)
        if file.state is FileState.COMMITTED and file.hashkey is not None:
            if writing:
                raise fuse_error(errno.EROFS)  # committed content is an immutable object
            return file.hashkey
        raise fuse_error(errno.ENOENT)  # failed or discarded: nothing was committed

    async def read(self, handle: WriteHandle, off: int, size: int) -> bytes:
        file = handle.file
        await file.settle()
        await file.wait_committed()
        if file.state is FileState.WRITING and file.staged is not None:
            return file.staged.pread(off, size)
        if file.state is FileState.COMMITTED and file.hashkey is not None:
            if handle.reader is None:  # committed under this handle: read the object
                handle.reader = self.engine.open_object(file.hashkey)
            reader: ObjectReaderLike = handle.reader
            return await self.offload.read(reader, off, size)
        raise fuse_error(errno.EBADF)

    async def write(self, handle: WriteHandle, off: int, buf: bytes) -> int:
        if not handle.writable:
            raise fuse_error(errno.EBADF)
        file = handle.file
        await file.wait_committed()
        if file.state is FileState.COMMITTED:
            await self._reseed(file)  # written again after its close: a fork/dup/mapping
        return await file.write(buf, off, self.path_of(file))

    async def flush(self, handle: WriteHandle) -> None:
        """close(): for the last writable handle, this is the commit (see module docstring)."""
        if not handle.writable:
            return
        file = handle.file
        await file.wait_committed()
        if file.state is not FileState.WRITING:
            if file.error:
                raise fuse_error(file.error)
            return
        if file.writers == 1 and (file.size > 0 or file.error):
            await self._commit(file)  # the commit, or the failure that removes the name
            if file.error:
                raise fuse_error(file.error)
            return
        # others still write, or nothing written yet (a shell's dup2 + close): report what
        # would stop the commit (ENOSPC/EIO at writeback); the last close commits
        await file.sync(self.offload, "flush", self.path_of(file))

    async def fsync(self, handle: WriteHandle) -> None:
        file = handle.file
        await file.wait_committed()
        await file.sync(self.offload, "fsync", self.path_of(file))
        if file.reopened and not file.complete and file.staged is not None:
            await self.offload.run(file.staged.mark_complete)  # msync of a mapping after close
            file.complete = True

    async def release(self, handle: WriteHandle) -> None:
        file = handle.file
        file.open_count -= 1
        if handle.writable:
            file.writers -= 1
        if handle.reader is not None:
            handle.reader.close()
            handle.reader = None
        if file.open_count == 0 and file.state is FileState.WRITING:
            try:
                await self._commit(file)  # no FLUSH came after the last write (a mapping)
            except pyfuse3.FUSEError:
                pass  # logged by commit(); nobody can receive it
        self.table.maybe_drop(file)

    async def _commit(self, file: IncomingFile) -> None:
        """Commit `file` and put a link at its name (a failed file leaves no name behind)."""
        path = self.path_of(file)
        try:
            hashkey = await file.commit(self.offload, path)
        except pyfuse3.FUSEError:
            self.tree.detach(file)
            raise
        if hashkey is None:
            if file.state is not FileState.COMMITTED:
                self.tree.detach(file)
            self.table.maybe_drop(file)
            return
        self.stats.objects_committed += 1
        if file.parent is not None:
            link = LinkNode(file.uid, file.gid, hashkey=hashkey)
            link.mtime_ns, link.atime_ns = file.mtime_ns, file.atime_ns
            # Linux ignores a symlink's permission bits; showing the file's own lets tools
            # that compare modes after close (rsync) see nothing left to change.
            link.mode = stat.S_IFLNK | stat.S_IMODE(file.mode)
            self.table.register(link)
            self.tree.replace(file, link)
            file.link = link
        self.table.maybe_drop(file)

    async def _reseed(self, file: IncomingFile) -> None:
        """COMMITTED -> WRITING, staged with the committed bytes, the name back on the file."""
        hashkey = file.hashkey
        if hashkey is None:  # pragma: no cover - COMMITTED always has a key
            raise fuse_error(errno.EBADF)
        staged = self.engine.new_staged_object()
        engine = self.engine

        def copy() -> None:
            reader = engine.open_object(hashkey)
            try:
                pos = 0
                while pos < reader.size:
                    chunk = reader.pread(pos, RESEED_CHUNK)
                    staged.pwrite(chunk, pos)
                    pos += len(chunk)
            finally:
                reader.close()

        try:
            await self.offload.run(copy)
        except Exception:
            await self.offload.run(staged.discard)
            raise
        if file.state is not FileState.COMMITTED:  # pragma: no cover - raced with another
            await self.offload.run(staged.discard)
            return
        file.staged = staged
        file.state = FileState.WRITING
        file.hashkey = None
        file.reopened = True
        file.complete = False
        link = file.link
        file.link = None
        if link is not None and link.parent is not None:
            self.tree.replace(link, file)
        log.info("%s written again after its close: reopened for writing", self.path_of(file))

    # ------------------------------------------------------------------ listing
    def readdir(self, handle: TreeDirHandle, start_id: int, token: Any) -> None:
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
        """After the loop ended: commit files declared complete, drop the rest (never commit a
        file whose writer did not close it)."""
        for handle in handles:
            file = handle.file
            if handle.reader is not None:
                handle.reader.close()
            staged = file.staged
            if file.state is not FileState.WRITING or staged is None:
                continue
            if file.behind is not None:
                file.behind.stop(wait=True)
                file.behind = None
            file.state = FileState.DISCARDED
            file.staged = None
            if file.complete and not file.error:
                staged.commit()
                log.warning("unmounted while %s was open: committed its bytes so far",
                            self.path_of(file))
                continue
            staged.discard()
            log.warning(
                "unmounted while %s was open for writing: not committed", self.path_of(file)
            )
