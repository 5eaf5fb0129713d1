"""Reading and printing a mount's live statistics (the xattr user.dosfs.stats of its root)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

STATS_XATTR = "user.dosfs.stats"


def read_stats(mountpoint: Path) -> dict[str, Any]:
    try:
        raw = os.getxattr(mountpoint, STATS_XATTR)
    except OSError as exc:
        raise click.ClickException(
            f"{mountpoint} gives no dosfs statistics ({exc.strerror}): is it a dosfs mount?"
        ) from None
    data: dict[str, Any] = json.loads(raw)
    return data


def render(data: dict[str, Any]) -> str:
    lines = [
        f"uptime {data['uptime_s']:.0f} s, {data['bytes_read']:,} bytes read, "
        f"{data['bytes_written']:,} written, {data['objects_committed']} object(s) committed, "
        f"{data['verify_failures']} verification failure(s)"
    ]
    latency = data.get("latency_us", {})
    lines.append(f"{'operation':<12} {'requests':>10} {'p50 µs':>9} {'p90 µs':>9} {'p99 µs':>9}")
    for op, count in sorted(data["requests"].items(), key=lambda kv: -kv[1]):
        q = latency.get(op, {})
        lines.append(f"{op:<12} {count:>10,} {q.get('p50', 0):>9.0f} {q.get('p90', 0):>9.0f} "
                     f"{q.get('p99', 0):>9.0f}")
    remote = data.get("remote")
    if remote:
        lines.append(
            f"remote {remote['url']} generation {remote['generation']}: {remote['requests']:,} "
            f"GET(s), {remote['bytes_fetched']:,} bytes fetched; cache {remote['cache_bytes']:,} "
            f"of {remote['cache_capacity']:,} bytes, {remote['cache_hits']:,} hit(s), "
            f"{remote['cache_misses']:,} miss(es)"
            + ("; its refresh fails (server down?)" if remote.get("refresh_failing") else ""))
    errors = data.get("errors", {})
    if errors:
        lines.append("errors: " + ", ".join(f"{k} {v}" for k, v in sorted(errors.items())))
    return "\n".join(lines)
