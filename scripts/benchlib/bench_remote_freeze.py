"""What a frozen server costs (issue 19): the gateway of a scripts/s3-server folder is SIGSTOPped
(and always resumed with SIGCONT) while a reader of an uncached object waits; meanwhile `stat`,
`ls` and `cat` of cached objects on the same s3 mount, and RemoteContainer reads of cached
objects in another thread, are timed.

    set -a; . DIR/env; set +a
    python scripts/benchlib/bench_remote_freeze.py --server DIR --work /tmp/x [--timeout 10]

Prints the time to EIO / RemoteError of the frozen reader and p50/p99/max of the others.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from dosfs.container import Container
from dosfs.remote.bucket import create_bucket
from dosfs.remote.container import RemoteContainer
from dosfs.remote.push import push

DOSFS = [sys.executable, "-m", "dosfs.cli"]


def _pct(xs: list[float]) -> str:
    xs = sorted(xs)
    p99 = xs[min(len(xs) - 1, int(len(xs) * 0.99))]
    return (f"n={len(xs)} p50 {statistics.median(xs) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
            f"max {xs[-1] * 1000:.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True, help="the scripts/s3-server folder")
    ap.add_argument("--work", required=True)
    ap.add_argument("--timeout", type=float, default=10.0)
    args = ap.parse_args()
    state = json.loads((Path(args.server) / "state.json").read_text())
    rgw = next(d["pid"] for d in state["daemons"] if d["name"] == "rgw")
    work = Path(args.work)
    bucket = f"freeze-{uuid.uuid4().hex[:8]}"
    create_bucket(bucket)
    with Container(work / "c") as c:
        c.init_container()
        big = c.add_objects_to_pack([os.urandom(64 << 20)])[0]
        small = c.add_objects_to_pack([os.urandom(n) for n in range(1000, 41000, 2000)])
    target = f"s3://{bucket}/frozen"
    push(work / "c", target)
    mnt = Path(tempfile.mkdtemp(prefix="mnt-", dir=work))
    subprocess.run([*DOSFS, "mount", "-o", f"cache_dir={work / 'cache'},refresh=0,"
                    f"timeout={args.timeout:g},fsname=dosfs-bench", target, str(mnt)], check=True)
    rc = RemoteContainer(target, timeout=args.timeout, cache_dir=work / "rc-cache")
    try:
        by_hash = mnt / "by-hash"
        for h in small:
            (by_hash / h).read_bytes()
            rc.get_object_content(h)
        stat_t: list[float] = []
        ls_t: list[float] = []
        cat_t: list[float] = []
        rc_t: list[float] = []
        out: dict[str, float] = {}
        os.kill(rgw, signal.SIGSTOP)
        try:
            def frozen_cat() -> None:
                t = time.monotonic()
                r = subprocess.run(["cat", str(by_hash / big)], capture_output=True)
                out["mount"] = time.monotonic() - t if r.returncode else -1.0

            def frozen_rc() -> None:
                t = time.monotonic()
                try:
                    rc.get_object_content(big)
                    out["rc"] = -1.0
                except Exception:  # noqa: BLE001 - the RemoteError expected
                    out["rc"] = time.monotonic() - t

            def rc_cached() -> None:
                while "rc" not in out:
                    for h in small:
                        t = time.monotonic()
                        rc.get_object_content(h)
                        rc_t.append(time.monotonic() - t)

            threads = [threading.Thread(target=f) for f in (frozen_cat, frozen_rc, rc_cached)]
            for th in threads:
                th.start()
            while "mount" not in out:
                for h in small:
                    t = time.monotonic()
                    os.stat(by_hash / h)
                    stat_t.append(time.monotonic() - t)
                t = time.monotonic()
                os.listdir(by_hash)
                ls_t.append(time.monotonic() - t)
                for h in small[:5]:
                    fd = os.open(by_hash / h, os.O_RDONLY)
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                    os.close(fd)
                    t = time.monotonic()
                    subprocess.run(["cat", str(by_hash / h)], check=True, capture_output=True)
                    cat_t.append(time.monotonic() - t)
            for th in threads:
                th.join()
        finally:
            os.kill(rgw, signal.SIGCONT)
        print(f"frozen gateway, timeout={args.timeout:g}: reader of an uncached object through "
              f"the mount: EIO after {out['mount']:.2f} s; RemoteContainer: RemoteError after "
              f"{out['rc']:.2f} s")
        print(f"meanwhile on the mount: stat {_pct(stat_t)}; ls {_pct(ls_t)}; cat of cached "
              f"objects (page cache dropped) {_pct(cat_t)}")
        print(f"meanwhile RemoteContainer (another thread), cached objects: {_pct(rc_t)}")
    finally:
        rc.close()
        subprocess.run([*DOSFS, "umount", str(mnt)], check=False)


if __name__ == "__main__":
    main()
