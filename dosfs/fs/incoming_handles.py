"""The files of incoming/ from open to close: handles, reads, writes, the commit, the reseed.

An `IncomingFile` (incoming_file.py) owns its states; `IncomingHandles` drives them from the
handlers the incoming/ namespace (incoming.py) passes on, and turns a committed file's name
into its link.

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

import errno
import logging
import os
import stat
from collections.abc import Callable

import pyfuse3

from dosfs.engine import EngineLike, ObjectReaderLike
from dosfs.fs.errors import fuse_error
from dosfs.fs.handles import ReadHandle, WriteHandle
from dosfs.fs.incoming_file import FileState, IncomingFile
from dosfs.fs.inodes import InodeTable
from dosfs.fs.offload import Offload
from dosfs.fs.stats import Stats
from dosfs.fs.tree import IncomingTree, LinkNode, path_of

log = logging.getLogger("dosfs.fs")

#: bytes per read when a reopened file is reseeded with its committed content
RESEED_CHUNK = 1 << 20


def write_only(flags: int) -> bool:
    """Whether an incoming/ file handle bypasses the page cache (``direct_io``).

    Why: the kernel otherwise copies every write into the FUSE file's own page cache (a second
    1 GiB of pages for a 1 GiB cp, allocated in the writer's time and freed when the name turns
    into a link), which the daemon never reads back. Only for write-only handles: those cannot
    be mmap'ed, the one thing direct_io takes away; a read-write handle keeps the page cache.
    """
    return (flags & os.O_ACCMODE) == os.O_WRONLY


class IncomingHandles:
    """The open files of incoming/ (``open_object``: how a committed one is opened again, as
    its object)."""

    def __init__(
        self,
        engine: EngineLike,
        table: InodeTable,
        tree: IncomingTree,
        offload: Offload,
        stats: Stats,
        open_object: Callable[[str], ReadHandle],
    ) -> None:
        self.engine = engine
        self.table = table
        self.tree = tree
        self.offload = offload
        self.stats = stats
        self.open_object = open_object

    def handle(self, file: IncomingFile, writable: bool) -> WriteHandle:
        file.open_count += 1
        if writable:
            file.writers += 1
        return WriteHandle(file, writable=writable)

    async def open(
        self, file: IncomingFile, flags: int
    ) -> tuple[WriteHandle | ReadHandle, pyfuse3.FileInfo]:
        """A handle on a file being written, or on the object of a committed one."""
        writing = (flags & os.O_ACCMODE) != os.O_RDONLY
        await file.wait_committed()
        if file.state is FileState.WRITING:
            if file.error and writing:
                raise fuse_error(file.error)
            info = pyfuse3.FileInfo(keep_cache=False, direct_io=write_only(flags))
            return self.handle(file, writable=writing), info
        if file.state is FileState.COMMITTED and file.hashkey is not None:
            if writing:
                raise fuse_error(errno.EROFS)  # committed content is an immutable object
            # its object, hashed by us at commit (a by-hash/ handle)
            return self.open_object(file.hashkey), pyfuse3.FileInfo(keep_cache=True)
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
            await self.reseed(file)  # written again after its close: a fork/dup/mapping
        return await file.write(buf, off, path_of(file))

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
            await self.commit(file)  # the commit, or the failure that removes the name
            if file.error:
                raise fuse_error(file.error)
            return
        # others still write, or nothing written yet (a shell's dup2 + close): report what
        # would stop the commit (ENOSPC/EIO at writeback); the last close commits
        await file.sync(self.offload, "flush", path_of(file))

    async def fsync(self, handle: WriteHandle) -> None:
        file = handle.file
        await file.wait_committed()
        await file.sync(self.offload, "fsync", path_of(file))
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
                await self.commit(file)  # no FLUSH came after the last write (a mapping)
            except pyfuse3.FUSEError:
                pass  # logged by commit(); nobody can receive it
        self.table.maybe_drop(file)

    async def commit(self, file: IncomingFile) -> None:
        """Commit `file` and put a link at its name (a failed file leaves no name behind)."""
        path = path_of(file)
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

    async def reseed(self, file: IncomingFile) -> None:
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
        log.info("%s written again after its close: reopened for writing", path_of(file))

    def shutdown(self, handles: list[WriteHandle]) -> None:
        """After the loop ended: commit files declared complete, drop the rest (never commit a
        file whose writer did not close it)."""
        try:
            self._settle(handles)
        except Exception as exc:  # noqa: BLE001 - best effort at shutdown
            log.warning("cleanup at unmount: %s", exc)

    def _settle(self, handles: list[WriteHandle]) -> None:
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
                            path_of(file))
                continue
            staged.discard()
            log.warning(
                "unmounted while %s was open for writing: not committed", path_of(file)
            )

