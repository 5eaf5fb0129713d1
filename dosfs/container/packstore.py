"""Where pack bytes come from: the pack-store seam, its local implementation, and the cache of
open packs that can never serve another file's bytes.

The seam. Every reader of pack bytes (single reads, streams, bulk, validate, repack) goes
through a `PackStore`: `open(pack_id)` gives a `PackSource` pinned to the pack as it is now
(`read_at`, `size`, `identity`), `identity(pack_id)` tells cheaply whether the pack was replaced
since. `LocalPackStore` serves `packs/N` files; a remote store (ranged GETs with a cache) plugs
in here without touching any reader.

Pinned files. A `PinnedFile` is an open descriptor (a pack or a loose file) closed only when
nobody holds it any more, so a reader keeps reading the file it resolved, even after the loose
file was removed or the pack replaced (POSIX keeps an unlinked file's bytes for its openers).

The cache. A pack can be *replaced* (a repack writes a new file under the same number, by any
process, dosfs or disk-objectstore). Every repack moves the rows away from a pack (a commit)
before it removes or replaces the file, and moves them back (another commit) only after the new
file is in place. So a source whose identity was checked while the index was at stamp S (see
index.py: data_version tied to its connection) is the right file for every row read at S.
Entries remember S; when a row comes with another stamp, the entry is re-checked with one
`identity()` call, bracketed by a second look at the stamp (if a commit slipped in between, the
caller re-reads its row). Caches are per thread (like the connections whose stamps they hold)
and are dropped in a forked child.

Blocking. A source says whether its `read_at` may wait on the network (`blocking`): a local file
never does (a page-cache read is served in the caller's thread); a remote one may. A caller that
must not wait (the FUSE loop, a CPU worker) reads inside `local_only()`: a blocking source then
serves what it holds locally and raises `WouldBlock` for anything else, and the caller retries
on a thread that may wait. A caller that may wait can bound it with `deadline(when)`: one
monotonic deadline for everything the read does, retries included.
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections.abc import Callable, Hashable, Iterator
from typing import Protocol

from dosfs.container.config import Layout, is_valid_pack_name


def pread_exact(fd: int, size: int, offset: int) -> bytes:
    """os.pread that loops on partial reads; may return fewer bytes only at end of file."""
    data = os.pread(fd, size, offset)
    if len(data) == size or not data:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = os.pread(fd, size - got, offset + got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


#: PinnedFile.bulk_gap: bulk reads of local packs read through gaps up to this
LOCAL_GAP = 256 * 1024


class Unavailable(OSError):
    """The bytes could not be had in time (a server refused, failed or did not answer):
    EIO, and no statement about the object itself."""


class WouldBlock(Exception):  # noqa: N818 - a signal to retry elsewhere, not a failure
    """Inside `local_only()`: the bytes asked for are not local, reading them would wait."""


class _Wait(threading.local):
    local_only = False
    deadline: float | None = None


_wait = _Wait()


@contextlib.contextmanager
def local_only() -> Iterator[None]:
    """Reads in this thread serve local bytes only (WouldBlock otherwise)."""
    previous, _wait.local_only = _wait.local_only, True
    try:
        yield
    finally:
        _wait.local_only = previous


def is_local_only() -> bool:
    return _wait.local_only


@contextlib.contextmanager
def deadline(when: float | None) -> Iterator[None]:
    """Reads in this thread give up at `when` (time.monotonic()), whatever they wait for."""
    previous, _wait.deadline = _wait.deadline, when
    try:
        yield
    finally:
        _wait.deadline = previous


def current_deadline() -> float | None:
    """The deadline set by `deadline()` in this thread, if any."""
    return _wait.deadline


class PackSource(Protocol):
    """The bytes of one pack (or loose file) as they were when it was opened."""

    @property
    def identity(self) -> Hashable: ...

    @property
    def blocking(self) -> bool:
        """Whether `read_at` may wait on the network (see "Blocking" above)."""
        ...

    def read_at(self, offset: int, size: int, stop: int | None = None) -> bytes:
        """Up to `size` bytes at `offset`; fewer only at the end. `stop`: where the object
        being read ends, if the caller knows (a remote source reads ahead up to it). Offset
        first, as ObjectReader.pread (not os.pread's order): one order everywhere."""
        ...

    def size(self) -> int: ...

    def describe(self) -> str:
        """Where the bytes live, for error messages."""
        ...

    def will_read(self, ranges: list[tuple[int, int]]) -> None:
        """Hint: the [start, end) ranges a bulk read will read, all of them, in this order (a
        remote source fetches them ahead of the reads, within a bound; a local one ignores
        it)."""
        ...

    @property
    def bulk_gap(self) -> int:
        """The most unwanted bytes between two objects that a bulk read reads through rather
        than skipping: a local file reads them from the page cache almost for free, a remote
        source downloads each one."""
        ...


class PackStore(Protocol):
    """Opens packs by id; the one place pack bytes come from."""

    def open(self, pack_id: int) -> PackSource:
        """Raises FileNotFoundError when there is no such pack."""
        ...

    def identity(self, pack_id: int) -> Hashable:
        """What `open(pack_id).identity` would be now; FileNotFoundError when absent."""
        ...

    def list_ids(self) -> list[int]:
        """Pack ids present, sorted."""
        ...


class PinnedFile:
    """An open file descriptor, closed when the last reference goes away."""

    __slots__ = ("fd", "identity", "path", "opened_size", "__weakref__")

    #: a local file: reads never wait on the network
    blocking = False
    #: reading through a gap is cheaper than another pread, up to this
    bulk_gap = LOCAL_GAP

    def __init__(self, fd: int, identity: tuple[int, int], path: str, opened_size: int) -> None:
        self.fd = fd
        self.identity = identity
        self.path = path
        self.opened_size = opened_size  # size when opened (a loose object's size)

    @classmethod
    def open(cls, path: str) -> PinnedFile:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, (st.st_dev, st.st_ino), path, st.st_size)

    def read_at(self, offset: int, size: int, stop: int | None = None) -> bytes:
        return pread_exact(self.fd, size, offset)

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def describe(self) -> str:
        return self.path

    def will_read(self, ranges: list[tuple[int, int]]) -> None:
        """Local bytes: nothing to start."""

    def __del__(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass


class LocalPackStore:
    """packs/N files of a container folder."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def open(self, pack_id: int) -> PinnedFile:
        return PinnedFile.open(self.layout.pack_path(pack_id))

    def identity(self, pack_id: int) -> tuple[int, int]:
        st = os.stat(self.layout.pack_path(pack_id))
        return st.st_dev, st.st_ino

    def list_ids(self) -> list[int]:
        return list_pack_ids(self.layout)


def list_pack_ids(layout: Layout) -> list[int]:
    """Pack ids present in packs/ (the names disk-objectstore would list), sorted."""
    try:
        names = os.listdir(layout.packs)
    except FileNotFoundError:
        return []
    return sorted(int(n) for n in names if is_valid_pack_name(n))


class _ThreadCache:
    """One thread's entries; weakly registered so `clear()` reaches every live thread and a
    finished thread's entries (and descriptors) go with it."""

    __slots__ = ("entries", "__weakref__")

    def __init__(self) -> None:
        self.entries: dict[int, tuple[PackSource, int]] = {}


class _Local(threading.local):
    gen: int = -1
    cache: _ThreadCache


_ALL_CACHES: weakref.WeakSet[PackCache] = weakref.WeakSet()


def _after_fork() -> None:
    for cache in list(_ALL_CACHES):
        cache._lock = threading.Lock()
        cache.clear()


os.register_at_fork(after_in_child=_after_fork)


class PackCache:
    """Per-thread cache of open packs, each valid for the index stamp it was checked at."""

    def __init__(self, store: PackStore) -> None:
        self.store = store
        self._local = _Local()
        self._gen = 0
        self._lock = threading.Lock()
        self._threads: weakref.WeakSet[_ThreadCache] = weakref.WeakSet()
        _ALL_CACHES.add(self)

    def clear(self) -> None:
        """Forget every cached source, in all threads (their descriptors close once no reader
        holds them)."""
        with self._lock:
            self._gen += 1
            caches = list(self._threads)
            self._threads = weakref.WeakSet()
        for cache in caches:
            cache.entries.clear()

    def _cache(self) -> dict[int, tuple[PackSource, int]]:
        local = self._local
        if local.gen != self._gen:
            local.cache = _ThreadCache()
            local.gen = self._gen
            with self._lock:
                self._threads.add(local.cache)
        return local.cache.entries

    def get(self, pack_id: int, stamp: int, current: Callable[[], int]) -> PackSource | None:
        """The source of `pack_id` valid for rows read at `stamp`.

        Returns None when the index changed while checking: the caller must re-read its row.
        Raises FileNotFoundError when the pack does not exist."""
        cache = self._cache()
        entry = cache.get(pack_id)
        if entry is not None and entry[1] == stamp:
            return entry[0]
        identity = self.store.identity(pack_id)
        if entry is not None and entry[0].identity == identity:
            source = entry[0]
        else:
            source = self.store.open(pack_id)
            if source.identity != identity:
                return None  # replaced between the check and the open: start again
        if current() != stamp:
            cache.pop(pack_id, None)
            return None
        cache[pack_id] = (source, stamp)
        return source

    def cached(self, pack_id: int, stamp: int) -> PackSource | None:
        """The source of `pack_id` if this thread holds one checked at `stamp`, else None
        (then ask `get`): the hit of `get` without its fallbacks, for the hottest path."""
        local = self._local
        if local.gen != self._gen:
            return None
        entry = local.cache.entries.get(pack_id)
        if entry is not None and entry[1] == stamp:
            return entry[0]
        return None

    def forget(self, pack_id: int) -> None:
        self._cache().pop(pack_id, None)

    def open_uncached(self, pack_id: int) -> PackSource:
        return self.store.open(pack_id)
