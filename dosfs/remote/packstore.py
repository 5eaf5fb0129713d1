"""RemotePackStore: the pack-store seam (dosfs.container.packstore) served from a published
generation. A pack is a list of immutable segments; `pread` maps a range onto them and reads
whole cache blocks with ranged GETs, fetching the missing ones (and, when the reads are
sequential, the next few) in parallel with one `get_ranges` call per segment."""

from __future__ import annotations

import errno
import threading
from collections.abc import Hashable

import obstore
from obstore.store import S3Store

from dosfs.remote.cache import BLOCK, BlockCache
from dosfs.remote.layout import Generation, Segment, remote_error
from dosfs.remote.url import RemoteURL

PREFETCH_BLOCKS = 4


class RemotePackSource:
    def __init__(self, store: RemotePackStore, pack_id: int, segments: list[Segment]) -> None:
        self._store = store
        self._pack_id = pack_id
        self._segments = segments
        self._size = sum(s.length for s in segments)
        self.identity: Hashable = tuple(s.key for s in segments)
        self._next = -1  # where the last read ended (sequential detection)
        self._lock = threading.Lock()

    def size(self) -> int:
        return self._size

    def describe(self) -> str:
        return f"{self._store.url} pack {self._pack_id}"

    def pread(self, size: int, offset: int) -> bytes:
        size = max(0, min(size, self._size - offset))
        with self._lock:
            sequential = offset == self._next
            self._next = offset + size
        out: list[bytes] = []
        start = 0
        for seg in self._segments:
            end = start + seg.length
            if size > 0 and offset < end and offset + size > start:
                lo = max(offset, start) - start
                hi = min(offset + size, end) - start
                out.append(self._store.read_segment(seg, lo, hi, sequential))
            start = end
        return b"".join(out)


class RemotePackStore:
    """Packs of one generation of `url`."""

    def __init__(
        self, store: S3Store, url: RemoteURL, generation: Generation, cache: BlockCache
    ) -> None:
        self.store = store
        self.url = url
        self.generation = generation
        self.cache = cache
        self.requests = 0

    def open(self, pack_id: int) -> RemotePackSource:
        segments = self.generation.packs.get(pack_id)
        if segments is None:
            raise FileNotFoundError(f"{self.url}: no pack {pack_id}")
        return RemotePackSource(self, pack_id, segments)

    def identity(self, pack_id: int) -> Hashable:
        segments = self.generation.packs.get(pack_id)
        if segments is None:
            raise FileNotFoundError(f"{self.url}: no pack {pack_id}")
        return tuple(s.key for s in segments)

    def list_ids(self) -> list[int]:
        return sorted(self.generation.packs)

    def read_segment(self, seg: Segment, lo: int, hi: int, sequential: bool) -> bytes:
        """Bytes [lo, hi) of one segment, through the cache."""
        first, last = lo // BLOCK, (hi - 1) // BLOCK
        nblocks = (seg.length + BLOCK - 1) // BLOCK
        blocks: dict[int, bytes] = {}
        missing = []
        for b in range(first, last + 1):
            data = self.cache.get(seg.key, b)
            if data is None:
                missing.append(b)
            else:
                blocks[b] = data
        if missing:
            if sequential:
                extra = range(last + 1, min(last + 1 + PREFETCH_BLOCKS, nblocks))
                missing += [b for b in extra if self.cache.get(seg.key, b) is None]
            starts = [b * BLOCK for b in missing]
            ends = [min((b + 1) * BLOCK, seg.length) for b in missing]
            try:
                got = obstore.get_ranges(
                    self.store, self.url.key(seg.key), starts=starts, ends=ends, coalesce=BLOCK
                )
            except Exception as exc:
                raise OSError(errno.EIO, str(remote_error(exc, self.url))) from exc
            self.requests += 1
            for b, chunk in zip(missing, got, strict=True):
                raw = bytes(chunk)
                self.cache.put(seg.key, b, raw)
                if first <= b <= last:
                    blocks[b] = raw
        joined = b"".join(blocks[b] for b in range(first, last + 1))
        base = first * BLOCK
        return joined[lo - base : hi - base]
