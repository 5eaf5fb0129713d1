"""Writing pack files: appending under the pack's lock file, and choosing the pack to append to.
(Reading pack bytes goes through packstore.py.)

Appending follows disk-objectstore: `packs/N.lock` created with O_EXCL (we write our pid and host
into it, so a lock left by a crashed dosfs process is recognised and removed), append, fsync the
pack (and the packs folder when the file is new) BEFORE the index commit, remove the lock.
"""

from __future__ import annotations

import errno
import os
import socket
import uuid

from dosfs.container.config import REPACK_PACK_ID, Layout, fsync_dir
from dosfs.container.errors import LockedError
from dosfs.container.packstore import list_pack_ids

#: private files that become pack locks by link(); a crash can leave one behind
TMP_LOCK_PREFIX = ".dosfs-lock."
#: appends are buffered into writes of this size
WRITE_BUFFER = 8 * 1024 * 1024
#: buffers per writev (Linux's limit)
IOV_MAX = 1024


def _lock_owner_text() -> bytes:
    return f"dosfs pid={os.getpid()} host={socket.gethostname()}\n".encode()


def _stale_dosfs_lock(path: str) -> bool:
    """True if the lock file was written by a dosfs process on this host that no longer runs."""
    try:
        with open(path, "rb") as handle:
            text = handle.read(256).decode("utf8", "replace")
    except OSError:
        return False
    parts = dict(p.split("=", 1) for p in text.split()[1:] if "=" in p)
    if not text.startswith("dosfs ") or parts.get("host") != socket.gethostname():
        return False
    try:
        pid = int(parts.get("pid", ""))
    except ValueError:
        return False
    return not _pid_alive(pid)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_pack_locks(layout: Layout) -> list[str]:
    """Remove `N.lock` files left by crashed dosfs processes; returns the names removed."""
    removed: list[str] = []
    try:
        names = os.listdir(layout.packs)
    except FileNotFoundError:
        return removed
    for name in names:
        path = os.path.join(layout.packs, name)
        if name.startswith(TMP_LOCK_PREFIX):
            host_pid = name[len(TMP_LOCK_PREFIX) :].rsplit(".", 2)
            if (
                len(host_pid) == 3
                and host_pid[0] == socket.gethostname()
                and host_pid[1].isdigit()
                and not _pid_alive(int(host_pid[1]))
            ):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
        elif name.endswith(".lock") and _stale_dosfs_lock(path):
            try:
                os.unlink(path)
                removed.append(name)
            except FileNotFoundError:
                pass
    return removed


class PackLock:
    """`packs/N.lock`, created with its owner text in one step (a private file, then link(),
    which fails atomically if the lock exists), so a crash never leaves an anonymous lock that
    only a human can clear. A lock left by a dead dosfs process on this host is taken over."""

    def __init__(self, layout: Layout, pack_id: int) -> None:
        self.pack_id = pack_id
        self.path = layout.pack_lock_path(pack_id)
        name = f"{TMP_LOCK_PREFIX}{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex}"
        tmp = os.path.join(layout.packs, name)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, _lock_owner_text())
        finally:
            os.close(fd)
        try:
            for _attempt in range(2):
                try:
                    os.link(tmp, self.path)
                    return
                except FileExistsError:
                    if not _stale_dosfs_lock(self.path):
                        break
                    try:
                        os.unlink(self.path)
                    except FileNotFoundError:
                        pass
            raise LockedError(
                f"pack {pack_id} is locked by another writer ({self.path} exists); "
                "if no process is writing to this container, remove that file"
            )
        finally:
            os.unlink(tmp)

    def release(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def __enter__(self) -> PackLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class PackAppender:
    """Appends to one pack under its lock file; buffered; `sync()` makes it durable."""

    def __init__(self, layout: Layout, pack_id: int) -> None:
        self.layout = layout
        self.pack_id = pack_id
        self._lock = PackLock(layout, pack_id)
        path = layout.pack_path(pack_id)
        try:
            self.created = not os.path.exists(path)
            self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
            self.start = os.fstat(self.fd).st_size
        except BaseException:
            self._lock.release()
            raise
        self._flushed = self.start
        self._buf = bytearray()
        self._closed = False

    def tell(self) -> int:
        """Absolute offset where the next byte goes."""
        return self._flushed + len(self._buf)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._buf += data
        if len(self._buf) >= WRITE_BUFFER:
            self.flush()

    def write_all(self, buffers: list[bytes]) -> None:
        """Append many buffers (IOV_MAX per writev) without copying them into the write
        buffer: bulk writes of small objects then cost no Python step per object."""
        self.flush()
        pending = buffers
        while pending:
            batch = pending[:IOV_MAX]
            pending = pending[IOV_MAX:]
            want = sum(map(len, batch))
            done = os.writev(self.fd, batch) if want else 0
            self._flushed += done
            if done < want:  # a short write (rare): the rest of this batch goes first
                k = 0
                while done >= len(batch[k]):
                    done -= len(batch[k])
                    k += 1
                pending = [bytes(memoryview(batch[k])[done:]), *batch[k + 1 :], *pending]

    def flush(self) -> None:
        if self._buf:
            view = memoryview(self._buf)
            while view:
                n = os.write(self.fd, view)
                view = view[n:]
            self._flushed += len(self._buf)
            self._buf = bytearray()

    def truncate_to(self, offset: int) -> None:
        """Drop uncommitted bytes after `offset` (e.g. an object that turned out to be a
        duplicate), so direct pack writes leave no holes."""
        if offset >= self._flushed:
            del self._buf[offset - self._flushed :]
        else:
            self._buf = bytearray()
            os.ftruncate(self.fd, offset)
            self._flushed = offset

    def sync(self) -> None:
        """Flush and fsync: after this the bytes survive a crash (then commit the index)."""
        self.flush()
        self.sync_flushed()

    def sync_flushed(self) -> None:
        """fsync what was flushed (and the packs folder for a new pack). Touches nothing but
        the descriptor, so it may run on another thread while the caller prepares the
        index rows (PackSession.commit), as long as nothing is written meanwhile."""
        os.fsync(self.fd)
        if self.created:
            fsync_dir(self.layout.packs)
            self.created = False

    def mark_committed(self) -> None:
        """The bytes so far are referenced by committed index rows: abort() must keep them."""
        self.flush()
        self.start = self._flushed

    def close(self) -> None:
        """Release the pack (buffered bytes not synced are written but not fsynced)."""
        if self._closed:
            return
        self._closed = True
        try:
            self.flush()
        finally:
            os.close(self.fd)
            self._lock.release()

    def abort(self) -> None:
        """Give up: cut what we appended (nothing of it is in the index) and release."""
        if self._closed:
            return
        self._closed = True
        try:
            self._buf = bytearray()
            try:
                os.ftruncate(self.fd, self.start)
            except OSError as exc:  # pragma: no cover - best effort only
                if exc.errno not in (errno.EINVAL, errno.EBADF):
                    raise
        finally:
            os.close(self.fd)
            self._lock.release()
            if self.created and self.start == 0:
                try:
                    if os.path.getsize(self.layout.pack_path(self.pack_id)) == 0:
                        os.unlink(self.layout.pack_path(self.pack_id))
                except OSError:
                    pass

    def __enter__(self) -> PackAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        else:
            self.abort()


class PackChooser:
    """Chooses the pack to append to like disk-objectstore: the first pack, starting at the
    last one used, that does not exist yet or is still below pack_size_target."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.current = 0

    def choose(self) -> int:
        pack_id = self.current
        target = self.layout.config.pack_size_target
        while True:
            try:
                size = os.stat(self.layout.pack_path(pack_id)).st_size
            except FileNotFoundError:
                break
            if size < target:
                break
            pack_id += 1
        self.current = pack_id
        return pack_id


__all__ = [
    "REPACK_PACK_ID",
    "PackAppender",
    "PackChooser",
    "list_pack_ids",
    "remove_stale_pack_locks",
]
