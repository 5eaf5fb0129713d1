"""Live statistics of a mount: requests and latency per operation, errors per errno, bytes, commits.

Kept by the error boundary (every handler passes through it, so nothing is missed) at a cost of
two clock reads and a few increments per request. Latencies go into log2 buckets of µs per
operation, so memory is constant and percentiles are exact to a factor of two (reported as the
bucket's upper bound). Served as JSON by the xattr `user.dosfs.stats` of the mount's root; a
snapshot is kept for STALE seconds so that a size query and the read that follows agree.
"""

from __future__ import annotations

import errno as _errno
import json
import time
from collections.abc import Callable
from typing import Any

#: latency buckets: bucket i holds requests that took < 2**i µs
BUCKETS = 32
#: seconds a rendered snapshot is reused (getxattr asks for the size, then for the bytes)
STALE = 1.0


class Stats:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.histograms: dict[str, list[int]] = {}
        self.errors: dict[str, int] = {}
        self.bytes_read = 0
        self.bytes_written = 0
        self.objects_committed = 0
        self.verify_failures = 0
        #: more sections of the snapshot, from below the FUSE layer (e.g. "remote": the s3
        #: mount's GETs and cache), each a function called when a snapshot is rendered
        self.sections: dict[str, Callable[[], dict[str, Any]]] = {}
        self._rendered: tuple[float, bytes] | None = None

    def record(self, op: str, started_ns: int, code: int) -> None:
        """One request of `op` that began at `started_ns` (perf_counter_ns) and answered
        errno `code` (0 for success). On every request's path: one dict lookup, two adds."""
        hist = self.histograms.get(op)
        if hist is None:
            hist = self.histograms[op] = [0] * (BUCKETS + 1)
        hist[BUCKETS] += 1  # the count rides at the end of the histogram
        bucket = ((time.perf_counter_ns() - started_ns) // 1000).bit_length()
        hist[bucket if bucket < BUCKETS else BUCKETS - 1] += 1
        if code:
            name = _errno.errorcode.get(code, str(code))
            self.errors[name] = self.errors.get(name, 0) + 1

    @property
    def requests(self) -> dict[str, int]:
        """Requests per operation."""
        return {op: hist[BUCKETS] for op, hist in self.histograms.items()}

    @staticmethod
    def _percentile(hist: list[int], q: float) -> float:
        hist = hist[:BUCKETS]
        total = sum(hist)
        if not total:
            return 0.0
        want = q * total
        seen = 0
        for i, count in enumerate(hist):
            seen += count
            if seen >= want:
                return float(2**i)  # the bucket's upper bound, in µs
        return float(2 ** (BUCKETS - 1))  # pragma: no cover - the loop always returns

    def snapshot(self) -> dict[str, Any]:
        return {
            "uptime_s": round(time.monotonic() - self.started, 3),
            "requests": self.requests,
            "errors": dict(self.errors),
            "bytes_read": self.bytes_read,
            "bytes_written": self.bytes_written,
            "objects_committed": self.objects_committed,
            "verify_failures": self.verify_failures,
            "latency_us": {
                op: {f"p{int(q * 100)}": self._percentile(h, q) for q in (0.5, 0.9, 0.99)}
                for op, h in self.histograms.items()
            },
            **{name: section() for name, section in self.sections.items()},
        }

    def rendered(self) -> bytes:
        """The snapshot as JSON, the same bytes for STALE seconds."""
        now = time.monotonic()
        if self._rendered is None or now - self._rendered[0] > STALE:
            self._rendered = (now, json.dumps(self.snapshot(), sort_keys=True).encode())
        return self._rendered[1]

