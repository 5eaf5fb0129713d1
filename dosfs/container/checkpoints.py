"""Where an inflate of a compressed object can start: cursors (a decompressor and its place),
and the checkpoints readers of the same stored object share within a process.

Why shared: every open through the mount is a new reader, and a reader without checkpoints
inflates from the object's start to reach an offset (120-200 ms for a 128 KiB read near the end
of a 64 MiB object). Checkpoints are immutable once made (a reader only ever copies one), so
readers of the same bytes (same key, pack file identity, offset and length) can use each other's:
after one pass over an object, any new reader starts within one checkpoint interval of any
offset. Bounded: at most SHARED_MAX checkpoints (each the zlib state plus at most FEED bytes of
input, ~80 KiB), least recently used objects first out.
"""

from __future__ import annotations

import threading
import zlib
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

#: checkpoints kept for all objects of this process together (~20 MiB)
SHARED_MAX = 256


class Cursor:
    """A decompressor and where it stands in the compressed bytes and in the output. `raw`:
    a raw inflater started at a restart point (no zlib header, no adler32 of the whole)."""

    __slots__ = ("dobj", "upos", "base", "buf", "off", "raw")

    def __init__(self, upos: int = 0, base: int = 0, raw: bool = False) -> None:
        self.dobj: Any = zlib.decompressobj(-15 if raw else 15)
        self.upos = upos  # uncompressed bytes produced so far
        self.base = base  # compressed offset (relative to the object start) of buf[0]
        self.buf = b""  # compressed bytes fetched from the pack
        self.off = 0  # how much of buf the decompressor has consumed
        self.raw = raw

    def copy(self) -> Cursor:
        other = Cursor.__new__(Cursor)
        other.dobj = self.dobj.copy()
        other.upos = self.upos
        other.base = self.base
        other.buf = self.buf
        other.off = self.off
        other.raw = self.raw
        return other

    def checkpoint(self) -> Cursor:
        """A copy that keeps no fetched bytes (only the compressed position to re-read from),
        so a checkpoint costs the decompressor state and at most FEED bytes of its input."""
        other = self.copy()
        other.base = self.base + self.off
        other.buf = b""
        other.off = 0
        return other


class SharedCheckpoints:
    """Checkpoints by stored object: key -> {uncompressed offset: checkpoint}."""

    def __init__(self, limit: int = SHARED_MAX) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._objects: OrderedDict[Hashable, dict[int, Cursor]] = OrderedDict()
        self._count = 0

    def get(self, key: Hashable) -> dict[int, Cursor]:
        """A copy of what is known for `key` (possibly empty)."""
        with self._lock:
            found = self._objects.get(key)
            if found is None:
                return {}
            self._objects.move_to_end(key)
            return dict(found)

    def add(self, key: Hashable, upos: int, cursor: Cursor) -> None:
        with self._lock:
            found = self._objects.setdefault(key, {})
            self._objects.move_to_end(key)
            if upos in found:
                return
            found[upos] = cursor
            self._count += 1
            while self._count > self.limit and self._objects:
                _key, dropped = self._objects.popitem(last=False)
                self._count -= len(dropped)

    def clear(self) -> None:
        with self._lock:
            self._objects.clear()
            self._count = 0


#: the process's table (a forked child starts with its parent's, which stays valid: checkpoints
#: are keyed by the pack file's identity)
SHARED = SharedCheckpoints()
