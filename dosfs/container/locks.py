"""The container's exclusive lock: one packer or maintenance operation at a time, across processes.

`<container>/.dosfs-pack.lock` is flock()ed exclusively (non-blocking) by pack_all_loose,
clean_storage, direct pack writes, repack and delete_objects. A second one refuses at once with
LockedError naming the holder (pid, host and operation are written into the file). The kernel
drops the lock when the holder dies, so a crash never leaves the container locked. Threads of
one process queue on an in-process lock first, so they do not refuse each other.
Readers and loose writers never take it: every maintenance operation is safe for them.
disk-objectstore does not know this file (and ignores it); see docs/format.md.
"""

from __future__ import annotations

import fcntl
import os
import socket
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

from dosfs.container.errors import LockedError

_ALL_LOCKS: weakref.WeakSet[ContainerLock] = weakref.WeakSet()


def _after_fork() -> None:
    # A forked child does not hold its parent's lock: its copy of the descriptor would keep the
    # flock alive after the parent releases it, so it is closed here.
    for lock in list(_ALL_LOCKS):
        fd, lock._fd = lock._fd, -1
        lock._depth = 0
        lock._thread_lock = threading.RLock()
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass


os.register_at_fork(after_in_child=_after_fork)


class ContainerLock:
    """flock on a lock file, re-entrant within one thread."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._fd = -1
        _ALL_LOCKS.add(self)

    def holder(self) -> str:
        """What the current holder wrote into the lock file ('' if unknown)."""
        try:
            with open(self.path, encoding="utf8", errors="replace") as handle:
                return handle.read(300).strip()
        except OSError:
            return ""

    @contextmanager
    def hold(self, operation: str) -> Iterator[None]:
        """Hold the lock for `operation`, or raise LockedError if another process holds it."""
        with self._thread_lock:
            if self._depth == 0:
                self._acquire(operation)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._release()

    def _acquire(self, operation: str) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            who = self.holder() or "another process"
            raise LockedError(
                f"cannot {operation}: the container is busy ({who}); only one packer or "
                f"maintenance operation may run at a time (lock file {self.path})"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            text = f"pid={os.getpid()} host={socket.gethostname()} operation={operation}\n"
            os.ftruncate(fd, 0)
            os.pwrite(fd, text.encode(), 0)
        except OSError:
            pass  # informative only
        self._fd = fd

    def _release(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            try:
                os.ftruncate(fd, 0)
            except OSError:
                pass
            os.close(fd)  # closing drops the flock

    def is_held_elsewhere(self) -> bool:
        """True if another process (or another Container object) holds the lock now."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False
