"""FetchPool: the GETs in flight of one remote container, shared by its generations.

Why one pool: every byte is fetched at most once at a time, whoever asks (a reader's miss,
read-ahead, a bulk read's announced windows): a reader that needs bytes already in flight waits
for that fetch instead of starting its own. A fetch is one ranged GET, streamed and cut into
pieces at multiples of PIECE (one cache extent each); each piece's waiters are woken as soon as
its bytes are in, then the piece goes to the extent cache (remote/cache.py).

Why three sets of fetchers: a reader's miss never queues behind read-ahead's long GETs, nor
behind a bulk read's many short ones (remote/packstore.py decides what each fetches).
"""

from __future__ import annotations

import errno
import logging
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor

import obstore
from obstore.store import S3Store

from dosfs.remote.cache import PIECE, ExtentCache
from dosfs.remote.layout import Segment, remote_error
from dosfs.remote.url import RemoteIOError, RemoteURL

log = logging.getLogger("dosfs.remote")

#: a miss fetches the bytes asked for rounded out to this: random 1-64 KiB objects fetched
#: 1.11x their bytes with 4 KiB, 1.45x with 16 KiB, 2.5x with 64 KiB (docs/benchmarks.md)
MISS_ALIGN = 4 * 1024
#: the most one read-ahead GET asks for
SPAN = 8 * 1024 * 1024
#: GETs in flight for readers' misses, and for read-ahead
FETCHERS = 4
AHEAD_FETCHERS = 3
#: a bulk read's announced windows (will_read): GETs in flight, at most BULK_SPAN each, at most
#: BULK_BUDGET announced and unread (1,000 random small objects 10 ms away: 1.4 s -> 1.07 s)
BULK_FETCHERS, BULK_SPAN, BULK_BUDGET = 8, 1024 * 1024, 32 * 1024 * 1024
#: stream pieces handed over by the client while a GET runs
CHUNK = 256 * 1024


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
