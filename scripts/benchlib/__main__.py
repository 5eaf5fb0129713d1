"""`scripts/bench`: parse, select figures, run them in a temp dir that is always removed (after
unmounting anything left mounted in it), print the table, write the JSON."""

from __future__ import annotations

import argparse
import datetime
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import FrameType

from benchlib import report
from benchlib.bench_firstread import CpuHog
from benchlib.figures import ALL_KEYS, BENCHES, DEFAULT_KEYS, Ctx
from benchlib.mounting import force_unmount, mounts_under
from benchlib.report import Figure
from benchlib.sizes import FULL, QUICK


def select(names: list[str]) -> list[str]:
    """Figure keys for the names given: a group (`api`, `mount`, `daemon`), a benchmark
    (`api.reads`) or a figure (`api.get_single`); none = everything but the groups run only
    on request (`aiida`)."""
    if not names:
        return list(DEFAULT_KEYS)
    keys: list[str] = []
    for name in names:
        hits = [k for b in BENCHES if b.name == name for k in b.keys]
        hits += [k for k in ALL_KEYS if k == name or k.startswith(name + ".")]
        if not hits:
            raise SystemExit(f"bench: unknown figure or group {name!r}; see --list")
        keys += [k for k in hits if k not in keys]
    return [k for k in ALL_KEYS if k in keys]


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/bench",
        description="dosfs vs disk-objectstore and native tools: same data, same run. Ratios are "
                    "speed ratios, > 1 means dosfs is faster. See docs/benchmarks.md.")
    p.add_argument("names", nargs="*", help="groups/figures to run (default: all; see --list)")
    p.add_argument("--quick", action="store_true", help="smaller sizes: about a minute")
    p.add_argument("--json", type=Path, metavar="PATH", help="write the results as JSON here")
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiply every count and size (e.g. 0.05 for a smoke run)")
    p.add_argument("--repeats", type=int, default=3, help="runs per figure, median taken (>= 3)")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()),
                   help="where the temporary data and mount points go (default: %(default)s)")
    p.add_argument("--no-drop-caches", action="store_true",
                   help="do not drop the page cache before 'first read' figures")
    p.add_argument("--hog", type=int, default=0, metavar="N",
                   help="run N busy processes beside the whole run (the same load for both "
                        "sides of every figure)")
    p.add_argument("--list", action="store_true", help="list groups and figures, then exit")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    p.add_argument("--render", type=Path, metavar="JSON",
                   help="measure nothing: print the table of a saved --json result")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    return args


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.list:
        for b in BENCHES:
            print(f"{b.name}: {', '.join(b.keys)}")
        return 0
    if args.render:
        meta, saved = report.read_json(args.render)
        print(report.table(saved, markdown=args.markdown))
        return 0
    keys = select(args.names)
    sizes = (QUICK if args.quick else FULL).scaled(args.scale)
    signal.signal(signal.SIGTERM, _terminate)
    args.workdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="dosfs-bench-", dir=args.workdir))
    ctx = Ctx(work=work, sizes=sizes, repeats=args.repeats, drop=not args.no_drop_caches,
              wanted=set(keys), log=lambda msg: print(msg, file=sys.stderr, flush=True))
    if args.no_drop_caches:
        ctx.notes.append("page cache not dropped (--no-drop-caches): 'first' reads are warm")
    started = datetime.datetime.now(datetime.UTC)
    figures: list[Figure] = []
    t_start = time.monotonic()
    hogs = [CpuHog().__enter__() for _ in range(args.hog)]
    if hogs:
        ctx.notes.append(f"{len(hogs)} CPU hog(s) ran beside the whole run (--hog)")
    try:
        for b in BENCHES:
            mine = [k for k in b.keys if k in keys]
            if not mine:
                continue
            ctx.log(f"[{time.monotonic() - t_start:6.1f}s] {b.name}: {', '.join(mine)}")
            try:
                got = {f.key: f for f in b.run(ctx)}
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 - one failing benchmark must not hide the rest
                ctx.log(traceback.format_exc())
                got = {k: Figure(k, b.name, error=f"{type(exc).__name__}: {exc}") for k in mine}
            for k in mine:
                figures.append(got.get(k) or Figure(k, b.name, error="not produced"))
    except KeyboardInterrupt:
        ctx.log("bench: interrupted, cleaning up")
        return 130
    finally:
        for hog in hogs:
            hog.__exit__()
        for point in mounts_under(work):
            force_unmount(point)
        if mounts_under(work):
            ctx.log(f"bench: could not unmount {mounts_under(work)}; leaving {work} in place")
        else:
            shutil.rmtree(work, ignore_errors=True)
    elapsed = time.monotonic() - t_start
    meta = {
        "date": started.isoformat(timespec="seconds"), "mode": "quick" if args.quick else "full",
        "scale": args.scale, "repeats": args.repeats, "hogs": args.hog,
        "elapsed_s": round(elapsed, 1),
        "page_cache_dropped_for_first_reads": ctx.drop, "notes": ctx.notes,
        "sizes": sizes.__dict__, "machine": report.machine(),
        "ratio": "speed ratio = b time / a time per unit of work: > 1 means a (dosfs) is faster",
    }
    print(report.table(figures, markdown=args.markdown))
    for note in ctx.notes:
        print(f"note: {note}")
    print(f"{len(figures)} figures in {elapsed:.0f} s ({meta['mode']}, scale {args.scale}, "
          f"median of {args.repeats}); speed ratio > 1 = dosfs faster")
    if args.json:
        report.write_json(args.json, meta, figures)
    errors = [f.key for f in figures if f.error]
    if errors:
        print(f"bench: {len(errors)} figure(s) failed: {', '.join(errors)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
