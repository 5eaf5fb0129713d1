"""What a host and the publisher of a published container pay at N objects, on the wire
(scripts/bench-remote-scale; docs/scale.md).

Builds a container of N small distinct objects (random bytes, packed in batches; kept in
--keep DIR and reused by the next run with the same N), pushes it to the server in the AWS_*
environment (its own process: the publisher's peak RSS), then measures through counting
forwarders on 127.0.0.1 (tests/remote/tcpproxy.py), each client in its own process:

- a reader (RemoteEngine, what `dosfs mount s3://` runs, with an empty on-disk cache): open,
  first read, then cold lookups of random keys (median, p99, GETs per lookup), its peak RSS;
- a push of 100 new objects, and a push of nothing new (bytes, requests, seconds);
- the same reader's refresh to the new generation plus a read of a new object;
- `dosfs mount` start with an empty cache (when FUSE is there).

    python scripts/benchlib/bench_remote_scale.py --work DIR [--objects N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

BATCH = 10_000


def _rss_kib(field: str = "VmRSS") -> int:
    """VmRSS now, or VmHWM: the peak of this process's own memory. Not getrusage's ru_maxrss:
    on Linux a child started by fork+exec inherits the parent's peak there (the first runs
    showed the publisher's 561 MiB for every reader)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def build(folder: Path, n: int, lo: int, hi: int, seed: int) -> tuple[list[str], float]:
    """A container of `n` packed objects of lo..hi random bytes; a few keys and the seconds."""
    from dosfs.container import Container

    shutil.rmtree(folder, ignore_errors=True)  # a scratch folder of an earlier run
    rng = random.Random(seed)
    sample: list[str] = []
    t = time.perf_counter()
    with Container(folder) as c:
        c.init_container()
        done = 0
        while done < n:
            count = min(BATCH, n - done)
            keys = c.add_objects_to_pack([os.urandom(rng.randint(lo, hi)) for _ in range(count)])
            sample += [keys[0], keys[-1]]
            done += count
    return sample, time.perf_counter() - t


def _counts(proxy: Any, before: tuple[int, int, int] = (0, 0, 0)) -> dict[str, int]:
    down, up, requests = proxy.counts()
    return {"down": down - before[0], "up": up - before[1], "requests": requests - before[2]}


def publisher(folder: Path, target: str, new: int) -> dict[str, Any]:
    """Own process: a push (after adding `new` objects); seconds, report, peak RSS."""
    from dosfs.container import Container
    from dosfs.remote.push import push

    keys: list[str] = []
    if new:
        with Container(folder) as c:
            keys = c.add_objects_to_pack([os.urandom(500) for _ in range(new)])
    t = time.perf_counter()
    report = push(folder, target, timeout=120.0)
    return {"s": time.perf_counter() - t, "uploaded": report.uploaded_bytes,
            "new_key": keys[0] if keys else None,
            "unchanged": report.unchanged, "generation": report.generation,
            "rss_kib": _rss_kib("VmHWM")}


def reader(target: str, keys: list[str], lookups: int, cache: Path) -> None:
    """Own process, driven by lines on stdin: open + first read, cold lookups; then, when told,
    refresh + read of a new object. Prints one JSON line per step."""
    from dosfs.remote.engine import RemoteEngine

    def say(data: dict[str, Any]) -> None:
        print(json.dumps(data), flush=True)

    base = _rss_kib()
    t = time.perf_counter()
    engine = RemoteEngine(target, cache_dir=cache, cache_size=1 << 30, timeout=120.0)
    opened = time.perf_counter() - t
    t = time.perf_counter()
    reader = engine.open_object(keys[0])
    data = reader.pread(0, reader.size)
    first = time.perf_counter() - t
    assert len(data) == reader.size > 0
    reader.close()
    say({"open_s": opened, "first_read_s": first, "rss_open_kib": _rss_kib()})
    sys.stdin.readline()
    rng = random.Random(1)
    times, requests = [], engine.pool.requests
    for h in rng.sample(keys, min(lookups, len(keys))):
        t = time.perf_counter()
        engine.entry(h)
        times.append(time.perf_counter() - t)
    times.sort()
    say({"lookup_median_s": statistics.median(times),
         "lookup_p99_s": times[int(0.99 * (len(times) - 1))],
         "lookup_gets": (engine.pool.requests - requests) / max(1, len(times))})
    new = sys.stdin.readline().strip()
    t = time.perf_counter()
    assert engine.refresh(), "no new generation"
    reader = engine.open_object(new)
    assert len(reader.pread(0, reader.size)) == reader.size
    reader.close()
    say({"refresh_read_s": time.perf_counter() - t, "reader_peak_rss_kib": _rss_kib("VmHWM"),
         "reader_rss_base_kib": base})
    engine.close()


def _child(args: list[str], env: dict[str, str], **kw: Any) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, __file__, *args], env=env, text=True,
                            stdout=subprocess.PIPE, **kw)


def _json(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait()
        raise RuntimeError(f"a bench process failed (exit {proc.returncode})")
    result: dict[str, Any] = json.loads(line)
    return result


def mount_start(target: str, env: dict[str, str], work: Path) -> float | None:
    """Seconds of `dosfs mount s3://…` (background: returns once mounted), empty cache."""
    if not Path("/dev/fuse").exists() or not shutil.which("fusermount3"):
        return None
    mnt = work / "mnt"
    mnt.mkdir(exist_ok=True)
    dosfs = [sys.executable, "-m", "dosfs.cli"]  # the venv's, as scripts/run
    t = time.perf_counter()
    subprocess.run([*dosfs, "mount", "-o", f"cache_dir={work / 'mcache'},fsname=dosfs-bench",
                    target, str(mnt)], env=env, check=True, timeout=120)
    took = time.perf_counter() - t
    subprocess.run(["fusermount3", "-u", str(mnt)], check=False)
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", required=True, help="a scratch folder")
    ap.add_argument("--keep", default="", help="keep the built container here (reused)")
    ap.add_argument("--objects", type=int, default=1_000_000)
    ap.add_argument("--min-size", type=int, default=100)
    ap.add_argument("--max-size", type=int, default=1000)
    ap.add_argument("--lookups", type=int, default=300)
    ap.add_argument("--bucket", default="")
    ap.add_argument("--json", dest="json_path", default="")
    ap.add_argument("--role", default="", help=argparse.SUPPRESS)  # internal
    ap.add_argument("--spec", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role:
        spec = json.loads(Path(args.spec).read_text())
        if args.role == "reader":
            reader(spec["target"], spec["keys"], args.lookups, Path(spec["cache"]))
        else:
            print(json.dumps(publisher(Path(spec["folder"]), spec["target"], spec["new"])))
        return

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from dosfs.remote.bucket import create_bucket
    from tests.remote.tcpproxy import FaultProxy

    work = Path(args.work)
    n = args.objects
    bucket = args.bucket or f"scale-{uuid.uuid4().hex[:8]}"
    create_bucket(bucket)
    target = f"s3://{bucket}/n{n}"
    kept = Path(args.keep or work) / f"c{n}-{args.min_size}-{args.max_size}"
    folder = work / "c"
    if not (kept / "keys.json").exists():
        keys, build_s = build(kept, n, args.min_size, args.max_size, seed=n)
        (kept / "keys.json").write_text(json.dumps(keys))
    else:
        keys, build_s = json.loads((kept / "keys.json").read_text()), 0.0
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(kept, folder)  # pushes add objects: the kept one stays as built
    pack_bytes = sum(p.stat().st_size for p in (folder / "packs").iterdir())
    env = dict(os.environ)
    spec = work / "spec.json"

    def push_once(new: int, via: Any = None) -> dict[str, Any]:
        spec.write_text(json.dumps({"folder": str(folder), "target": target, "new": new}))
        e = env if via is None else {**env, "AWS_ENDPOINT_URL": via.endpoint}
        before = via.counts() if via is not None else (0, 0, 0)
        out = _json(_child(["--work", str(work), "--role", "push", "--spec", str(spec)], e))
        return out | ({} if via is None else _counts(via, before))

    first = push_once(0)
    wire = FaultProxy(env["AWS_ENDPOINT_URL"])
    pub = FaultProxy(env["AWS_ENDPOINT_URL"])
    try:
        spec_r = work / "reader.json"
        spec_r.write_text(json.dumps({"target": target, "keys": keys[1::2][:100_000],
                                      "cache": str(work / "rcache")}))
        shutil.rmtree(work / "rcache", ignore_errors=True)
        proc = _child(["--work", str(work), "--role", "reader", "--spec", str(spec_r),
                       "--lookups", str(args.lookups)],
                      {**env, "AWS_ENDPOINT_URL": wire.endpoint}, stdin=subprocess.PIPE)
        assert proc.stdin is not None
        r = _json(proc)
        r["open_first"] = _counts(wire)
        before = wire.counts()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        r |= _json(proc)
        r["lookups"] = _counts(wire, before)
        added = push_once(100, pub)
        unchanged = push_once(0, pub)
        assert unchanged["unchanged"], "a push of nothing new published a generation"
        before = wire.counts()
        proc.stdin.write(added["new_key"] + "\n")
        proc.stdin.flush()
        r |= _json(proc)
        r["refresh_read"] = _counts(wire, before)
        proc.wait(timeout=120)
        started = mount_start(target, env, work)
    finally:
        wire.close()
        pub.close()
    mib = 2**20

    def wire_text(c: dict[str, int]) -> str:
        total = c["down"] + c["up"]
        return f"{total / 1024:,.1f} KiB in {c['requests']} requests"

    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "objects": n, "bucket": bucket, "target": target,
        "object_sizes": [args.min_size, args.max_size], "build_s": build_s,
        "pack_bytes": pack_bytes, "push_first": first, "push_100": added,
        "push_unchanged": unchanged, "mount_start_s": started, **r,
    }
    rows = [
        ("objects", f"{n:,} (packs {pack_bytes / mib:,.0f} MiB; built in {build_s:.0f} s"
                    + (", reused)" if not build_s else ")")),
        ("first push", f"{first['s']:.1f} s, {first['uploaded'] / mib:,.0f} MiB sent, "
                       f"publisher peak RSS {first['rss_kib'] / 1024:.0f} MiB"),
        ("reader: open + first read", f"{r['open_s'] * 1e3:.0f} + {r['first_read_s'] * 1e3:.0f}"
                                      f" ms, {wire_text(r['open_first'])}"),
        (f"cold lookups ({args.lookups})", f"median {r['lookup_median_s'] * 1e3:.1f} ms, "
                                           f"p99 {r['lookup_p99_s'] * 1e3:.1f} ms, "
                                           f"{r['lookup_gets']:.2f} GETs each"),
        ("push of 100 new objects", f"{added['s']:.2f} s, {wire_text(added)}, "
                                    f"RSS {added['rss_kib'] / 1024:.0f} MiB"),
        ("push, nothing new", f"{unchanged['s']:.2f} s, {wire_text(unchanged)}"),
        ("reader: refresh + read a new one", f"{r['refresh_read_s'] * 1e3:.0f} ms, "
                                             f"{wire_text(r['refresh_read'])}"),
        ("reader RSS import / open / peak", f"{r['reader_rss_base_kib'] / 1024:.0f} / "
                                          f"{r['rss_open_kib'] / 1024:.0f} / "
                                          f"{r['reader_peak_rss_kib'] / 1024:.0f} MiB"),
        ("dosfs mount start (empty cache)", "no FUSE here" if started is None
                                            else f"{started:.2f} s"),
    ]
    width = max(len(a) for a, _ in rows)
    for a, b in rows:
        print(f"{a:<{width}}  {b}")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
