"""Reading and printing a mount's live statistics (the xattr user.dosfs.stats of its root)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import click

from dosfs.cli.frame import dead_mount_message, human

STATS_XATTR = "user.dosfs.stats"


def read_stats(mountpoint: Path) -> dict[str, Any]:
    try:
        raw = os.getxattr(mountpoint, STATS_XATTR)
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            raise click.ClickException(dead_mount_message(mountpoint)) from None
        raise click.ClickException(
            f"{mountpoint} gives no dosfs statistics ({exc.strerror}): is it a dosfs mount?"
        ) from None
    data: dict[str, Any] = json.loads(raw)
    return data


_ZERO: dict[str, Any] = {"uptime_s": 0.0, "bytes_read": 0, "bytes_written": 0,
                         "objects_committed": 0, "requests": {}}


def render(data: dict[str, Any], before: dict[str, Any] | None = None) -> str:
    """The statistics as text: totals, and rates per second since `before` (an earlier
    snapshot of the same mount: `stats --watch`) or, without it, since the mount began."""
    base = before or _ZERO
    seconds = float(data["uptime_s"]) - float(base["uptime_s"])

    def rate(now: float, then: float) -> float:
        return max(now - then, 0) / seconds if seconds > 0 else 0.0

    lines = [
        f"uptime {data['uptime_s']:.0f} s, {human(data['bytes_read'])} read, "
        f"{human(data['bytes_written'])} written, {data['objects_committed']} object(s) "
        f"committed, {data['verify_failures']} verification failure(s)",
        f"rates ({f'last {seconds:.0f} s' if before else 'mean since the mount'}): "
        f"{human(int(rate(data['bytes_read'], base['bytes_read'])))}/s read, "
        f"{human(int(rate(data['bytes_written'], base['bytes_written'])))}/s written, "
        f"{rate(data['objects_committed'], base['objects_committed']):.1f} object(s)/s committed",
    ]
    old = base.get("requests", {})
    latency = data.get("latency_us", {})
    lines.append(f"{'operation':<12} {'requests':>10} {'per s':>9} {'p50 µs':>9} {'p90 µs':>9} "
                 f"{'p99 µs':>9}")
    for op, count in sorted(data["requests"].items(), key=lambda kv: -kv[1]):
        q = latency.get(op, {})
        lines.append(f"{op:<12} {count:>10,} {rate(count, old.get(op, 0)):>9.1f} "
                     f"{q.get('p50', 0):>9.0f} "
                     f"{q.get('p90', 0):>9.0f} {q.get('p99', 0):>9.0f}")
    remote = data.get("remote")
    if remote:
        lines.append(
            f"remote {remote['url']} generation {remote['generation']}: {remote['requests']:,} "
            f"GET(s), {human(remote['bytes_fetched'])} fetched; cache "
            f"{human(remote['cache_bytes'])} of {human(remote['cache_capacity'])}, "
            f"{remote['cache_hits']:,} hit(s), "
            f"{remote['cache_misses']:,} miss(es)"
            + ("; its refresh fails (server down?)" if remote.get("refresh_failing") else ""))
    errors = data.get("errors", {})
    if errors:
        lines.append("errors: " + ", ".join(f"{k} {v}" for k, v in sorted(errors.items())))
    return "\n".join(lines)
