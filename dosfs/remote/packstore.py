"""RemotePackStore: the pack-store seam (dosfs.container.packstore) served from a published
generation. A pack is a list of immutable segments; `pread` maps a range onto them and reads
whole cache blocks (2 MiB) with ranged GETs.

Why a pool of fetchers: one GET stream from a gateway runs at a fraction of what several in
parallel do, and a reader that waits for each block in turn leaves the link idle while it
hashes and hands out bytes. So a read that continues where the previous one on the same pack
ended (sequential, give or take the kernel's reordering) schedules the next PREFETCH_BLOCKS
blocks in the background; a reader that needs a block already being fetched waits for that
fetch instead of starting its own. Every wait is bounded by the store's timeout: a server that
is down or stuck is EIO, never a hang.
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import obstore
from obstore.store import S3Store

from dosfs.remote.cache import BLOCK, BlockCache
from dosfs.remote.layout import Generation, Segment, remote_error
from dosfs.remote.url import RemoteURL

log = logging.getLogger("dosfs.remote")

#: blocks fetched ahead of a sequential reader (16 MiB), and GETs in flight at most
PREFETCH_BLOCKS = 8
FETCHERS = 8


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
            # The kernel issues readahead out of order across worker threads: "sequential"
            # means near where the last read ended.
            sequential = self._next >= 0 and abs(offset - self._next) <= 2 * BLOCK
            self._next = max(self._next, offset + size) if sequential else offset + size
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
    """Packs of one generation of `url` (several generations may share `cache` and `pool`)."""

    def __init__(
        self,
        store: S3Store,
        url: RemoteURL,
        generation: Generation,
        cache: BlockCache,
        *,
        timeout: float = 30.0,
        pool: FetchPool | None = None,
    ) -> None:
        self.store = store
        self.url = url
        self.generation = generation
        self.cache = cache
        self.timeout = timeout
        self.pool = pool if pool is not None else FetchPool(store, url, cache)

    @property
    def requests(self) -> int:
        return self.pool.requests

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
        parts: list[bytes | Future[bytes]] = []
        for b in range(first, last + 1):
            blo = max(lo - b * BLOCK, 0)
            bhi = min(hi - b * BLOCK, BLOCK)
            data = self.cache.read(seg.key, b, blo, bhi)
            parts.append(data if data is not None else self.pool.fetch(seg, b))
        if sequential:
            nblocks = (seg.length + BLOCK - 1) // BLOCK
            for b in range(last + 1, min(last + 1 + PREFETCH_BLOCKS, nblocks)):
                self.pool.prefetch(seg, b)
        out = []
        for b, part in zip(range(first, last + 1), parts, strict=True):
            if isinstance(part, bytes):
                out.append(part)
                continue
            try:
                block = part.result(timeout=self.timeout)
            except FutureTimeout:
                raise OSError(
                    errno.EIO, f"{self.url}: no answer within {self.timeout:g} s"
                ) from None
            out.append(block[max(lo - b * BLOCK, 0) : min(hi - b * BLOCK, BLOCK)])
        return b"".join(out)


class FetchPool:
    """Block fetches in flight, each block at most once at a time."""

    def __init__(self, store: S3Store, url: RemoteURL, cache: BlockCache) -> None:
        self.store = store
        self.url = url
        self.cache = cache
        self.requests = 0
        self._lock = threading.Lock()
        self._inflight: dict[tuple[str, int], Future[bytes]] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._warned = False

    def fetch(self, seg: Segment, block: int) -> Future[bytes]:
        """The block's bytes, fetched once however many readers ask."""
        key = (seg.key, block)
        with self._lock:
            future = self._inflight.get(key)
            if future is None:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(FETCHERS, thread_name_prefix="s3-fetch")
                future = self._executor.submit(self._get, seg, block)
                self._inflight[key] = future
            return future

    def prefetch(self, seg: Segment, block: int) -> None:
        if (seg.key, block) not in self.cache and (seg.key, block) not in self._inflight:
            self.fetch(seg, block)

    def _get(self, seg: Segment, block: int) -> bytes:
        try:
            start = block * BLOCK
            end = min(start + BLOCK, seg.length)
            try:
                data = bytes(obstore.get_range(self.store, self.url.key(seg.key), start=start,
                                               end=end))
            except Exception as exc:
                raise OSError(errno.EIO, str(remote_error(exc, self.url))) from exc
            if len(data) != end - start:
                raise OSError(errno.EIO, f"{self.url}: {seg.key} is shorter than published")
            self.requests += 1
            try:
                self.cache.put(seg.key, block, data)
            except OSError as exc:  # a full cache disk: serve the bytes, say it once
                if not self._warned:
                    self._warned = True
                    log.warning("cache: cannot store blocks (%s); reading from %s only", exc,
                                self.url)
            return data
        finally:
            with self._lock:
                self._inflight.pop((seg.key, block), None)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
