"""Figures of the remote tier, side by side in one run against one server (scripts/bench-remote).

Each figure prints dosfs's number, the plain S3 operation with the same client (obstore), and
their ratio (> 1: dosfs faster), plus this process's peak RSS. Then the peers (rclone mount,
s3fs) on one container, on loopback and behind a 10 ms / 1 Gbit/s link (bench_remote_peers.py;
--peers-only runs just those)."""

from __future__ import annotations

import argparse
import os
import resource
import signal
import sys
import time
from pathlib import Path

import bench_remote_mount  # type: ignore[import-not-found]
import bench_remote_peers  # type: ignore[import-not-found]
import obstore

from dosfs.container import Container
from dosfs.remote.bucket import create_bucket
from dosfs.remote.container import RemoteContainer
from dosfs.remote.push import CHUNK, CONCURRENCY, push
from dosfs.remote.url import make_store, parse_url


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--pack-mib", type=int, default=512)
    ap.add_argument("--small", type=int, default=10_000)
    ap.add_argument("--mount-mib", type=int, default=1024,
                    help="size of the object read through the s3 mount (0: skip)")
    ap.add_argument("--server", help="the scripts/s3-server folder (default: WORK/s3)")
    ap.add_argument("--peers-runs", type=int, default=3,
                    help="runs of each peer figure per link (0: no peer figures)")
    ap.add_argument("--peers-only", action="store_true", help="only the peer figures")
    ap.add_argument("--peers-json", type=Path, help="also write the peer figures' runs here")
    args = ap.parse_args()
    # SIGTERM unwinds like an error, so every finally runs: mounts unmounted, forwarders stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not args.peers_only:
        issue12(args)
    if args.peers_runs:
        bench_remote_peers.run(Path(args.work), Path(args.server or Path(args.work) / "s3"),
                               args.peers_runs, json_out=args.peers_json)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process {peak:.0f} MiB")


def issue12(args: argparse.Namespace) -> None:
    """Push, the verified stream, bulk small reads, the index and the s3 mount (issue 12)."""
    create_bucket("bench")
    store = make_store(parse_url("s3://bench/x"))

    # push of one pack vs a plain multipart upload of the same file
    big = os.path.join(args.work, "big")
    with Container(big) as c:
        c.init_container()
        part = os.urandom(64 << 20)
        n = max(1, args.pack_mib // 64)
        keys = c.add_objects_to_pack([part + bytes([i]) for i in range(n)])
    pack = os.path.join(big, "packs", "0")
    mib = os.path.getsize(pack) / 2**20
    runs: dict[str, list[float]] = {"push": [], "plain": []}
    for r in range(3):
        t = time.perf_counter()
        with open(pack, "rb") as f:
            obstore.put(store, f"plain/{r}", f, max_concurrency=CONCURRENCY, chunk_size=CHUNK)
        runs["plain"].append(time.perf_counter() - t)
        t = time.perf_counter()
        push(big, f"s3://bench/big{r}")
        runs["push"].append(time.perf_counter() - t)
    p, q = sorted(runs["push"])[1], sorted(runs["plain"])[1]
    print(f"remote.push       {mib:.0f} MiB pack: push {mib / p:.0f} MiB/s, plain multipart "
          f"{mib / q:.0f} MiB/s: {q / p:.2f}x (target >= 0.8x)")

    # a verified stream read vs a plain GET of the same number of bytes
    with RemoteContainer("s3://bench/big0") as rc:
        t = time.perf_counter()
        with rc.get_object_stream(keys[0]) as s:
            got = 0
            while chunk := s.read(1 << 20):
                got += len(chunk)
        tr = time.perf_counter() - t
    t = time.perf_counter()
    plain = len(obstore.get_range(store, "plain/0", start=0, length=got))
    tp = time.perf_counter() - t
    print(f"remote.read       {got / 2**20:.0f} MiB object: RemoteContainer stream (verified) "
          f"{got / 2**20 / tr:.0f} MiB/s, plain ranged GET {plain / 2**20 / tp:.0f} MiB/s: "
          f"{tp / tr:.2f}x")

    # bulk read of many small objects vs single GETs
    small = os.path.join(args.work, "small")
    with Container(small) as c:
        c.init_container()
        hs = c.add_objects_to_pack([os.urandom(1024) for _ in range(args.small)])
    push(small, "s3://bench/small")
    t = time.perf_counter()
    with RemoteContainer("s3://bench/small") as rc:
        t_open = time.perf_counter() - t
        t = time.perf_counter()
        contents = rc.get_objects_content(hs)
        t_bulk = time.perf_counter() - t
        index = rc.generation.index_size
        requests = rc.packs.requests
    assert len(contents) == len(hs)
    for i in range(20):
        obstore.put(store, f"single/{i}", os.urandom(1024))
    singles = min(1000, args.small)
    t = time.perf_counter()
    for i in range(singles):
        obstore.get(store, f"single/{i % 20}").bytes()
    per = (time.perf_counter() - t) / singles
    print(f"remote.bulk_small get_objects_content of {args.small} x 1 KiB: {t_bulk:.3f} s in "
          f"{requests} range request(s); {args.small} single GETs {per * args.small:.2f} s "
          f"(from {singles} timed): {per * args.small / t_bulk:.0f}x (target >= 20x)")
    print(f"remote.index      index tables of {args.small} objects: {index / 1024:.0f} KiB "
          f"({index / args.small:.0f} B/object, read on demand), opened in {t_open * 1e3:.0f} ms")
    if args.mount_mib:
        bench_remote_mount.run(args.work, "bench", args.mount_mib)


if __name__ == "__main__":
    main()
