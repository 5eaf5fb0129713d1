"""FetchPool: the GETs in flight of one remote container, shared by its generations.

Why one pool: every byte is fetched at most once at a time, whoever asks (a reader's miss,
read-ahead, a bulk read's announced windows): a reader that needs bytes already in flight waits
for that fetch instead of starting its own. A fetch is one ranged GET, streamed and cut into
pieces at multiples of PIECE (one cache extent each); each piece's waiters are woken as soon as
its bytes are in, then the piece goes to the extent cache (remote/cache.py).

Why three sets of fetchers: a reader's miss never queues behind read-ahead's long GETs, nor
behind a bulk read's many short ones (remote/packstore.py decides what each fetches).

Why a bulk read's pieces are written to the cache through the page cache: the extent cache
writes with O_DIRECT (no page-cache copy: the mount's readers keep their own), so a piece
fetched ahead of a bulk read and read back from the cache cost a disk read in the reader's
path: 1,000 random small objects read in bulk spent half their time (0.37 of 0.74 s) in those
reads. Written buffered, they are read back from memory the kernel may reclaim. Holding them in
the process until read was as fast but raised RemoteContainer's peak RSS by 20-30 MiB.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections import OrderedDict, deque
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
#: GETs in flight for readers' misses (readers in parallel each wait on one: 16 readers of
#: uncached small objects 10 ms away took 7.2 s per 1,000 with 4, 3.6 s with 16, no better
#: with 32), and for read-ahead
FETCHERS = 16
AHEAD_FETCHERS = 3
#: the most one GET of a bulk read's windows (will_read) asks for
BULK_SPAN = 1024 * 1024
#: a server whose GETs answer within this is near: the best of the last RTT_SAMPLES, which
#: include unloaded ones (under load the answers wait in the server's queue: 3-85 ms on
#: loopback during a bulk read, against 2-4 ms for the index reads that open a container)
NEAR_RTT, RTT_SAMPLES = 0.005, 256
#: how a bulk read fetches from a near and a far server: the unwanted bytes between two objects
#: it downloads rather than asking for them apart (the gap), the bytes started and not yet read
#: (the budget) and the GETs in flight (fetchers). Near (loopback), the server's work per GET
#: (~1 ms of CPU, as much as ~0.5 MiB more bytes) dominates: wide gaps, a few GETs at a time
#: (each fetcher thread also costs memory: 32 of them raised the peak RSS by ~15 MiB). Far (10
#: ms each way, 1 Gbit/s), bytes and round trips both cost: narrower gaps, many GETs in flight.
#: 1,000 random small objects: docs/benchmarks.md.
BULK_NEAR = (256 * 1024, 8 * 1024 * 1024, 8)
BULK_FAR = (128 * 1024, 32 * 1024 * 1024, 32)
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
        self._rtts: deque[float] = deque(maxlen=RTT_SAMPLES)

    def bulk_plan(self) -> tuple[int, int, int]:
        """(gap, budget, fetchers) of a bulk read from this server, by how far it is
        (BULK_NEAR until a GET was timed)."""
        far = bool(self._rtts) and min(self._rtts) > NEAR_RTT
        return BULK_FAR if far else BULK_NEAR

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
                self._bulk = ThreadPoolExecutor(self.bulk_plan()[2],
                                                thread_name_prefix="s3-bulk")
            executor = self._bulk
        elif ahead:
            if self._ahead is None:
                self._ahead = ThreadPoolExecutor(AHEAD_FETCHERS, thread_name_prefix="s3-ahead")
            executor = self._ahead
        else:
            if self._misses is None:
                self._misses = ThreadPoolExecutor(FETCHERS, thread_name_prefix="s3-fetch")
            executor = self._misses
        executor.submit(self._get, seg, [(s, e, f) for s, e, f in pieces if f is not None],
                        bulk)
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

    def _get(self, seg: Segment, pieces: list[tuple[int, int, Future[bytes]]],
             bulk: bool = False) -> None:
        """One GET for `pieces` (contiguous), each delivered to its own future only (`bulk`:
        for a bulk read, which reads them back from the cache soon)."""
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
                asked = time.monotonic()
                result = obstore.get(self.store, self.url.key(seg.key),
                                     options={"range": (start, stop)})
                self._rtts.append(time.monotonic() - asked)  # until the answer's head
                for chunk in result.stream(min_chunk_size=CHUNK):
                    view = memoryview(chunk)
                    while view.nbytes and i < len(pieces):
                        need = pieces[i][1] - pieces[i][0] - have
                        pending.append(view[:need])
                        have += min(need, view.nbytes)
                        view = view[need:]
                        if have == pieces[i][1] - pieces[i][0]:
                            self._deliver(seg, pieces[i], b"".join(pending), bulk)
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

    def _deliver(self, seg: Segment, piece: tuple[int, int, Future[bytes]], data: bytes,
                 bulk: bool = False) -> None:
        """Wake the piece's waiters first, then store it (through the page cache for a bulk
        read): it stays in flight (done) until the cache has it, so nobody fetches it again
        meanwhile."""
        with self._lock:
            self.bytes_fetched += len(data)
        future = piece[2]
        if not future.done():
            future.set_result(data)
        try:
            self.cache.put(seg.key, piece[0], data, direct=not bulk)
        except OSError as exc:  # a full cache disk: serve the bytes, say it once
            if not self._warned:
                self._warned = True
                log.warning("cache: cannot store fetched bytes (%s); reading from %s only",
                            exc, self.url)
        finally:
            with self._lock:
                self._forget(seg.key, piece)

    def close(self, wait: bool = False) -> None:
        """Stop fetching: GETs not started are cancelled; with `wait`, return once the
        running ones ended."""
        for executor in (self._misses, self._ahead, self._bulk):
            if executor is not None:
                executor.shutdown(wait=wait, cancel_futures=True)
        self._misses = self._ahead = self._bulk = None
