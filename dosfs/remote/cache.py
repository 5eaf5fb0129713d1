"""A bounded cache of fixed-size blocks of immutable remote objects: in memory, or on disk in
`cache_dir` (files written whole then renamed, so concurrent readers never see a torn block).
Blocks are keyed by object name and number; remote objects are never overwritten, so a cached
block never goes stale and several mounts may share one folder. Eviction: least recently used,
by bytes. Reads take the range they need (a 128 KiB FUSE read of a cached 2 MiB block reads
128 KiB)."""

from __future__ import annotations

import errno
import functools
import hashlib
import mmap
import os
import threading
from collections import OrderedDict
from pathlib import Path

BLOCK = 2 * 1024 * 1024
#: O_DIRECT wants buffers, offsets and sizes in multiples of the logical block size
ALIGN = 4096


class BlockCache:
    def __init__(self, capacity: int = 256 * 1024 * 1024, folder: Path | None = None) -> None:
        self.capacity = max(capacity, BLOCK)
        self.folder = folder
        self._lock = threading.Lock()
        self._lru: OrderedDict[tuple[str, int], int] = OrderedDict()
        self._mem: dict[tuple[str, int], bytes] = {}
        self._used = 0
        self.hits = 0
        self.misses = 0
        self._direct = folder is not None and hasattr(os, "O_DIRECT")
        self._local = threading.local()
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            for entry in os.scandir(folder):  # adopt what a previous run left
                if entry.is_file() and "-" in entry.name and not entry.name.startswith("."):
                    name, _, block = entry.name.rpartition("-")
                    if block.isdigit():
                        size = entry.stat().st_size
                        self._lru[(name, int(block))] = size
                        self._used += size
                elif entry.name.startswith(".tmp"):  # a block a killed reader was writing
                    try:
                        os.unlink(entry.path)
                    except OSError:
                        pass
            self._evict()

    def _path(self, name: str, block: int) -> str:
        assert self.folder is not None
        return f"{self.folder}/{name}-{block}"

    @staticmethod
    @functools.lru_cache(maxsize=4096)
    def name(key: str) -> str:
        """The file name of a segment's blocks (a few segments, asked for on every read)."""
        return hashlib.sha256(key.encode()).hexdigest()[:32]

    def __contains__(self, item: tuple[str, int]) -> bool:
        return (self.name(item[0]), item[1]) in self._lru

    def get(self, key: str, block: int) -> bytes | None:
        """The whole block, or None."""
        return self.read(key, block, 0, BLOCK)

    def read(self, key: str, block: int, lo: int, hi: int) -> bytes | None:
        """Bytes [lo, hi) of a cached block (fewer at its end), or None when not cached."""
        k = (self.name(key), block)
        with self._lock:
            if k not in self._lru:
                self.misses += 1
                return None
            self._lru.move_to_end(k)
            self.hits += 1
            if self.folder is None:
                return self._mem[k][lo:hi]
        try:
            fd = os.open(self._path(*k), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # evicted by another process sharing the folder
            with self._lock:
                self._used -= self._lru.pop(k, 0)
            return None
        try:
            return os.pread(fd, hi - lo, lo)
        finally:
            os.close(fd)

    def willneed(self, key: str, block: int) -> None:
        """Start reading a cached block from disk now (a sequential reader is about to need
        it): each block is a file of its own, so the kernel's readahead stops at its end."""
        k = (self.name(key), block)
        if self.folder is None or k not in self._lru:
            return
        try:
            fd = os.open(self._path(*k), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        finally:
            os.close(fd)

    def put(self, key: str, block: int, data: bytes) -> None:
        k = (self.name(key), block)
        if self.folder is not None:
            tmp = f"{self.folder}/.tmp{os.urandom(8).hex()}"
            try:
                self._write(tmp, data)
                os.replace(tmp, self._path(*k))
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
        with self._lock:
            self._used -= self._lru.pop(k, 0)
            self._lru[k] = len(data)
            self._used += len(data)
            if self.folder is None:
                self._mem[k] = data
            self._evict()

    def _write(self, path: str, data: bytes) -> None:
        """Write a block file. With O_DIRECT where the filesystem has it: the bytes go to the
        disk without a copy into the page cache (on a small machine that copy, and the kernel's
        accounting of those pages, cost as much CPU as hashing them; the mount's readers have
        them in its own page cache anyway)."""
        if self._direct:
            buf = getattr(self._local, "buf", None)
            if buf is None:
                buf = self._local.buf = mmap.mmap(-1, BLOCK)  # page-aligned, reused per thread
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
                        raise OSError(f"short write of a cache block ({written} of {padded})")
                    elif padded > len(data):
                        os.ftruncate(fd, len(data))
                finally:
                    os.close(fd)
                if written != -1:
                    return
        with open(path, "wb") as f:
            f.write(data)

    def _evict(self) -> None:
        while self._used > self.capacity and self._lru:
            k, size = self._lru.popitem(last=False)
            self._used -= size
            if self.folder is None:
                self._mem.pop(k, None)
            else:
                try:
                    os.unlink(self._path(*k))
                except FileNotFoundError:
                    pass

    @property
    def used(self) -> int:
        return self._used
