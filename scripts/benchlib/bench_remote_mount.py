"""The s3 mount's figures (scripts/bench-remote): a first sequential read of a big packed
object through `dosfs mount s3://…` against a plain download of the same bytes (one GET with
the same client, streamed into a file as `aws s3 cp` does; and, stricter, into memory only), a
re-read from the block cache against the local mount of the same container, and the daemon's
peak RSS with a 1 GiB cache. Page caches are dropped before every timed read (root)."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import obstore

from dosfs.container import Container
from dosfs.remote.layout import read_head
from dosfs.remote.push import push
from dosfs.remote.url import make_store, parse_url

DOSFS = [sys.executable, "-m", "dosfs.cli"]
RUNS = 3


def drop_caches() -> None:
    os.sync()
    if os.geteuid() == 0:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")


def _big_container(folder: str, mib: int) -> str:
    piece = os.urandom(64 << 20)

    class Source:
        def __init__(self) -> None:
            self.n = 0

        def read(self, size: int = -1) -> bytes:
            left = mib * 2**20 - self.n * len(piece)
            if left <= 0:
                return b""
            self.n += 1
            return piece[: min(left, len(piece)) - 1] + bytes([self.n % 256])

    with Container(folder) as c:
        c.init_container()
        return c.add_streamed_object_to_pack(Source())


def _timed_cat(path: Path) -> float:
    drop_caches()
    t = time.perf_counter()
    subprocess.run(["cat", str(path)], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def _mount(source: str, point: Path, *opts: str) -> None:
    point.mkdir(parents=True, exist_ok=True)
    args = ["-o", ",".join(opts)] if opts else []
    subprocess.run([*DOSFS, "mount", *args, source, str(point)], check=True)


def _umount(point: Path) -> None:
    subprocess.run([*DOSFS, "umount", str(point)], check=True)


def _daemon_hwm(point: Path) -> float:
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry.name}/cmdline").read_bytes().split(b"\0")
            if b"--foreground" in argv and str(point).encode() in argv:
                for line in Path(f"/proc/{entry.name}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            continue
    return float("nan")


def run(work: str, bucket: str, mib: int) -> None:
    folder = os.path.join(work, "mountbig")
    key = _big_container(folder, mib)
    target = f"s3://{bucket}/mountbig"
    push(folder, target)
    url = parse_url(target)
    store = make_store(url)
    generation = read_head(store, url)
    assert generation is not None
    seg = generation.packs[0][0]
    plain, download = [], []
    copy = os.path.join(work, "downloaded")
    for _ in range(RUNS):
        t = time.perf_counter()
        got = sum(len(chunk) for chunk in obstore.get(store, url.key(seg.key)))
        plain.append(time.perf_counter() - t)
        # what a user does instead of mounting: download the object to a file (aws s3 cp)
        t = time.perf_counter()
        with open(copy, "wb") as f:
            for chunk in obstore.get(store, url.key(seg.key)).stream(min_chunk_size=8 << 20):
                f.write(chunk)
        download.append(time.perf_counter() - t)
        os.unlink(copy)
        drop_caches()
    assert got >= mib * 2**20
    mnt = Path(tempfile.mkdtemp(prefix="mnt-s3-", dir=work))
    first, again, hwm = [], [], 0.0
    for r in range(RUNS):
        cache = os.path.join(work, f"cache{r}")  # a cold cache for every first read
        _mount(target, mnt, f"cache_dir={cache}", "cache_size=1GiB", "refresh=0")
        try:
            first.append(_timed_cat(mnt / "by-hash" / key))
            again.append(_timed_cat(mnt / "by-hash" / key))
            hwm = max(hwm, _daemon_hwm(mnt))
        finally:
            _umount(mnt)
    local = []
    lmnt = Path(tempfile.mkdtemp(prefix="mnt-local-", dir=work))
    _mount(folder, lmnt)
    try:
        for _ in range(RUNS):
            local.append(_timed_cat(lmnt / "by-hash" / key))
    finally:
        _umount(lmnt)
    p, d, f, a, lo = (statistics.median(x) for x in (plain, download, first, again, local))
    print(f"remote.mount_first  {mib} MiB packed object, cold cache: s3 mount {mib / f:.0f} MiB/s, "
          f"plain download to a file {mib / d:.0f} MiB/s: {d / f:.2f}x (target >= 0.7x); "
          f"plain GET into memory {mib / p:.0f} MiB/s: {p / f:.2f}x")
    print(f"remote.mount_cached re-read from the block cache {mib / a:.0f} MiB/s, local mount "
          f"{mib / lo:.0f} MiB/s: {lo / a:.2f}x (target >= 0.9x)")
    print(f"remote.mount_rss    daemon peak RSS with a 1 GiB cache: {hwm:.0f} MiB "
          "(target < 128 MiB)")
    if os.geteuid() != 0:
        print("(not root: page caches were not dropped between reads)")
