"""The mount's metadata path against the smallest pyfuse3 filesystem serving the same container
(benchlib/minimalfs.py, the ceiling of any pyfuse3 design here): `stat` and open+read+close of
names the kernel has not seen, `ls -l by-hash` at 2·10^4 and 10^6 objects, and the daemon's
memory after listing and stat'ing all 10^6.

Both sides mount the same container side by side; each run uses names neither mount has looked
up yet (the kernel caches entries for a day on both), and each `ls -l` a fresh mount.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from benchlib.mounting import Mount, force_unmount, have_fuse, mounted, run_timed
from benchlib.report import Figure, Side

if TYPE_CHECKING:  # figures.py imports this module to register it
    from benchlib.figures import Ctx

SCRIPTS = Path(__file__).resolve().parent.parent
META_KEYS = ["meta.stat", "meta.open_read_close", "meta.open_read_close_flush", "meta.ls_small",
             "meta.ls_large", "meta.rss_large"]


class MinimalMount:
    """benchlib.minimalfs in a child process; unmounts on exit."""

    def __init__(self, container: Path, mountpoint: Path, log: Path, flush: bool = False) -> None:
        self.container, self.mountpoint, self.log = container, mountpoint, log
        self.flush = flush
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> MinimalMount:
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONPATH=str(SCRIPTS))
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "benchlib.minimalfs", str(self.container),
                 str(self.mountpoint)] + (["--flush"] if self.flush else []),
                stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 600  # loading 10^6 entries takes a while
        while not mounted(self.mountpoint):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"minimalfs did not mount: {self.log.read_text()[-500:]}")
            time.sleep(0.05)
        return self

    def memory(self) -> dict[str, float]:
        """VmRSS and VmHWM (peak) of the minimal FS in MiB: it holds every object in a dict."""
        assert self.proc is not None
        out = {}
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                key = line.split(":")[0]
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(line.split()[1]) / 1024
        return out

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        force_unmount(self.mountpoint)


def _per_object(ctx: Ctx, task: str, paths: list[str], listfile: Path) -> float:
    listfile.write_text("\n".join(paths))
    timings = ctx.worker({"task": task, "list": str(listfile)})["timings"]
    return float(next(iter(timings.values()))[0])


def bench_meta(ctx: Ctx) -> list[Figure]:
    c = ctx
    reason = have_fuse()
    if reason:
        raise RuntimeError(f"cannot mount: {reason}")
    s = c.sizes
    figs: list[Figure] = []
    base = c.dir("meta")
    small = base / "small"
    per_run = s.meta_per_run
    c.log(f"  building {s.meta_small_objects} 1 KiB objects")
    names = c.worker({"task": "build_kib", "folder": str(small),
                      "count": s.meta_small_objects})["info"]["hashkeys"]
    repeats = c.repeats
    want = c.want
    per_run = max(1, min(per_run, len(names) // (3 * repeats)))  # fresh names for every run
    if want("meta.stat", "meta.open_read_close", "meta.open_read_close_flush"):
        with Mount(small, base / "mp-dosfs", base / "dosfs.log") as dm, \
                MinimalMount(small, base / "mp-min", base / "min.log") as mm, \
                MinimalMount(small, base / "mp-minf", base / "minf.log", flush=True) as mf:
            for k, (key, task, what, ref, ref_name) in enumerate((
                    ("meta.stat", "stat_list", "stat", mm, "minimal pyfuse3 FS"),
                    ("meta.open_read_close", "open_read_list", "open+read+close", mm,
                     "minimal pyfuse3 FS"),
                    ("meta.open_read_close_flush", "open_read_list", "open+read+close", mf,
                     "minimal pyfuse3 FS answering FLUSH"))):
                if not want(key):
                    continue
                runs: dict[str, list[float]] = {"d": [], "m": []}
                for r in range(repeats):
                    offset = (r + k * repeats) * per_run  # names no mount has looked up
                    picked = names[offset : offset + per_run]
                    order = [("d", dm.mountpoint), ("m", ref.mountpoint)]
                    for side, point in (order if r % 2 else order[::-1]):
                        paths = [str(point / "by-hash" / h) for h in picked]
                        runs[side].append(_per_object(c, task, paths, base / "list"))
                figs.append(Figure(
                    key, f"{what} of 1 KiB packed objects not yet looked up", "µs/object",
                    Side("dosfs mount", runs["d"], per_run, peak_rss_mib=dm.memory()["VmHWM"]),
                    Side(ref_name, runs["m"], per_run, peak_rss_mib=ref.memory()["VmHWM"]),
                    target=0.8, target_text="≤ 1.25× its cost (≥ 0.8×)",
                    params={"objects": s.meta_small_objects, "per_run": per_run}))
    for key, count, folder, runs_wanted in (
        ("meta.ls_small", s.meta_small_objects, small, repeats),
        ("meta.ls_large", s.meta_large_objects, base / "large", repeats),
    ):
        if not want(key) and not (key == "meta.ls_large" and want("meta.rss_large")):
            continue
        if folder != small:
            c.log(f"  building {count} 1 KiB objects")
            c.worker({"task": "build_kib", "folder": str(folder), "count": count})
        d_runs: list[float] = []
        m_runs: list[float] = []
        peak: dict[str, float] = {}
        rss = {"d": 0.0, "m": 0.0}
        for r in range(runs_wanted):
            for side in (("d", "m") if r % 2 else ("m", "d")):
                point = base / f"mp-ls-{side}"
                if side == "d":
                    with Mount(folder, point, base / "dosfs-ls.log") as dm:
                        d_runs.append(run_timed(["ls", "-l", str(point / "by-hash")]))
                        rss["d"] = max(rss["d"], dm.memory()["VmHWM"])
                        if key == "meta.ls_large" and want("meta.rss_large") and r == 0:
                            lst = base / "all"
                            lst.write_text("\n".join(str(point / "by-hash" / h)
                                                     for h in _all_names(folder)))
                            c.worker({"task": "stat_list", "list": str(lst)})
                            peak = dm.memory()
                else:
                    with MinimalMount(folder, point, base / "min-ls.log") as mm:
                        m_runs.append(run_timed(["ls", "-l", str(point / "by-hash")]))
                        rss["m"] = max(rss["m"], mm.memory()["VmHWM"])
        if want(key):
            target = 0.8 if key == "meta.ls_small" else 0.5
            figs.append(Figure(
                key, f"ls -l by-hash of {count:,} objects (readdir + attributes of each)",
                "µs/entry", Side("dosfs mount", d_runs, count, peak_rss_mib=rss["d"]),
                Side("minimal pyfuse3 FS", m_runs, count, peak_rss_mib=rss["m"]), target=target,
                target_text="≤ 1.25× (≥ 0.8×)" if target == 0.8 else "≤ 2× (≥ 0.5×)",
                params={"objects": count, "runs": runs_wanted}))
        if key == "meta.ls_large" and want("meta.rss_large") and peak:
            figs.append(Figure(
                "meta.rss_large", f"daemon memory after ls -l and stat of all {count:,}",
                "MiB", values={"VmRSS": (peak["VmRSS"], "MiB"), "peak": (peak["VmHWM"], "MiB")},
                value_max=64, target_text="< 64 MiB, flat", params={"objects": count}))
    return figs


def _all_names(folder: Path) -> list[str]:
    import sqlite3

    db = sqlite3.connect(f"file:{folder}/packs.idx?mode=ro", uri=True)
    try:
        return [r[0] for r in db.execute("SELECT hashkey FROM db_object")]
    finally:
        db.close()
