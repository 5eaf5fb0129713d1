"""A file in incoming/ and its lifecycle (states and transitions; the namespace is incoming.py).

    WRITING ──close of the last writable handle (FLUSH)──► COMMITTING ──► COMMITTED
       │   ▲                                                   │
       │   └────────── a write after the commit (reseed) ◄─────┘
       └──► FAILED (a write/fsync/commit failed: no name left, nothing stored)
       └──► DISCARDED (no name left at its last close)
"""

from __future__ import annotations

import errno
import logging
import stat
import time
from enum import StrEnum

import pyfuse3
import trio

from dosfs.engine import StagedObjectLike
from dosfs.fs.errors import errno_for, fuse_error
from dosfs.fs.offload import Offload
from dosfs.fs.tree import LinkNode, TreeNode
from dosfs.fs.writebehind import START_AFTER, WriteBehind

log = logging.getLogger("dosfs.fs")


class FileState(StrEnum):
    WRITING = "writing"
    COMMITTING = "committing"
    COMMITTED = "committed"
    FAILED = "failed"
    DISCARDED = "discarded"


class IncomingFile(TreeNode):
    """A regular file in incoming/ (see the module docstring for its states).

    ``error`` holds the errno of the first failed write: later writes, flush and fsync report it
    again and the file is never committed. ``link``: the name's link after a commit."""

    __slots__ = (
        "staged",
        "behind",
        "state",
        "error",
        "hashkey",
        "done",
        "final_size",
        "open_count",
        "writers",
        "link",
        "reopened",
        "complete",
    )

    def __init__(self, mode: int, uid: int, gid: int, staged: StagedObjectLike) -> None:
        super().__init__(stat.S_IFREG | (mode & 0o7777), uid, gid)
        self.staged: StagedObjectLike | None = staged
        self.behind: WriteBehind | None = None
        self.state = FileState.WRITING
        self.error = 0
        self.hashkey: str | None = None
        self.done: trio.Event | None = None
        self.final_size = 0
        self.open_count = 0
        self.writers = 0
        self.link: LinkNode | None = None
        self.reopened = False  # written again after a commit (reseeded)
        self.complete = False  # its staging file is marked complete (see the module docstring)

    def pinned(self) -> bool:
        return (
            self.parent is not None
            or self.open_count > 0
            or self.state is FileState.COMMITTING
        )

    @property
    def size(self) -> int:
        """Size as a writer sees it (counting writes still queued behind)."""
        if self.state is not FileState.WRITING or self.staged is None:
            return self.final_size
        size = self.staged.size
        if self.behind is not None:
            size = max(size, self.behind.end)
        return size

    def writing(self) -> StagedObjectLike:
        """The staged object of a file being written, or EBADF."""
        staged = self.staged
        if self.state is not FileState.WRITING or staged is None:
            raise fuse_error(errno.EBADF)
        return staged

    def fail(self, exc: BaseException, what: str, path: str) -> pyfuse3.FUSEError:
        """Record a failed write: the file will never be committed; the writer gets the errno."""
        code, _, known = errno_for(exc)
        if not self.error:
            self.error = code
        log.log(
            logging.WARNING if known else logging.ERROR,
            "%s of %s failed (%s): it will not be committed",
            what,
            path,
            exc,
            exc_info=None if known else exc,
        )
        return fuse_error(code)

    async def settle(self) -> None:
        """Wait for queued writes, so the staged object is what the writer wrote."""
        behind = self.behind
        if behind is not None:
            await behind.drain()
            if behind.error is not None and not self.error:
                self.error = errno_for(behind.error)[0]

    async def write(self, data: bytes, off: int, path: str) -> int:
        if self.error:
            raise fuse_error(self.error)
        staged = self.writing()
        behind = self.behind
        if behind is not None:
            if behind.error is not None:
                raise self.fail(behind.error, "write", path)
            await behind.write(data, off)
        else:
            try:
                staged.pwrite(data, off)
            except Exception as exc:  # noqa: BLE001 - recorded, then answered with its errno
                raise self.fail(exc, "write", path) from None
            if staged.size >= START_AFTER:
                # big file: overlap hashing; the path lets it start writeback early (a hint)
                self.behind = WriteBehind(staged.pwrite, staged.size, staged.path,
                                          staged.hash_update)
        self.mtime_ns = time.time_ns()
        return len(data)

    async def sync(self, offload: Offload, what: str, path: str) -> None:
        """Make the staged bytes durable, or raise the errno that stops the commit."""
        await self.settle()
        if self.error:
            raise fuse_error(self.error)
        if self.state is not FileState.WRITING or self.staged is None:
            return
        try:
            await offload.run(self.staged.fsync)
        except Exception as exc:  # noqa: BLE001 - recorded, then answered with its errno
            raise self.fail(exc, what, path) from None

    async def truncate(self, size: int) -> None:
        await self.settle()
        if self.error:
            raise fuse_error(self.error)
        self.writing().truncate(size)
        if self.behind is not None:
            self.behind.end = size
        self.touch()

    async def commit(self, offload: Offload, path: str) -> str | None:
        """WRITING -> COMMITTED (returns the key) or FAILED/DISCARDED (returns None; a failed
        commit raises its errno)."""
        staged = self.writing()
        await self.settle()
        if self.behind is not None:
            self.behind.stop()
            self.behind = None
        if self.state is not FileState.WRITING:
            return None  # committed meanwhile by another task
        if self.error or self.parent is None:
            self.state = FileState.FAILED if self.error else FileState.DISCARDED
            await self._discard(offload, staged, path)
            return None
        self.state = FileState.COMMITTING
        self.final_size = staged.size
        done = self.done = trio.Event()
        try:
            hashkey = await offload.run(staged.commit)
        except Exception as exc:  # noqa: BLE001 - the file is dropped, the error logged
            code, _, known = errno_for(exc)
            self.error = code
            self.state = FileState.FAILED
            log.log(
                logging.WARNING if known else logging.ERROR,
                "commit of %s failed, nothing was stored: %s",
                path,
                exc,
                exc_info=None if known else exc,
            )
            raise fuse_error(code) from None
        else:
            self.hashkey = hashkey
            self.state = FileState.COMMITTED
            log.debug("committed %s as %s", path, hashkey)
            return hashkey
        finally:
            self.staged = None
            done.set()

    async def _discard(self, offload: Offload, staged: StagedObjectLike, path: str) -> None:
        self.staged = None
        try:
            await offload.run(staged.discard)
        except Exception as exc:  # noqa: BLE001 - nothing partial may stay; log and go on
            log.warning("discarding %s failed: %s", path, exc)

    async def wait_committed(self) -> None:
        while self.state is FileState.COMMITTING and self.done is not None:
            await self.done.wait()
