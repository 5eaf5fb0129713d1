"""The table of bench_remote_peers.py: medians over the runs, then speed ratios of dosfs's two
readers against each reference (> 1: dosfs faster), as the other benches print them.

    python scripts/benchlib/peers_report.py RESULT.json     # the table of a saved run"""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path
from typing import Any

MiB = 1 << 20
NAMES = {"dosfs": "dosfs mount", "rc": "RemoteContainer", "get": "plain GET",
         "rclone": "rclone mount", "s3fs": "s3fs"}
PAIRS = (("dosfs", "rclone"), ("dosfs", "s3fs"), ("rc", "rclone"), ("rc", "s3fs"),
         ("dosfs", "get"), ("rc", "get"))
# (label, part, field, how): "s" rows are seconds (ratios are taken), others are shown as is
ROWS = (
    ("mount start, s (RC: opening it)", "start", "start", "s"),
    ("first read of the big object, MiB/s", "seq", "first", "rate"),
    ("  downloaded / its size", "seq", "per_byte", "x"),
    ("  GET requests", "seq", "gets", "n"),
    ("cached re-read (page cache dropped), MiB/s", "seq", "again", "rate"),
    ("  downloaded after the first read, MiB", "seq", "after_first", "mib"),
    ("N random small objects, cold, s", "random", "cold", "s"),
    ("  downloaded / bytes read", "random", "per_byte", "x"),
    ("  GET requests", "random", "gets", "n"),
    ("N random small objects again (warm), s", "random", "warm", "s"),
    ("  downloaded after the cold pass, MiB", "random", "after_first", "mib"),
    ("peak RSS, MiB (of the daemon; RC: its process)", "rss", "rss", "max"),
)


def _values(runs: list[dict[str, Any]], part: str, fld: str) -> list[float]:
    if part in ("start", "rss"):  # every fresh mount is a sample
        return [r[p][fld] for r in runs for p in ("seq", "random") if fld in r.get(p, {})]
    return [r[part][fld] for r in runs if fld in r.get(part, {})]


def figure(sides: dict[str, list[dict[str, Any]]], side: str, part: str, fld: str,
           how: str, size: int) -> float | None:
    xs = _values(sides.get(side, []), part, fld)
    if not xs:
        return None
    if how == "max":
        return max(xs)
    med = statistics.median(xs)
    return size / MiB / med if how == "rate" else med / MiB if how == "mib" else med


def _fmt(v: float | None, how: str) -> str:
    if v is None:
        return "-"
    if how == "x":
        return f"{v:.2f}x"
    if how == "n":
        return f"{v:,.0f}"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"


SHORT = {"dosfs": "mount", "rc": "RC", "get": "GET", "rclone": "rclone", "s3fs": "s3fs"}
# issue 19's targets: (what, row (part, field), a, b, minimum speed ratio a/b)
TARGETS = (
    ("first read, mount / plain GET", ("seq", "first"), "dosfs", "get", 0.9),
    ("random cold, mount / rclone", ("random", "cold"), "dosfs", "rclone", 1.0),
    ("random cold, RC / rclone", ("random", "cold"), "rc", "rclone", 2.0),
    ("cached re-read, mount / rclone", ("seq", "again"), "dosfs", "rclone", 3.0),
    ("cached re-read, mount / s3fs", ("seq", "again"), "dosfs", "s3fs", 3.0),
)


def _ratio(va: float | None, vb: float | None, how: str) -> float | None:
    if how not in ("s", "rate") or not va or not vb:
        return None
    return vb / va if how == "s" else va / vb


def render_link(name: str, entry: dict[str, Any], size: int, n_read: int) -> list[str]:
    check = entry.get("check")
    if check is None:
        head = f"link: {name}, straight to the gateway on 127.0.0.1"
    else:
        head = (f"link: {name}, the gateway behind slowlink.py ({entry['delay'] * 1e3:g} ms each "
                f"way, {entry['rate_bits'] / 1e9:g} Gbit/s)\n  the forwarder, checked first with "
                f"a local source: {check['uncapped']:.0f} MiB/s uncapped (straight: "
                f"{check['direct']:.0f} MiB/s), {check['capped']:.0f} MiB/s capped "
                f"({check['capped'] * MiB * 8 / 1e9:.2f} Gbit/s, set-up included); round trip "
                f"of a 1-byte GET {check['rtt_ms']:.1f} ms (straight {check['rtt_direct_ms']:.1f}"
                " ms)")
    lines = [head]
    if entry.get("untrusted"):
        lines.append("  NOT MEASURED: the forwarder cannot carry the rate on this machine now")
        return lines
    sides = entry["sides"]
    cols = [s for s in NAMES if sides.get(s)]
    pairs = [f"{SHORT[a]}/{SHORT[b]}" for a, b in PAIRS]
    lines.append(f"  {'figure':46}" + "".join(f"{NAMES[s]:>16}" for s in cols)
                 + "  " + " ".join(f"{p:>12}" for p in pairs))
    table: dict[tuple[str, str], dict[str, float | None]] = {}
    for label, part, fld, how in ROWS:
        vals = {s: figure(sides, s, part, fld, how, size) for s in cols}
        table[part, fld] = vals
        ratios = [_ratio(vals.get(a), vals.get(b), how) for a, b in PAIRS]
        lines.append(f"  {label.replace('N ', f'{n_read} '):46}"
                     + "".join(f"{_fmt(vals[s], how):>16}" for s in cols) + "  "
                     + " ".join(f"{'' if r is None else f'{r:.2f}x':>12}" for r in ratios))
    said = []
    for what, row, a, b, want in TARGETS:
        how = "s" if row[1] == "cold" else "rate"
        r = _ratio(table[row].get(a), table[row].get(b), how)
        if r is not None:
            said.append(f"{what} {r:.2f}x (>= {want:g}x: {'yes' if r >= want else 'NO'})")
    start = table["start", "start"].get("dosfs")
    if start is not None:
        said.append(f"mount start {start:.2f} s (<= 0.5 s: {'yes' if start <= 0.5 else 'NO'})")
    rss = table["rss", "rss"].get("dosfs")
    if rss is not None:
        said.append(f"daemon peak RSS {rss:.0f} MiB (< 128: {'yes' if rss < 128 else 'NO'})")
    lines.append("  issue 19's targets:")
    lines += [f"    {x}" for x in said]
    return lines


def render(results: dict[str, Any]) -> str:
    d = results["data"]
    size = d["seq_mib"] * MiB
    v = {k: (m.group(0) if (m := re.search(r"v?\d+\.\d+[\w.-]*", x)) else x)
         for k, x in results["versions"].items()}
    lines = [
        f"remote.peers      one container: {d['small']} objects of 1-64 KiB, one of "
        f"{d['seq_mib']} MiB and 8 more after it, in one pack; {d['runs']} run(s) per side and "
        "link, medians.",
        f"  peers: rclone {v['rclone']} (mount --vfs-cache-mode full), s3fs {v['s3fs']} "
        "(use_cache); they "
        "cannot read dosfs's published layout (not a container folder), so they mount a plain "
        "copy of the container folder, uploaded file by file under another prefix of the same "
        "bucket, and read it with disk-objectstore (bulk read, stream).",
        "  mount = dosfs mount s3:// (files by-hash/ read one by one), RC = RemoteContainer "
        "(get_objects_content, stream), GET = one plain GET of the object's bytes from the plain "
        "copy's pack (obstore). Downloads: as the gateway's access log counts them. "
        "Ratios are speed ratios, > 1: dosfs faster.",
    ]
    if not results.get("caches_dropped", True):
        lines.append("  (page caches NOT dropped: the cached re-reads may be page-cache reads)")
    if results.get("peers_missing"):
        lines.append(f"  PEERS NOT MEASURED: {results['peers_missing']}")
    for name, entry in results["links"].items():
        lines += render_link(name, entry, size, d["read"])
    lines.append(f"(peer figures took {results['seconds']:.0f} s)")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(json.loads(Path(sys.argv[1]).read_text())))
