"""A bounded cache of fixed-size blocks of immutable remote objects: in memory, or on disk in
`cache_dir` (files written whole then renamed, so concurrent readers never see a torn block).
Blocks are keyed by object name and number; remote objects are never overwritten, so a cached
block never goes stale. Eviction: least recently used, by bytes."""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

BLOCK = 2 * 1024 * 1024


class BlockCache:
    def __init__(self, capacity: int = 256 * 1024 * 1024, folder: Path | None = None) -> None:
        self.capacity = max(capacity, BLOCK)
        self.folder = folder
        self._lock = threading.Lock()
        self._lru: OrderedDict[tuple[str, int], int] = OrderedDict()
        self._mem: dict[tuple[str, int], bytes] = {}
        self._used = 0
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            for entry in os.scandir(folder):  # adopt what a previous run left
                if entry.is_file() and "-" in entry.name and not entry.name.startswith("."):
                    name, _, block = entry.name.rpartition("-")
                    if block.isdigit():
                        size = entry.stat().st_size
                        self._lru[(name, int(block))] = size
                        self._used += size
            self._evict()

    def _path(self, name: str, block: int) -> Path:
        assert self.folder is not None
        return self.folder / f"{name}-{block}"

    @staticmethod
    def name(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()[:32]

    def get(self, key: str, block: int) -> bytes | None:
        k = (self.name(key), block)
        with self._lock:
            if k not in self._lru:
                return None
            self._lru.move_to_end(k)
            if self.folder is None:
                return self._mem[k]
        try:
            return self._path(*k).read_bytes()
        except FileNotFoundError:
            with self._lock:
                self._used -= self._lru.pop(k, 0)
            return None

    def put(self, key: str, block: int, data: bytes) -> None:
        k = (self.name(key), block)
        if self.folder is not None:
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
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

    def _evict(self) -> None:
        while self._used > self.capacity and self._lru:
            k, size = self._lru.popitem(last=False)
            self._used -= size
            if self.folder is None:
                self._mem.pop(k, None)
            else:
                try:
                    self._path(*k).unlink()
                except FileNotFoundError:
                    pass

    @property
    def used(self) -> int:
        return self._used
