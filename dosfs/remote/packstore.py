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
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

import obstore
from obstore.store import S3Store

from dosfs.container.packstore import WouldBlock, current_deadline, is_local_only
from dosfs.remote.cache import PIECE, ExtentCache
from dosfs.remote.layout import Generation, Segment, remote_error
from dosfs.remote.url import RemoteIOError, RemoteURL

log = logging.getLogger("dosfs.remote")

#: a miss fetches the bytes asked for rounded out to this: random 1-64 KiB objects fetched
#: 1.11x their bytes with 4 KiB, 1.45x with 16 KiB, 2.5x with 64 KiB (docs/benchmarks.md)
MISS_ALIGN = 4 * 1024
#: read-ahead of a sequential reader: from MIN_AHEAD, as long as its run, up to MAX_AHEAD
MIN_AHEAD = 1024 * 1024
MAX_AHEAD = 64 * 1024 * 1024
#: the most one read-ahead GET asks for
SPAN = 8 * 1024 * 1024
#: GETs in flight for readers' misses, and for read-ahead
FETCHERS = 4
AHEAD_FETCHERS = 3
#: a bulk read's announced windows (will_read): GETs in flight, at most BULK_SPAN each, at most
#: BULK_BUDGET announced and unread (1,000 random small objects 10 ms away: 1.4 s -> 1.07 s)
BULK_FETCHERS, BULK_SPAN, BULK_BUDGET = 8, 1024 * 1024, 32 * 1024 * 1024
#: a read starting this close to where a stream stopped continues it
NEAR = 4 * 1024 * 1024
#: streams remembered per open pack
STREAMS = 16
#: bytes ahead of a sequential reader that the kernel is asked to read from the cache disk
ADVISE_AHEAD = 8 * 1024 * 1024
#: stream pieces handed over by the client while a GET runs
CHUNK = 256 * 1024


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

    def __init__(self, store: RemotePackStore, pack_id: int, segments: list[Segment]) -> None:
        self._store = store
        self._pack_id = pack_id
        self._segments = segments
        self._size = sum(s.length for s in segments)
        self.identity: Hashable = tuple(s.key for s in segments)
        self._streams: OrderedDict[tuple[int, int], _Stream] = OrderedDict()
        self._lock = threading.Lock()

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
        """Fetch the ranges a bulk read announces, in order, at most the store's read-ahead
        bound in all (what is cached or in flight is not fetched again)."""
        budget = min(self._store.max_ahead, BULK_BUDGET)
        for lo, hi in ranges:
            if budget <= 0:
                break
            hi = min(hi, lo + budget, self._size)
            budget -= hi - lo
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
        out = []
        pos = plan.lo
        key = plan.seg.key
        for start, end, future in plan.parts:
            hi = min(end, plan.hi)
            if future is None:
                data = self.cache.read(key, start, pos, hi)
                if data is None:
                    return None
            else:
                try:
                    piece = future.result(timeout=max(0.0, when - time.monotonic()))
                except FutureTimeout:
                    self.pool.abandon(plan.seg, future)
                    raise _Late(errno.EIO, f"{self.url}: no answer within {self.timeout:g} s"
                                ) from None
                data = piece[pos - start : hi - start]
            out.append(data)
            pos = hi
        return b"".join(out)


class _Late(RemoteIOError):
    """The deadline passed (never retried)."""


class FetchPool:
    """Fetches in flight, each byte at most once at a time: a fetch is a GET of a range,
    streamed piece by piece (pieces end at multiples of PIECE, one cache extent each); each
    piece's waiters are woken as soon as its bytes are in."""

    def __init__(self, store: S3Store, url: RemoteURL, cache: ExtentCache) -> None:
        self.store = store
        self.url = url
        self.cache = cache
        self.requests = 0
        self.bytes_fetched = 0
        self._lock = threading.Lock()
        #: segment key -> start -> (end, future) of the pieces being fetched
        self._inflight: dict[str, dict[int, tuple[int, Future[bytes]]]] = {}
        self._misses: ThreadPoolExecutor | None = None
        self._ahead: ThreadPoolExecutor | None = None
        self._bulk: ThreadPoolExecutor | None = None
        self._warned = False
        self._advised: OrderedDict[tuple[str, int], None] = OrderedDict()

    def _sources(self, seg: Segment, lo: int, hi: int, cached: bool = True
                 ) -> list[tuple[int, int, Future[bytes] | None]]:
        """Cached extents (unless not `cached`) and pieces in flight overlapping [lo, hi), by
        start (lock held)."""
        found: list[tuple[int, int, Future[bytes] | None]] = [
            (s, e, None) for s, e in self.cache.covered(seg.key, lo, hi)] if cached else []
        for s, (e, future) in self._inflight.get(seg.key, {}).items():
            if s < hi and e > lo:
                found.append((s, e, future))
        found.sort(key=lambda x: (x[0], -x[1]))
        return found

    @staticmethod
    def _gaps(sources: list[tuple[int, int, Future[bytes] | None]], lo: int, hi: int
              ) -> list[tuple[int, int]]:
        gaps = []
        pos = lo
        for s, e, _f in sources:
            if s > pos:
                gaps.append((pos, min(s, hi)))
            pos = max(pos, e)
            if pos >= hi:
                break
        if pos < hi:
            gaps.append((pos, hi))
        return [g for g in gaps if g[0] < g[1]]

    def cover(self, seg: Segment, lo: int, hi: int, cached: bool = True
              ) -> list[tuple[int, int, Future[bytes] | None]]:
        """Parts (start, end, future or None for cached) covering [lo, hi) in order; what is
        neither cached nor in flight is fetched now, rounded out to MISS_ALIGN."""
        a = lo // MISS_ALIGN * MISS_ALIGN
        b = min(-(-hi // MISS_ALIGN) * MISS_ALIGN, seg.length)
        with self._lock:
            sources = self._sources(seg, a, b, cached)
            gaps = [g for g in self._gaps(sources, a, b) if g[0] < hi and g[1] > lo]
            for g_lo, g_hi in gaps:
                sources.extend(self._start(seg, g_lo, g_hi, ahead=False))
        parts: list[tuple[int, int, Future[bytes] | None]] = []
        pos = lo
        while pos < hi:  # of the sources covering pos, the one reaching furthest
            best: tuple[int, int, Future[bytes] | None] | None = None
            for src in sources:
                if src[0] <= pos < src[1] and (best is None or src[1] > best[1]):
                    best = src
            if best is None:  # pragma: no cover - every gap was fetched above
                raise RemoteIOError(errno.EIO, f"{self.url}: {seg.key}: nothing covers {pos}")
            parts.append(best)
            pos = best[1]
        return parts

    def prefetch(self, seg: Segment, lo: int, hi: int, *, bulk: bool = False) -> None:
        """Fetch what of [lo, hi) is neither cached nor in flight, in GETs of up to SPAN (on
        the fetchers of a bulk read's announced windows with `bulk`, else read-ahead's)."""
        with self._lock:
            span = BULK_SPAN if bulk else SPAN
            for g_lo, g_hi in self._gaps(self._sources(seg, lo, hi), lo, hi):
                for s in range(g_lo, g_hi, span):
                    self._start(seg, s, min(s + span, g_hi), ahead=True, bulk=bulk)

    def _start(self, seg: Segment, lo: int, hi: int, *, ahead: bool, bulk: bool = False
               ) -> list[tuple[int, int, Future[bytes] | None]]:
        """One GET of [lo, hi), registered piece by piece (lock held)."""
        pieces: list[tuple[int, int, Future[bytes] | None]] = []
        flying = self._inflight.setdefault(seg.key, {})
        s = lo
        while s < hi:
            e = min((s // PIECE + 1) * PIECE, hi)
            future: Future[bytes] = Future()
            flying[s] = (e, future)
            pieces.append((s, e, future))
            s = e
        if bulk:
            if self._bulk is None:
                self._bulk = ThreadPoolExecutor(BULK_FETCHERS, thread_name_prefix="s3-bulk")
            executor = self._bulk
        elif ahead:
            if self._ahead is None:
                self._ahead = ThreadPoolExecutor(AHEAD_FETCHERS, thread_name_prefix="s3-ahead")
            executor = self._ahead
        else:
            if self._misses is None:
                self._misses = ThreadPoolExecutor(FETCHERS, thread_name_prefix="s3-fetch")
            executor = self._misses
        executor.submit(self._get, seg, [(s, e, f) for s, e, f in pieces if f is not None])
        return pieces

    def advise(self, seg: Segment, lo: int, hi: int) -> None:
        """Ask the kernel to read the cached extents of [lo, hi) from the cache disk, each
        once."""
        for start, _end in self.cache.covered(seg.key, lo, hi):
            key = (seg.key, start)
            if key in self._advised:
                continue
            self._advised[key] = None
            if len(self._advised) > 64:
                self._advised.popitem(last=False)
            self.cache.willneed(seg.key, start)

    def _get(self, seg: Segment, pieces: list[tuple[int, int, Future[bytes]]]) -> None:
        """One GET for `pieces` (contiguous), each delivered to its own future only."""
        start, stop = pieces[0][0], pieces[-1][1]
        with self._lock:
            flying = self._inflight.get(seg.key, {})
            live = any(flying.get(s) == (e, f) for s, e, f in pieces)
        if not live:  # queued behind hung GETs, and every reader gave up on it: skip it
            for _s, _e, future in pieces:
                if not future.done():
                    future.set_exception(RemoteIOError(errno.EIO, f"{self.url}: abandoned"))
            return
        i = 0
        pending: list[memoryview] = []
        have = 0
        try:
            try:
                self.requests += 1
                result = obstore.get(self.store, self.url.key(seg.key),
                                     options={"range": (start, stop)})
                for chunk in result.stream(min_chunk_size=CHUNK):
                    view = memoryview(chunk)
                    while view.nbytes and i < len(pieces):
                        need = pieces[i][1] - pieces[i][0] - have
                        pending.append(view[:need])
                        have += min(need, view.nbytes)
                        view = view[need:]
                        if have == pieces[i][1] - pieces[i][0]:
                            self._deliver(seg, pieces[i], b"".join(pending))
                            pending, have = [], 0
                            i += 1
            except Exception as exc:
                raise RemoteIOError(errno.EIO, str(remote_error(exc, self.url))) from exc
            if i < len(pieces):
                raise RemoteIOError(errno.EIO, f"{self.url}: {seg.key} is shorter than published")
        except OSError as exc:
            with self._lock:
                for piece in pieces[i:]:
                    self._forget(seg.key, piece)
            for _s, _e, future in pieces[i:]:
                if not future.done():
                    future.set_exception(exc)

    def _forget(self, key: str, piece: tuple[int, int, Future[bytes]]) -> None:
        """Take a piece out of flight, if it is still this very piece (lock held)."""
        flying = self._inflight.get(key)
        if flying is not None and flying.get(piece[0]) == (piece[1], piece[2]):
            del flying[piece[0]]
            if not flying:
                del self._inflight[key]

    def abandon(self, seg: Segment, future: Future[bytes]) -> None:
        """A reader gave up waiting for this piece (its GET hangs): later readers start a
        fresh GET rather than wait for this one, which may hang long after the server is back
        (its result, if it ever comes, still goes to the cache)."""
        with self._lock:
            flying = self._inflight.get(seg.key, {})
            for start, (end, f) in list(flying.items()):
                if f is future:
                    self._forget(seg.key, (start, end, f))

    def _deliver(self, seg: Segment, piece: tuple[int, int, Future[bytes]], data: bytes) -> None:
        """Wake the piece's waiters first, then store it: it stays in flight (done) until the
        cache has it, so nobody fetches it again meanwhile."""
        with self._lock:
            self.bytes_fetched += len(data)
        future = piece[2]
        if not future.done():
            future.set_result(data)
        try:
            self.cache.put(seg.key, piece[0], data)
        except OSError as exc:  # a full cache disk: serve the bytes, say it once
            if not self._warned:
                self._warned = True
                log.warning("cache: cannot store fetched bytes (%s); reading from %s only",
                            exc, self.url)
        finally:
            with self._lock:
                self._forget(seg.key, piece)

    def close(self) -> None:
        for executor in (self._misses, self._ahead, self._bulk):
            if executor is not None:
                executor.shutdown(wait=False, cancel_futures=True)
        self._misses = self._ahead = self._bulk = None
