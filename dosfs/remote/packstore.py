"""RemotePackStore: the pack-store seam (dosfs.container.packstore) served from a published
generation. A pack is a list of immutable segments; `read_at` maps a range onto them and reads
it through the extent cache (remote/cache.py) with ranged GETs.

Why fetch what is read: a miss fetches the bytes asked for, rounded out to MISS_ALIGN (and
never what is cached or already in flight), so random small reads download about their own
size. Why read-ahead only for sequential readers, growing with the run: a reader that goes on
where it stopped (within NEAR: the kernel reorders its readahead) is a stream; from its second
read on, the next `window` bytes are fetched ahead, where `window` is the run so far (at least
MIN_AHEAD, at most MAX_AHEAD): it doubles as the run doubles, as the kernel and mountpoint-s3
do. Read-ahead never passes the end of the object being read (the reader says where it ends),
so a whole-object read downloads the object. Read-ahead GETs (up to SPAN bytes, several in
flight) run on fetchers of their own, so a reader's miss never queues behind them; a reader
that needs bytes already in flight waits for that fetch instead of starting its own.

Why one deadline per read: a read may wait on several fetches, and a server that is down or
frozen must cost the reader one timeout, not one per fetch. The deadline is the caller's
(packstore.deadline, set when the FUSE request arrived) or now + timeout; every wait takes what
is left of it, and the reader gets RemoteIOError (EIO) when it runs out. Reads never wait when
the caller cannot (packstore.local_only): bytes held in the cache (or fetched already) are
served, anything else is WouldBlock (the fetch is started first, so the thread that retries
finds it in flight).
"""

from __future__ import annotations

import errno
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Hashable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from obstore.store import S3Store

from dosfs.container.packstore import WouldBlock, current_deadline, is_local_only
from dosfs.remote.cache import ExtentCache
from dosfs.remote.fetch import FetchPool
from dosfs.remote.layout import Generation, Segment
from dosfs.remote.url import RemoteIOError, RemoteURL

#: read-ahead of a sequential reader: from MIN_AHEAD, as long as its run, up to MAX_AHEAD
MIN_AHEAD = 1024 * 1024
MAX_AHEAD = 64 * 1024 * 1024
#: a read starting this close to where a stream stopped continues it
NEAR = 4 * 1024 * 1024
#: streams remembered per open pack
STREAMS = 16
#: bytes ahead of a sequential reader that the kernel is asked to read from the cache disk
ADVISE_AHEAD = 8 * 1024 * 1024


class _Stream:
    """One sequential reader of one object: where it is, how long it has run, and how far
    ahead of it bytes were asked for."""

    __slots__ = ("next", "run", "reads", "ahead")

    def __init__(self, end: int, size: int) -> None:
        self.next = end
        self.run = size
        self.reads = 1
        self.ahead = end


class RemotePackSource:
    #: reads may wait on the server (see dosfs.container.packstore, "Blocking")
    blocking = True
    @property
    def bulk_gap(self) -> int:
        """A bulk read reads through (and downloads) gaps up to this between the objects it
        wants (remote/fetch.py: wider when the server is near)."""
        return self._store.pool.bulk_plan()[0]

    def __init__(self, store: RemotePackStore, pack_id: int, segments: list[Segment]) -> None:
        self._store = store
        self._pack_id = pack_id
        self._segments = segments
        self._size = sum(s.length for s in segments)
        self.identity: Hashable = tuple(s.key for s in segments)
        self._streams: OrderedDict[tuple[int, int], _Stream] = OrderedDict()
        self._lock = threading.Lock()
        #: a bulk read's plan (will_read): ranges not started yet, and started but not reached
        self._plan: deque[tuple[int, int]] = deque()
        self._started: deque[tuple[int, int]] = deque()
        self._ahead = 0

    def size(self) -> int:
        return self._size

    def describe(self) -> str:
        return f"{self._store.url} pack {self._pack_id}"

    def _advance(self, offset: int, end: int, stop: int | None) -> tuple[int, int] | None:
        """Note a read of [offset, end) of an object ending at `stop`; the range to fetch
        ahead of it now, if any. A read repeated (a retry off the loop) changes nothing."""
        if stop is None:
            return None  # the caller did not say where its object ends: no read-ahead
        with self._lock:
            stream = None
            for key, s in self._streams.items():
                if key[0] == stop and s.next - NEAR <= offset <= s.next + NEAR:
                    stream = s
                    self._streams.move_to_end(key)
                    break
            if stream is None:
                self._streams[(stop, end)] = _Stream(end, end - offset)
                while len(self._streams) > STREAMS:
                    self._streams.popitem(last=False)
                return None
            if end > stream.next:
                stream.run += end - max(offset, stream.next)
                stream.next = end
                stream.reads += 1
            if stream.reads < 2:
                return None
            window = min(max(stream.run, MIN_AHEAD), self._store.max_ahead)
            target = min(stream.next + window, stop)
            start = max(stream.ahead, stream.next)
            if target <= start or (target - start < window // 2 and target < stop):
                return None  # wait until half a window is missing: one long GET
            stream.ahead = target
            return start, target

    def read_at(self, offset: int, size: int, stop: int | None = None) -> bytes:
        """Up to `size` bytes at `offset`; `stop`: where the object being read ends (read-ahead
        stays before it)."""
        size = max(0, min(size, self._size - offset))
        if size == 0:
            return b""
        store = self._store
        if self._started or self._plan:
            self._pace(offset)
        ahead = self._advance(offset, offset + size, stop)
        if ahead is not None:  # first: a read off the loop (WouldBlock) must not lose it
            for seg, lo, hi in self._map(*ahead):
                store.pool.prefetch(seg, lo, hi)
        if stop is not None:
            for seg, lo, hi in self._map(offset + size, min(offset + size + ADVISE_AHEAD, stop)):
                store.pool.advise(seg, lo, hi)
        plans = [store.plan(seg, lo, hi) for seg, lo, hi in self._map(offset, offset + size)]
        return b"".join(store.collect(plan) for plan in plans)

    def will_read(self, ranges: list[tuple[int, int]]) -> None:
        """A bulk read's plan: every range it will read, in order. They are fetched ahead of
        the reader (on the bulk fetchers), at most the pool's budget (and the store's
        read-ahead bound) started and not yet reached; each read moves the reader on
        (`_pace`). What is cached or in flight is not fetched again."""
        with self._lock:
            self._plan = deque(ranges)
            self._started.clear()
            self._ahead = 0
        self._pace(-1)

    def _pace(self, pos: int) -> None:
        """The reader reads at `pos`: the ranges it reached no longer count as ahead, and more
        of the plan starts while less than the budget is ahead."""
        budget = min(self._store.max_ahead, self._store.pool.bulk_plan()[1])
        starts = []
        with self._lock:
            started = self._started
            while started and started[0][0] <= pos:
                lo, hi = started.popleft()
                self._ahead -= hi - lo
            plan = self._plan
            while plan and self._ahead < budget:
                lo, hi = plan.popleft()
                if hi <= pos:
                    continue
                hi = min(hi, lo + budget, self._size)
                started.append((lo, hi))
                self._ahead += hi - lo
                starts.append((lo, hi))
        for lo, hi in starts:
            for seg, s_lo, s_hi in self._map(lo, hi):
                self._store.pool.prefetch(seg, s_lo, s_hi, bulk=True)

    def _map(self, lo: int, hi: int) -> list[tuple[Segment, int, int]]:
        """[lo, hi) of the pack as (segment, lo, hi) pieces."""
        out = []
        start = 0
        for seg in self._segments:
            end = start + seg.length
            if lo < end and hi > start:
                out.append((seg, max(lo, start) - start, min(hi, end) - start))
            start = end
        return out


@dataclass(slots=True)
class Plan:
    """How [lo, hi) of a segment is put together: cached extents (start, None) and fetches
    (start, future), each covering up to its end."""

    seg: Segment
    lo: int
    hi: int
    parts: list[tuple[int, int, Future[bytes] | None]]


class RemotePackStore:
    """Packs of one generation of `url` (several generations may share `cache` and `pool`)."""

    def __init__(
        self,
        store: S3Store,
        url: RemoteURL,
        generation: Generation,
        cache: ExtentCache,
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
        #: read-ahead never takes more than a quarter of the cache (it must not evict itself)
        self.max_ahead = max(MIN_AHEAD, min(MAX_AHEAD, cache.capacity // 4))

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

    def plan(self, seg: Segment, lo: int, hi: int, cached: bool = True) -> Plan:
        """Start what [lo, hi) of `seg` needs fetched (everything not in flight, with
        `cached` False); WouldBlock (after starting it) when the caller may not wait and
        something is not here yet."""
        parts = self.pool.cover(seg, lo, hi, cached)
        pending = any(f is not None for _s, _e, f in parts)
        if pending:
            self.cache.misses += 1
        else:
            self.cache.hits += 1
        if is_local_only() and any(f is not None and not f.done() for _s, _e, f in parts):
            raise WouldBlock(f"{seg.key} [{lo}, {hi})")
        return Plan(seg, lo, hi, parts)

    def collect(self, plan: Plan) -> bytes:
        """The bytes of a plan: cached extents read, fetches waited for (until the deadline).
        When an extent was evicted meanwhile (a small cache under pressure), the read is
        planned again without the cache: fetched into memory, it cannot be evicted."""
        when = self.deadline()
        retried = False
        for _attempt in range(3):
            try:
                out = self._collect(plan, when)
            except _Late:
                raise
            except RemoteIOError:
                # a fetch this read joined may have failed before it began (a GET started
                # while the server was frozen): one fresh try while time is left
                if retried or time.monotonic() >= when:
                    raise
                retried = True
                out = None
            if out is not None:
                return out
            plan = self.plan(plan.seg, plan.lo, plan.hi, cached=False)
        raise RemoteIOError(errno.EIO, f"{self.url}: {plan.seg.key}: no bytes after 3 tries")

    def _collect(self, plan: Plan, when: float) -> bytes | None:
        out: list[bytes | memoryview] = []
        pos = plan.lo
        key = plan.seg.key
        for start, end, future in plan.parts:
            hi = min(end, plan.hi)
            if future is None:
                cached = self.cache.read(key, start, pos, hi)
                if cached is None:
                    return None
                out.append(cached)
            else:
                try:
                    piece = future.result(timeout=max(0.0, when - time.monotonic()))
                except FutureTimeout:
                    self.pool.abandon(plan.seg, future)
                    raise _Late(errno.EIO, f"{self.url}: no answer within {self.timeout:g} s"
                                ) from None
                whole = hi - pos == len(piece)  # else a view: one copy, by the join below
                out.append(piece if whole else memoryview(piece)[pos - start : hi - start])
            pos = hi
        return b"".join(out)


class _Late(RemoteIOError):
    """The deadline passed (never retried)."""
