"""Live statistics: counts, log2 latency buckets, errno names, the cached rendering."""

from __future__ import annotations

import errno
import json
import time

from dosfs.fs import stats as stats_mod
from dosfs.fs.stats import Stats


def started_ago(us: int) -> int:
    return time.perf_counter_ns() - us * 1000


def test_counts_percentiles_and_errors() -> None:
    s = Stats()
    for _ in range(90):
        s.record("lookup", started_ago(0), 0)  # a few µs at most
    for _ in range(10):
        s.record("lookup", started_ago(5000), errno.ENOENT)  # the < 8192 µs bucket
    s.record("read", started_ago(0), errno.EIO)
    snap = s.snapshot()
    assert snap["requests"] == {"lookup": 100, "read": 1}
    assert snap["errors"] == {"ENOENT": 10, "EIO": 1}
    lat = snap["latency_us"]["lookup"]
    assert lat["p50"] <= 1024 and lat["p99"] == 8192  # upper bounds of power-of-two buckets
    assert snap["uptime_s"] >= 0


def test_rendering_is_reused_for_a_moment(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    s = Stats()
    first = s.rendered()
    s.record("getattr", started_ago(1), 0)
    assert s.rendered() == first  # a size query and the read that follows agree
    monkeypatch.setattr(stats_mod, "STALE", 0.0)
    time.sleep(0.001)
    assert json.loads(s.rendered())["requests"] == {"getattr": 1}
