"""Bytes downloaded per byte read, and the first sequential read, through the s3 mount and
RemoteContainer (issue 19, "fetch what is read"). Needs the AWS_* variables of a server
(scripts/s3-server up DIR; set -a; . DIR/env): creates its own bucket, pushes two containers
(N small objects of 1-64 KiB in one pack; one big object followed by small ones, so reading
past its end would show), mounts with a fresh cache each time, and prints:

- random: R random small objects read cold, bytes fetched / bytes read (target <= 1.5x);
- sequential: the big object read cold with `cat`, bytes fetched / its size (target <= 1.1x),
  and its speed against a plain GET of the same bytes into memory (same client); then re-read
  in a new mount from the extent cache (fetching nothing);
- the same two through RemoteContainer.

    python scripts/benchlib/bench_remote_fetch.py --work /tmp/x [--small 2000] [--read 300]
        [--seq-mib 256] [--runs 3]

No page cache is dropped: every mount is new (its files have no cached pages), and the extent
cache is a fresh folder per mount.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import obstore

from dosfs.container import Container
from dosfs.remote.bucket import create_bucket
from dosfs.remote.container import RemoteContainer
from dosfs.remote.layout import read_head
from dosfs.remote.push import push
from dosfs.remote.url import make_store, parse_url

DOSFS = [sys.executable, "-m", "dosfs.cli"]


def _stats(point: Path) -> dict[str, int]:
    out = subprocess.run([*DOSFS, "stats", "--json", str(point)], check=True,
                         capture_output=True, text=True).stdout
    remote: dict[str, int] = json.loads(out)["remote"]
    return remote


def _mount(target: str, point: Path, cache: Path) -> None:
    point.mkdir(parents=True, exist_ok=True)
    subprocess.run([*DOSFS, "mount", "-o", f"cache_dir={cache},refresh=0,fsname=dosfs-bench",
                    target, str(point)], check=True)


def _umount(point: Path) -> None:
    subprocess.run([*DOSFS, "umount", str(point)], check=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--small", type=int, default=2000)
    ap.add_argument("--read", type=int, default=300)
    ap.add_argument("--seq-mib", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-container", action="store_true", help="skip RemoteContainer")
    args = ap.parse_args()
    work = Path(args.work)
    bucket = f"fetch-{uuid.uuid4().hex[:8]}"
    create_bucket(bucket)
    rng = random.Random(19)

    small = work / "small"
    with Container(small) as c:
        c.init_container()
        datas = [os.urandom(rng.randint(1024, 64 * 1024)) for _ in range(args.small)]
        keys = c.add_objects_to_pack(datas)
    sizes = dict(zip(keys, map(len, datas), strict=True))
    small_target = f"s3://{bucket}/small"
    push(small, small_target)

    big = work / "big"
    with Container(big) as c:
        c.init_container()
        piece = os.urandom(64 << 20)
        blob = (b"".join(piece for _ in range(args.seq_mib // 64))
                + piece[: (args.seq_mib % 64) << 20])
        big_key = c.add_objects_to_pack([blob])[0]
        c.add_objects_to_pack([os.urandom(4 << 20) for _ in range(8)])  # after it: 32 MiB
    seq_size = len(blob)
    del blob, piece
    big_target = f"s3://{bucket}/big"
    push(big, big_target)

    url = parse_url(big_target)
    store = make_store(url)
    gen = read_head(store, url)
    assert gen is not None
    seg = gen.packs[0][0]

    mnt = Path(tempfile.mkdtemp(prefix="mnt-", dir=work))
    rand_ratio, seq_ratio, seq_time, plain_time, again_time = [], [], [], [], []
    for run in range(args.runs):
        chosen = rng.sample(keys, args.read)
        _mount(small_target, mnt, work / f"cache-r{run}")
        try:
            for h in chosen:
                with open(mnt / "by-hash" / h, "rb") as f:
                    f.read()
            rand_ratio.append(_stats(mnt)["bytes_fetched"] / sum(sizes[h] for h in chosen))
        finally:
            _umount(mnt)
        t = time.perf_counter()
        got = sum(len(b) for b in obstore.get(store, url.key(seg.key),
                                              options={"range": (0, seq_size)}))
        plain_time.append(time.perf_counter() - t)
        assert got == seq_size
        _mount(big_target, mnt, work / f"cache-s{run}")
        try:
            t = time.perf_counter()
            subprocess.run(["cat", str(mnt / "by-hash" / big_key)], check=True,
                           stdout=subprocess.DEVNULL)
            seq_time.append(time.perf_counter() - t)
            seq_ratio.append(_stats(mnt)["bytes_fetched"] / seq_size)
        finally:
            _umount(mnt)
        _mount(big_target, mnt, work / f"cache-s{run}")  # a new mount: no page cache of it
        try:
            t = time.perf_counter()
            subprocess.run(["cat", str(mnt / "by-hash" / big_key)], check=True,
                           stdout=subprocess.DEVNULL)
            again_time.append(time.perf_counter() - t)
            assert _stats(mnt)["bytes_fetched"] == 0
        finally:
            _umount(mnt)
    mib = seq_size / 2**20
    print(f"mount.random     {args.read} of {args.small} objects of 1-64 KiB: fetched/read "
          f"{statistics.median(rand_ratio):.2f}x (runs: "
          f"{', '.join(f'{x:.2f}' for x in rand_ratio)}; target <= 1.5x)")
    print(f"mount.sequential {mib:.0f} MiB: fetched/size {statistics.median(seq_ratio):.3f}x "
          f"(target <= 1.1x); first read {mib / statistics.median(seq_time):.0f} MiB/s, plain "
          f"GET {mib / statistics.median(plain_time):.0f} MiB/s: "
          f"{statistics.median(plain_time) / statistics.median(seq_time):.2f}x "
          f"(runs {', '.join(f'{x:.2f}' for x in seq_time)} s)")
    print(f"mount.cached     re-read in a new mount from the extent cache: "
          f"{mib / statistics.median(again_time):.0f} MiB/s (runs "
          f"{', '.join(f'{x:.2f}' for x in again_time)} s)")

    if args.no_container:
        return
    rc_rand, rc_seq = [], []
    for run in range(args.runs):
        chosen = rng.sample(keys, args.read)
        with RemoteContainer(small_target, cache_dir=work / f"rc-r{run}") as rc:
            for h in chosen:
                rc.get_object_content(h)
            rc_rand.append(rc.packs.pool.bytes_fetched / sum(sizes[h] for h in chosen))
        with RemoteContainer(big_target, cache_dir=work / f"rc-s{run}") as rc:
            with rc.get_object_stream(big_key) as stream:
                while stream.read(1 << 20):
                    pass
            rc_seq.append(rc.packs.pool.bytes_fetched / seq_size)
    print(f"container.random     fetched/read {statistics.median(rc_rand):.2f}x")
    print(f"container.sequential fetched/size {statistics.median(rc_seq):.3f}x")


if __name__ == "__main__":
    main()
