"""RemotePackStore: the pack-store seam (dosfs.container.packstore) served from a published
generation. A pack is a list of immutable segments; `pread` maps a range onto them and reads
whole cache blocks (2 MiB) with ranged GETs.

Why a pool of fetchers: one GET stream from a gateway runs at a fraction of what several in
parallel do, and a reader that waits for each block in turn leaves the link idle while it
hashes and hands out bytes. So a read that continues where the previous one on the same pack
ended (sequential, give or take the kernel's reordering) schedules the next PREFETCH_BLOCKS
blocks in the background; a reader that needs a block already being fetched waits for that
fetch instead of starting its own.

Why one deadline per read: a read may wait on several blocks, and a server that is down or
frozen must cost the reader one timeout, not one per block. The deadline is the caller's
(packstore.deadline, set when the FUSE request arrived) or now + timeout; every wait takes what
is left of it, and the reader gets RemoteIOError (EIO) when it runs out. Reads never wait when
the caller cannot (packstore.local_only): the bytes held in the cache are served, anything else
is WouldBlock (the fetch is started first, so the thread that retries finds it in flight).
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import obstore
from obstore.store import S3Store

from dosfs.container.packstore import WouldBlock, current_deadline, is_local_only
from dosfs.remote.cache import BLOCK, BlockCache
from dosfs.remote.layout import Generation, Segment, remote_error
from dosfs.remote.url import RemoteIOError, RemoteURL

log = logging.getLogger("dosfs.remote")

#: blocks fetched ahead of a sequential reader (64 MiB), blocks per GET (16 MiB), GETs in
#: flight at most
PREFETCH_BLOCKS = 48
SPAN_BLOCKS = 16
FETCHERS = 3
#: cached blocks a sequential reader asks the kernel to read ahead from the cache disk
READAHEAD_BLOCKS = 8
#: stream pieces handed over by the client while a GET runs
CHUNK = 256 * 1024


class RemotePackSource:
    #: reads may wait on the server (see dosfs.container.packstore, "Blocking")
    blocking = True

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

    def deadline(self) -> float:
        """When the read in this thread must have its bytes: the caller's deadline, never
        later than the store's timeout from now."""
        own = time.monotonic() + self.timeout
        given = current_deadline()
        return own if given is None else min(own, given)

    def read_segment(self, seg: Segment, lo: int, hi: int, sequential: bool) -> bytes:
        """Bytes [lo, hi) of one segment, through the cache."""
        first, last = lo // BLOCK, (hi - 1) // BLOCK
        parts: list[bytes | int | Future[bytes]] = []
        for b in range(first, last + 1):
            blo = max(lo - b * BLOCK, 0)
            bhi = min(hi - b * BLOCK, BLOCK)
            data = self.cache.read(seg.key, b, blo, bhi)
            parts.append(b if data is None else data)
        missing = [p for p in parts if isinstance(p, int)]
        if missing and is_local_only():
            self.pool.fetch_run(seg, missing[0], missing[-1] + 1)
            raise WouldBlock(f"{seg.key} [{lo}, {hi})")
        if missing:
            lo_b, hi_b = missing[0], missing[-1] + 1
            futures = dict(zip(range(lo_b, hi_b), self.pool.fetch_run(seg, lo_b, hi_b),
                               strict=True))
            parts = [futures[p] if isinstance(p, int) else p for p in parts]
        if sequential:
            nblocks = (seg.length + BLOCK - 1) // BLOCK
            self.pool.prefetch(seg, last + 1, min(last + 1 + PREFETCH_BLOCKS, nblocks))
            self.pool.readahead(seg, last + 1, min(last + 1 + READAHEAD_BLOCKS, nblocks))
        out = []
        when = self.deadline()
        for b, part in zip(range(first, last + 1), parts, strict=True):
            if isinstance(part, bytes):
                out.append(part)
                continue
            assert isinstance(part, Future)
            try:
                block = part.result(timeout=max(0.0, when - time.monotonic()))
            except FutureTimeout:
                raise RemoteIOError(
                    errno.EIO, f"{self.url}: no answer within {self.timeout:g} s"
                ) from None
            out.append(block[max(lo - b * BLOCK, 0) : min(hi - b * BLOCK, BLOCK)])
        return b"".join(out)


class FetchPool:
    """Block fetches in flight, each block at most once at a time. A run of neighbouring blocks
    is one GET streamed block by block (a gateway serves one long GET far faster than many
    short ones); each block's waiters are woken as soon as its bytes are in."""

    def __init__(self, store: S3Store, url: RemoteURL, cache: BlockCache) -> None:
        self.store = store
        self.url = url
        self.cache = cache
        self.requests = 0
        self.bytes_fetched = 0
        self._lock = threading.Lock()
        self._inflight: dict[tuple[str, int], Future[bytes]] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._warned = False
        self._advised: OrderedDict[tuple[str, int], None] = OrderedDict()

    def fetch(self, seg: Segment, block: int) -> Future[bytes]:
        """The block's bytes, fetched once however many readers ask."""
        return self.fetch_run(seg, block, block + 1)[0]

    def fetch_run(self, seg: Segment, first: int, end: int) -> list[Future[bytes]]:
        """Futures of blocks [first, end); those not in flight yet are fetched in runs of at
        most SPAN_BLOCKS, one GET each."""
        futures: list[Future[bytes]] = []
        todo: list[int] = []
        with self._lock:
            for b in range(first, end):
                future = self._inflight.get((seg.key, b))
                if future is None:
                    future = Future()
                    self._inflight[(seg.key, b)] = future
                    todo.append(b)
                futures.append(future)
            if todo and self._executor is None:
                self._executor = ThreadPoolExecutor(FETCHERS, thread_name_prefix="s3-fetch")
            runs: list[list[int]] = []
            for b in todo:
                if runs and runs[-1][-1] == b - 1 and len(runs[-1]) < SPAN_BLOCKS:
                    runs[-1].append(b)
                else:
                    runs.append([b])
            for run in runs:
                assert self._executor is not None
                self._executor.submit(self._get_run, seg, run[0], run[-1] + 1)
        return futures

    def prefetch(self, seg: Segment, first: int, end: int) -> None:
        """Fetch what of blocks [first, end) is neither cached nor in flight, in whole spans
        (a run shorter than SPAN_BLOCKS waits for the reader to move on, unless it ends the
        segment): one long GET rather than one per block."""
        last_block = (seg.length - 1) // BLOCK
        wanted = [b for b in range(first, end)
                  if (seg.key, b) not in self._inflight and (seg.key, b) not in self.cache]
        i = 0
        while i < len(wanted):
            j = i
            while j + 1 < len(wanted) and wanted[j + 1] == wanted[j] + 1:
                j += 1
            if j - i + 1 >= SPAN_BLOCKS or wanted[j] == last_block:
                self.fetch_run(seg, wanted[i], wanted[j] + 1)
            i = j + 1

    def readahead(self, seg: Segment, first: int, end: int) -> None:
        """Ask the kernel to read cached blocks [first, end) from the cache disk, each once."""
        for b in range(first, end):
            key = (seg.key, b)
            if key in self._advised:
                continue
            self._advised[key] = None
            if len(self._advised) > 4 * READAHEAD_BLOCKS:
                self._advised.popitem(last=False)
            self.cache.willneed(seg.key, b)

    def _get_run(self, seg: Segment, first: int, end: int) -> None:
        start = first * BLOCK
        stop = min(end * BLOCK, seg.length)
        block = done = first
        pending: list[memoryview] = []
        have = 0
        try:
            try:
                self.requests += 1
                result = obstore.get(self.store, self.url.key(seg.key),
                                     options={"range": (start, stop)})
                for chunk in result.stream(min_chunk_size=CHUNK):
                    view = memoryview(chunk)
                    while view.nbytes and block < end:
                        need = min(BLOCK, stop - block * BLOCK) - have
                        pending.append(view[:need])
                        have += min(need, view.nbytes)
                        view = view[need:]
                        if have == min(BLOCK, stop - block * BLOCK):
                            self._deliver(seg, block, b"".join(pending))
                            pending, have = [], 0
                            block += 1
                            done = block
            except Exception as exc:
                raise RemoteIOError(errno.EIO, str(remote_error(exc, self.url))) from exc
            if done < end:
                raise RemoteIOError(errno.EIO, f"{self.url}: {seg.key} is shorter than published")
        except OSError as exc:
            with self._lock:
                failed = [self._inflight.pop((seg.key, b), None) for b in range(done, end)]
            for future in failed:
                if future is not None:
                    future.set_exception(exc)

    def _deliver(self, seg: Segment, block: int, data: bytes) -> None:
        """Wake the block's waiters first, then store it: the future stays in flight (done)
        until the cache has the block, so nobody fetches it again meanwhile."""
        with self._lock:
            future = self._inflight.get((seg.key, block))
            self.bytes_fetched += len(data)
        if future is not None:
            future.set_result(data)
        try:
            self.cache.put(seg.key, block, data)
        except OSError as exc:  # a full cache disk: serve the bytes, say it once
            if not self._warned:
                self._warned = True
                log.warning("cache: cannot store blocks (%s); reading from %s only", exc,
                            self.url)
        finally:
            with self._lock:
                self._inflight.pop((seg.key, block), None)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
