"""A bounded cache of byte ranges ("extents") of immutable remote objects: in memory, or on disk
in `cache_dir` (files written whole then renamed, so concurrent readers never see a torn one).

Why extents and not fixed blocks: a read fetches about the bytes it asks for (a small object is
1-64 KiB, and a 2 MiB block fetched 30x its bytes), while a sequential reader fetches long runs;
an extent is what one fetch brought, cut at PIECE boundaries (so one holds at most PIECE
bytes, one file each). Extents of one object never overlap: remote/packstore.py fetches only
what is neither cached nor in flight, and a put that would overlap anyway is dropped.

Files are named `<name>-<start>-<end>` (name: a hash of the object's key, start/end: bytes of
the object), so a file's name says which bytes it must hold, and one whose size does not match
is ignored. Remote objects are never overwritten, so a cached extent never goes stale and several
mounts may share one folder (each adopts what it finds at start and keeps to its own bound; an
extent another process evicted is a miss). Eviction: least recently used, by bytes.
"""

from __future__ import annotations

import bisect
import errno
import functools
import hashlib
import mmap
import os
import threading
from collections import OrderedDict
from pathlib import Path

#: the most bytes one extent (one file) holds
PIECE = 1024 * 1024
#: O_DIRECT wants buffers, offsets and sizes in multiples of the logical block size
ALIGN = 4096


class ExtentCache:
    def __init__(self, capacity: int = 256 * 1024 * 1024, folder: Path | None = None) -> None:
        self.capacity = max(capacity, PIECE)
        self.folder = folder
        self._lock = threading.Lock()
        self._lru: OrderedDict[tuple[str, int], int] = OrderedDict()  # (name, start) -> end
        self._starts: dict[str, list[int]] = {}  # name -> sorted starts of its extents
        self._mem: dict[tuple[str, int], bytes] = {}
        self._used = 0
        self.hits = 0
        self.misses = 0
        self._direct = folder is not None and hasattr(os, "O_DIRECT")
        self._local = threading.local()
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            self._adopt(folder)
            with self._lock:
                self._evict()

    def _adopt(self, folder: Path) -> None:
        """Take over the extents a previous run left; drop torn, overlapping or foreign files
        (and the 2 MiB block files of earlier versions, named `<name>-<block>`)."""
        found: dict[str, list[tuple[int, int]]] = {}
        for entry in os.scandir(folder):
            if not entry.is_file():
                continue
            parts = entry.name.split("-")
            ok = False
            if len(parts) == 3 and not entry.name.startswith(".") and all(
                    p.isdigit() for p in parts[1:]):
                start, end = int(parts[1]), int(parts[2])
                try:
                    ok = 0 <= start < end and entry.stat().st_size == end - start
                except OSError:
                    continue
                if ok:
                    found.setdefault(parts[0], []).append((start, end))
            if not ok and (entry.name.startswith(".tmp") or "-" in entry.name):
                _unlink(entry.path)  # a killed writer's file, or an old-format block
        for name, extents in found.items():
            extents.sort()
            last = -1
            for start, end in extents:
                if start < last:
                    _unlink(self._path(name, start, end))
                    continue
                last = end
                self._insert(name, start, end)

    def _path(self, name: str, start: int, end: int) -> str:
        return f"{self.folder}/{name}-{start}-{end}"

    @staticmethod
    @functools.lru_cache(maxsize=4096)
    def name(key: str) -> str:
        """The file-name stem of an object's extents (a few objects, asked on every read)."""
        return hashlib.sha256(key.encode()).hexdigest()[:32]

    def _insert(self, name: str, start: int, end: int) -> None:
        self._lru[(name, start)] = end
        bisect.insort(self._starts.setdefault(name, []), start)
        self._used += end - start

    def _remove(self, name: str, start: int) -> int:
        end = self._lru.pop((name, start), None)
        if end is None:
            return -1
        starts = self._starts[name]
        del starts[bisect.bisect_left(starts, start)]
        if not starts:
            del self._starts[name]
        self._used -= end - start
        self._mem.pop((name, start), None)
        return end

    def covered(self, key: str, lo: int, hi: int) -> list[tuple[int, int]]:
        """The extents (start, end) of `key` that overlap [lo, hi), in order."""
        name = self.name(key)
        out: list[tuple[int, int]] = []
        with self._lock:
            starts = self._starts.get(name)
            if not starts:
                return out
            i = max(bisect.bisect_right(starts, lo) - 1, 0)
            while i < len(starts) and starts[i] < hi:
                start = starts[i]
                end = self._lru[(name, start)]
                if end > lo:
                    out.append((start, end))
                i += 1
        return out

    def holds(self, key: str, lo: int, hi: int) -> bool:
        """Whether every byte of [lo, hi) is cached."""
        pos = lo
        for start, end in self.covered(key, lo, hi):
            if start > pos:
                return False
            pos = max(pos, end)
        return pos >= hi

    def read(self, key: str, start: int, lo: int, hi: int) -> bytes | None:
        """Bytes [lo, hi) (object offsets) of the extent starting at `start`, or None when it is
        not cached (any more)."""
        k = (self.name(key), start)
        with self._lock:
            end = self._lru.get(k)
            if end is None or not start <= lo <= hi <= end:
                return None
            self._lru.move_to_end(k)
            if self.folder is None:
                return self._mem[k][lo - start : hi - start]
        try:
            fd = os.open(self._path(k[0], start, end), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # evicted by another process sharing the folder
            with self._lock:
                self._remove(*k)
            return None
        try:
            data = os.pread(fd, hi - lo, lo - start)
        finally:
            os.close(fd)
        return data if len(data) == hi - lo else None

    def willneed(self, key: str, start: int) -> None:
        """Start reading a cached extent from disk now (a sequential reader is about to need
        it): each extent is a file of its own, so the kernel's readahead stops at its end."""
        k = (self.name(key), start)
        end = self._lru.get(k)
        if self.folder is None or end is None:
            return
        try:
            fd = os.open(self._path(k[0], start, end), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        finally:
            os.close(fd)

    def put(self, key: str, start: int, data: bytes, direct: bool = True) -> bool:
        """Keep bytes [start, start + len(data)) of `key`; False (nothing kept) when they
        overlap an extent already cached. Not `direct`: written through the page cache (they
        are read back soon)."""
        name = self.name(key)
        end = start + len(data)
        if not data or self.covered(key, start, end):
            return False
        if self.folder is not None:
            tmp = f"{self.folder}/.tmp{os.urandom(8).hex()}"
            try:
                self._write(tmp, data, direct)
                os.replace(tmp, self._path(name, start, end))
            except BaseException:
                _unlink(tmp)
                raise
        with self._lock:
            if self.covered_locked(name, start, end):  # raced with another put
                if self.folder is not None and self._lru.get((name, start)) != end:
                    _unlink(self._path(name, start, end))  # not the file the other one keeps
                return False
            self._insert(name, start, end)
            if self.folder is None:
                self._mem[(name, start)] = data
            self._evict()
        return True

    def covered_locked(self, name: str, start: int, end: int) -> bool:
        starts = self._starts.get(name)
        if not starts:
            return False
        i = bisect.bisect_right(starts, start) - 1
        if i >= 0 and self._lru[(name, starts[i])] > start:
            return True
        return i + 1 < len(starts) and starts[i + 1] < end

    def _write(self, path: str, data: bytes, direct: bool = True) -> None:
        """Write an extent file. With O_DIRECT where the filesystem has it: the bytes go to
        the disk without a copy into the page cache (on a small machine that copy, and the
        kernel's accounting of those pages, cost as much CPU as hashing them; the mount's
        readers have them in its own page cache anyway)."""
        if direct and self._direct and len(data) <= PIECE:
            buf = getattr(self._local, "buf", None)
            if buf is None:
                buf = self._local.buf = mmap.mmap(-1, PIECE)  # page-aligned, reused per thread
            padded = -(-len(data) // ALIGN) * ALIGN
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
                             | os.O_DIRECT, 0o644)
            except OSError:
                self._direct = False  # tmpfs and friends: buffered below
            else:
                try:
                    buf[: len(data)] = data
                    if padded > len(data):
                        buf[len(data) : padded] = bytes(padded - len(data))
                    view = memoryview(buf)[:padded]
                    try:
                        written = os.write(fd, view)
                    except OSError as exc:
                        if exc.errno != errno.EINVAL:
                            raise
                        self._direct = False  # O_DIRECT opened but not honoured
                        written = -1
                    finally:
                        view.release()
                    if written == -1:
                        pass
                    elif written != padded:
                        raise OSError(f"short write of a cache extent ({written} of {padded})")
                    elif padded > len(data):
                        os.ftruncate(fd, len(data))
                finally:
                    os.close(fd)
                if written != -1:
                    return
                _unlink(path)
        with open(path, "wb") as f:
            f.write(data)

    def _evict(self) -> None:
        while self._used > self.capacity and self._lru:
            (name, start), end = next(iter(self._lru.items()))
            self._remove(name, start)
            if self.folder is not None:
                _unlink(self._path(name, start, end))

    @property
    def used(self) -> int:
        return self._used


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
