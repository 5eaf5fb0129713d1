"""Pack files: cached read descriptors that can never serve another file's bytes, and appending.

Reading. A packed object is one `os.pread` on a cached pack descriptor. The danger of caching is
that a pack file can be *replaced* (a repack writes a new file under the same number, by any
process, dosfs or disk-objectstore). Every repack moves the rows away from a pack (a commit)
before it removes or replaces the file, and moves them back (another commit) only after the new
file is in place. So if a cached descriptor was checked against the file on disk (st_dev, st_ino)
while the index was at `data_version` V, it is the right file for every row read at the same V.
Cache entries remember that V (per thread, like the connection whose version it is); when the
version moved on, the entry is re-checked with one `os.stat`, bracketed by a second look at
`data_version` (if a commit slipped in between, the caller re-reads the row). A descriptor is a
refcounted object, closed only when nobody (cache or open reader) holds it any more, so a reader
that pinned it keeps reading the file it resolved even after the cache moved on.

Appending follows disk-objectstore: `packs/N.lock` created with O_EXCL (we write our pid and host
into it, so a lock left by a crashed dosfs process is recognised and removed), append, fsync the
pack (and the packs folder when the file is new) BEFORE the index commit, remove the lock.
"""

from __future__ import annotations

import errno
import os
import socket
import threading
import uuid
from collections.abc import Callable

from dosfs.container.config import REPACK_PACK_ID, Layout, fsync_dir, is_valid_pack_name
from dosfs.container.errors import LockedError

#: private files that become pack locks by link(); a crash can leave one behind
TMP_LOCK_PREFIX = ".dosfs-lock."
#: appends are buffered into writes of this size
WRITE_BUFFER = 8 * 1024 * 1024


class PackFd:
    """An open pack file descriptor closed when the last reference goes away."""

    __slots__ = ("fd", "dev", "ino", "pack_id", "__weakref__")

    def __init__(self, fd: int, dev: int, ino: int, pack_id: int | None) -> None:
        self.fd = fd
        self.dev = dev
        self.ino = ino
        self.pack_id = pack_id

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def __del__(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass


class _Local(threading.local):
    gen: int = -1
    cache: dict[int, tuple[PackFd, int]]


class PackFiles:
    """Per-thread cache of pack descriptors, validated against the index's data_version."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self._local = _Local()
        self._gen = 0

    def clear(self) -> None:
        """Forget every cached descriptor (all threads, lazily)."""
        self._gen += 1

    def _cache(self) -> dict[int, tuple[PackFd, int]]:
        local = self._local
        if local.gen != self._gen:
            local.cache = {}
            local.gen = self._gen
        return local.cache

    def get(self, pack_id: int, version: int, data_version: Callable[[], int]) -> PackFd | None:
        """The descriptor of `pack_id` valid for rows read at index `version`.

        Returns None when the index changed while checking: the caller must re-read its row.
        Raises FileNotFoundError when the pack file does not exist."""
        cache = self._cache()
        entry = cache.get(pack_id)
        if entry is not None and entry[1] == version:
            return entry[0]
        path = self.layout.pack_path(pack_id)
        st = os.stat(path)
        if entry is not None and entry[0].dev == st.st_dev and entry[0].ino == st.st_ino:
            pfd = entry[0]
        else:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            fst = os.fstat(fd)
            pfd = PackFd(fd, fst.st_dev, fst.st_ino, pack_id)
            if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
                return None  # replaced between stat and open: start again
        if data_version() != version:
            cache.pop(pack_id, None)
            return None
        cache[pack_id] = (pfd, version)
        return pfd

    def forget(self, pack_id: int) -> None:
        self._cache().pop(pack_id, None)

    def open_uncached(self, pack_id: int) -> PackFd:
        fd = os.open(self.layout.pack_path(pack_id), os.O_RDONLY | os.O_CLOEXEC)
        st = os.fstat(fd)
        return PackFd(fd, st.st_dev, st.st_ino, pack_id)


def list_pack_ids(layout: Layout) -> list[int]:
    """Pack ids present in packs/ (the names disk-objectstore would list), sorted."""
    try:
        names = os.listdir(layout.packs)
    except FileNotFoundError:
        return []
    return sorted(int(n) for n in names if is_valid_pack_name(n))


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


class PackAppender:
    """Appends to one pack under its O_EXCL lock file; buffered; `sync()` makes it durable."""

    def __init__(self, layout: Layout, pack_id: int) -> None:
        self.layout = layout
        self.pack_id = pack_id
        self.lock_path = layout.pack_lock_path(pack_id)
        self._take_lock()
        path = layout.pack_path(pack_id)
        try:
            self.created = not os.path.exists(path)
            self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
            self.start = os.fstat(self.fd).st_size
        except BaseException:
            self._drop_lock()
            raise
        self._flushed = self.start
        self._buf = bytearray()
        self._closed = False

    def _take_lock(self) -> None:
        # The lock must appear WITH its owner text (a crash between creating and writing it would
        # leave an anonymous lock that only a human can clear): write a private file, then
        # link() it to the lock name, which fails atomically if the lock exists.
        name = f"{TMP_LOCK_PREFIX}{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex}"
        tmp = os.path.join(self.layout.packs, name)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, _lock_owner_text())
        finally:
            os.close(fd)
        try:
            for _attempt in range(2):
                try:
                    os.link(tmp, self.lock_path)
                    return
                except FileExistsError:
                    if not _stale_dosfs_lock(self.lock_path):
                        break
                    try:
                        os.unlink(self.lock_path)
                    except FileNotFoundError:
                        pass
            raise LockedError(
                f"pack {self.pack_id} is locked by another writer ({self.lock_path} exists); "
                "if no process is writing to this container, remove that file"
            )
        finally:
            os.unlink(tmp)

    def _drop_lock(self) -> None:
        try:
            os.unlink(self.lock_path)
        except FileNotFoundError:
            pass

    def tell(self) -> int:
        """Absolute offset where the next byte goes."""
        return self._flushed + len(self._buf)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._buf += data
        if len(self._buf) >= WRITE_BUFFER:
            self.flush()

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
            self._drop_lock()

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
            self._drop_lock()
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
    "PackFd",
    "PackFiles",
    "list_pack_ids",
    "remove_stale_pack_locks",
]
