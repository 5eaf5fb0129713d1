"""Every figure of the benchmark: how both sides are set up and measured.

A benchmark function builds its data once (untimed), measures both sides `repeats` times and
returns its figures. In-process sides run in child processes (`worker`), mount sides through real
tools (`cat`, `cp`, `ls`, `xargs cat`) on a real mount. Page cache: warm, except where a figure's
name says `first` (then `sync; echo 3 > /proc/sys/vm/drop_caches` before each timed read).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlib import data
from benchlib.bench_aiida import AIIDA_KEYS, bench_aiida
from benchlib.bench_backup import bench_backup
from benchlib.bench_firstread import FIRST_KEYS, bench_firstread
from benchlib.bench_meta import META_KEYS, bench_meta
from benchlib.bench_views import VIEW_KEYS, bench_views
from benchlib.mounting import Mount, drop_caches, have_fuse, run_timed
from benchlib.report import MIB, Figure, Side
from benchlib.sizes import Sizes

SCRIPTS = Path(__file__).resolve().parent.parent
DOS = "disk-objectstore"


@dataclass
class Ctx:
    """What every benchmark needs: where to put data, how big, how often, what was asked for."""

    work: Path
    sizes: Sizes
    repeats: int
    drop: bool = True
    wanted: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    log: Callable[[str], None] = print

    def want(self, *keys: str) -> bool:
        return any(k in self.wanted for k in keys)

    def worker(self, task: dict[str, Any], timeout: float = 3600) -> dict[str, Any]:
        """Run one task in a fresh child process; returns its JSON result."""
        env = dict(os.environ)
        extra = env.get("PYTHONPATH")
        env["PYTHONPATH"] = str(SCRIPTS) + (":" + extra if extra else "")
        p = subprocess.run([sys.executable, "-m", "benchlib.worker"], input=json.dumps(task),
                           capture_output=True, text=True, env=env, timeout=timeout, check=False)
        if p.returncode != 0:
            tail = p.stderr.strip().splitlines()[-1:] or [f"exit {p.returncode}"]
            raise RuntimeError(f"worker {task['task']}/{task.get('side', '-')}: {tail[0]}"
                               + ("\n" + p.stderr[-3000:] if os.environ.get("BENCH_DEBUG") else ""))
        return json.loads(p.stdout.strip().splitlines()[-1])

    def drop_caches(self, prime: int = 0) -> None:
        """Drop the page cache, then prime the page allocator for `prime` bytes (see
        data.prime_page_cache) so the cold read that follows pays for disk reads, not for the
        VM handing memory back."""
        if not self.drop:
            return
        why = drop_caches()
        if prime:
            data.prime_page_cache(self.work, prime)
        if why:
            self.drop = False
            self.notes.append(why)
            self.log(f"  note: {why}")

    def dir(self, *parts: str) -> Path:
        path = self.work.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path


def side(name: str, result: dict[str, Any], timing: str, work: float, note: str = "") -> Side:
    return Side(name, result["timings"][timing], work, result["peak_rss_kib"] / 1024, note)


def dosfs_name() -> str:
    if os.environ.get("BENCH_DOSFS_IMPL") == "disk_objectstore":
        return "STAND-IN (disk-objectstore)"
    return "dosfs"


# --- API: dosfs vs disk-objectstore ------------------------------------------------------------


def bench_api_reads(ctx: Ctx) -> list[Figure]:
    """Single and bulk reads of small packed objects from containers both libraries built."""
    s = ctx.sizes
    res: dict[str, dict[str, Any]] = {}
    hashes: dict[str, str] = {}
    for sd in ("dos", "dosfs"):
        folder = ctx.work / "api-reads" / sd
        hp = ctx.work / "api-reads" / f"{sd}.hashes"
        ctx.dir("api-reads")
        ctx.worker({"task": "build_packed", "side": sd, "folder": str(folder),
                    "count": s.small_objects, "seed": 1, "hashes_path": str(hp)})
        hashes[sd] = hp.read_text()
        common = {"side": sd, "folder": str(folder), "hashes_path": str(hp),
                  "repeats": ctx.repeats}
        if ctx.want("api.get_single"):
            res[sd + ".single"] = ctx.worker({"task": "get_single", "calls": s.single_gets,
                                              **common})
        if ctx.want("api.get_bulk"):
            res[sd + ".bulk"] = ctx.worker({"task": "get_bulk", **common})
        if ctx.want("api.stream_bulk"):
            res[sd + ".stream"] = ctx.worker({"task": "stream_bulk", **common})
    if hashes["dos"] != hashes["dosfs"]:
        raise AssertionError("the two libraries returned different hashkeys for the same objects")
    n_unique = len(set(hashes["dos"].split()))
    figs = []
    if ctx.want("api.get_single"):
        figs.append(Figure(
            "api.get_single", "get_object_content of one packed object", "µs/call",
            side(dosfs_name(), res["dosfs.single"], "get_single", s.single_gets),
            side(DOS, res["dos.single"], "get_single", s.single_gets),
            target=20, target_text="≥ 20×", params={"calls": s.single_gets,
                                                    "objects_in_container": n_unique}))
    if ctx.want("api.get_bulk"):
        figs.append(Figure(
            "api.get_bulk", "get_objects_content of every small packed object, one call", "s",
            side(dosfs_name(), res["dosfs.bulk"], "get_bulk", 1),
            side(DOS, res["dos.bulk"], "get_bulk", 1),
            target=5, target_text="≥ 5×", params={"objects": n_unique}))
    if ctx.want("api.stream_bulk"):
        figs.append(Figure(
            "api.stream_bulk", "get_objects_stream_and_meta of every small packed object", "s",
            side(dosfs_name(), res["dosfs.stream"], "stream_bulk", 1),
            side(DOS, res["dos.stream"], "stream_bulk", 1),
            target=5, target_text="≥ 5×", params={"objects": n_unique}))
    return figs


def bench_api_pack_write(ctx: Ctx) -> list[Figure]:
    s = ctx.sizes
    res = {}
    for sd in ("dos", "dosfs"):
        res[sd] = ctx.worker({"task": "pack_write", "side": sd, "count": s.small_objects, "seed": 2,
                              "folder": str(ctx.dir("api-pack", sd)), "repeats": ctx.repeats})
    return [Figure(
        "api.pack_write", "add_objects_to_pack of small objects (0-1000 B), fresh container", "s",
        side(dosfs_name(), res["dosfs"], "pack_write", 1), side(DOS, res["dos"], "pack_write", 1),
        target=5, target_text="≥ 5×", params={"objects": s.small_objects})]


def bench_api_loose(ctx: Ctx) -> list[Figure]:
    s = ctx.sizes
    res = {}
    for sd in ("dos", "dosfs"):
        res[sd] = ctx.worker({"task": "loose", "side": sd, "count": s.loose_objects, "seed": 4,
                              "folder": str(ctx.dir("api-loose", sd)), "repeats": ctx.repeats})
    n = s.loose_objects
    return [
        Figure("api.add_loose", "add_object of small objects (loose, fsync'ed each)", "µs/object",
               side(dosfs_name(), res["dosfs"], "add_loose", n),
               side(DOS, res["dos"], "add_loose", n), params={"objects": n}),
        Figure("api.pack_all_loose", "pack_all_loose of those loose objects", "s",
               side(dosfs_name(), res["dosfs"], "pack_all_loose", 1),
               side(DOS, res["dos"], "pack_all_loose", 1), params={"objects": n}),
    ]


def bench_api_stream(ctx: Ctx) -> list[Figure]:
    s = ctx.sizes
    src = ctx.dir("api-stream") / "src.bin"
    digest = data.write_file(src, data.random_chunks(s.stream_bytes))
    res = {}
    for sd in ("dos", "dosfs"):
        res[sd] = ctx.worker({"task": "stream_big", "side": sd, "src": str(src), "sha256": digest,
                              "size": s.stream_bytes, "folder": str(ctx.dir("api-stream", sd)),
                              "repeats": ctx.repeats})
    src.unlink()
    b = s.stream_bytes
    params = {"bytes": b}
    return [
        Figure("api.stream_write", "add_streamed_object of one big object (loose)", "MiB/s",
               side(dosfs_name(), res["dosfs"], "stream_write", b),
               side(DOS, res["dos"], "stream_write", b), params=params),
        Figure("api.stream_read", "get_object_stream of it, read in 1 MiB chunks", "MiB/s",
               side(dosfs_name(), res["dosfs"], "stream_read", b),
               side(DOS, res["dos"], "stream_read", b), params=params),
    ]


def bench_api_compressed(ctx: Ctx) -> list[Figure]:
    s = ctx.sizes
    src = ctx.dir("api-comp") / "src.txt"
    data.write_file(src, data.compressible_chunks(s.compressed_bytes))
    res = {}
    for sd in ("dos", "dosfs"):
        res[sd] = ctx.worker({"task": "compressed_random", "side": sd, "src": str(src),
                              "size": s.compressed_bytes, "read_size": s.random_read_size,
                              "reads": s.compressed_reads, "folder": str(ctx.dir("api-comp", sd)),
                              "repeats": ctx.repeats})
    n = s.compressed_reads
    return [Figure(
        "api.compressed_random", "random 128 KiB seek+read inside one compressed object",
        "ms/read", side(dosfs_name(), res["dosfs"], "compressed_random", n),
        side(DOS, res["dos"], "compressed_random", n),
        params={"object_bytes": s.compressed_bytes, "reads_per_run": n,
                "read_bytes": s.random_read_size})]


def bench_api_compressed_fresh(ctx: Ctx) -> list[Figure]:
    """Each read on a new stream: dosfs reading what it compressed (restart points) and what
    disk-objectstore compressed (after one whole read: shared checkpoints), against
    disk-objectstore reading its own."""
    s = ctx.sizes
    src = ctx.dir("api-comp-fresh") / "src.txt"
    data.write_file(src, data.compressible_chunks(s.compressed_bytes))
    n = min(s.compressed_reads, 20)
    res = {}
    for name, writer, reader in (("dosfs", "dosfs", "dosfs"), ("foreign", "dos", "dosfs"),
                                 ("dos", "dos", "dos")):
        res[name] = ctx.worker({"task": "compressed_fresh", "side": reader, "writer": writer,
                                "src": str(src), "size": s.compressed_bytes,
                                "read_size": s.random_read_size, "reads": n,
                                "folder": str(ctx.dir("api-comp-fresh", name)),
                                "repeats": ctx.repeats})
    params = {"object_bytes": s.compressed_bytes, "reads_per_run": n,
              "read_bytes": s.random_read_size}
    return [
        Figure("api.compressed_fresh", "random 128 KiB read, each on a new stream, inside one "
               "compressed object dosfs wrote", "ms/read",
               side(dosfs_name(), res["dosfs"], "compressed_fresh", n),
               side(DOS, res["dos"], "compressed_fresh", n), params=params),
        Figure("api.compressed_fresh_foreign", "the same, object compressed by "
               "disk-objectstore and read once before", "ms/read",
               side(dosfs_name(), res["foreign"], "compressed_fresh", n),
               side(DOS, res["dos"], "compressed_fresh", n), params=params),
    ]


# --- mount: dosfs mount vs native --------------------------------------------------------------


MOUNT_KEYS = [
    "mount.read_loose_first", "mount.read_loose_again", "mount.read_packed_first",
    "mount.read_packed_again", "mount.read_compressed_first", "mount.read_compressed_again",
    "mount.verify_first", "mount.cat_small", "mount.stat", "mount.ls", "mount.cp_incoming",
    "mount.daemon_rss",
]


def _write_list(path: Path, items: list[str], sep: str = "\0") -> Path:
    path.write_text(sep.join(items))
    return path


def _cat_files(listfile: Path) -> float:
    return run_timed(["xargs", "-0", "-a", str(listfile), "cat"])


def bench_mount(ctx: Ctx) -> list[Figure]:
    """One container, one mount, every mount figure (the data is built only for what was asked)."""
    reason = have_fuse()
    if reason:
        raise RuntimeError(f"cannot mount: {reason}")
    s = ctx.sizes
    base = ctx.dir("mount")
    src = ctx.dir("mount", "src")
    want_big = ctx.want("mount.read_loose_first", "mount.read_loose_again",
                        "mount.read_packed_first", "mount.read_packed_again", "mount.verify_first")
    want_comp = ctx.want("mount.read_compressed_first", "mount.read_compressed_again")
    big = s.mount_big_bytes if want_big else 4096
    comp = s.mount_compressed_bytes if want_comp else 4096
    n_cat, n_stat = s.mount_cat_files, s.mount_stat_files
    n_small = max(s.mount_ls_objects, (n_cat + n_stat) * ctx.repeats)
    ctx.log(f"  building the mounted container ({n_small} small objects, big objects of "
            f"{big // MIB} MiB, compressed {comp // MIB} MiB)")
    loose_src, packed_src, comp_src = src / "loose.bin", src / "packed.bin", src / "comp.txt"
    data.write_file(loose_src, data.random_chunks(big))
    data.write_file(packed_src, data.random_chunks(big))
    data.write_file(comp_src, data.compressible_chunks(comp))
    container, plain = base / "container", base / "plain"
    hp = base / "small.hashes"
    built = ctx.worker({"task": "build_mount_container", "folder": str(container),
                        "loose_src": str(loose_src), "packed_src": str(packed_src),
                        "compressed_src": str(comp_src), "small_count": n_small, "seed": 5,
                        "plain_dir": str(plain), "hashes_path": str(hp)})["info"]
    small = hp.read_text().split()
    plain_files = sorted(str(p) for p in plain.iterdir())
    cm = built["compressed_meta"]
    if not cm["compressed"]:
        raise AssertionError("the compressed object was stored uncompressed")
    pack = container / "packs" / str(cm["pack_id"])
    figs: list[Figure] = []
    mp = ctx.dir("mount", "mp")
    with Mount(container, mp, base / "daemon.log") as m:
        byhash = mp / "by-hash"
        daemon_mem: dict[str, dict[str, float]] = {"idle": m.memory()}
        worker_peak: dict[str, float] = {}

        def add(fig: Figure) -> None:
            """Record the figure with the daemon's peak RSS so far (a) and the in-process
            reference's peak (b) where there is one."""
            assert fig.a is not None and fig.b is not None
            fig.a.peak_rss_mib = m.memory()["VmHWM"]
            fig.b.peak_rss_mib = worker_peak.pop("b", None)
            figs.append(fig)

        def peak(result: dict[str, Any]) -> dict[str, Any]:
            worker_peak["b"] = max(worker_peak.get("b", 0.0), result["peak_rss_kib"] / 1024)
            return result

        def native_cat(path: Path) -> Callable[[], float]:
            return lambda: run_timed(["cat", str(path)])

        def zlib_native() -> float:
            r = peak(ctx.worker({"task": "zlib_read", "pack": str(pack), "offset": cm["offset"],
                            "length": cm["length"], "size": comp, "repeats": 1}))
            return float(r["timings"]["zlib_read"][0])

        reads = [("loose", built["loose"], native_cat(loose_src), "cat of a plain file", big),
                 ("packed", built["packed"], native_cat(packed_src), "cat of a plain file", big),
                 ("compressed", built["compressed"], zlib_native, "in-process zlib", comp)]
        for kind, h, native, native_name, size in reads:
            mounted_cat = lambda h=h: run_timed(["cat", str(byhash / h)])  # noqa: E731
            first_key, again_key = f"mount.read_{kind}_first", f"mount.read_{kind}_again"
            if ctx.want(first_key):
                a_runs: list[float] = []
                b_runs: list[float] = []
                for r in range(ctx.repeats):
                    order = [(a_runs, mounted_cat), (b_runs, native)]
                    for runs, fn in (order if r % 2 else order[::-1]):
                        ctx.drop_caches(prime=size + 256 * MIB)
                        runs.append(fn())
                cold = "cold page cache" if ctx.drop else "WARM (could not drop caches)"
                target = 0.35 if kind != "compressed" else None
                add(Figure(
                    first_key, f"first sequential read of a {kind} object ({cold})", "MiB/s",
                    Side("dosfs mount: cat", a_runs, size), Side(native_name, b_runs, size),
                    target=target, target_text="≥ 0.35×" if target else "",
                    params={"bytes": size, "cold": ctx.drop}))
            if ctx.want(again_key):
                mounted_cat()
                native()
                a_runs, b_runs = [], []
                # Cheap when warm (about 0.1 s a GiB) and noisy: a few more runs.
                for _ in range(max(5, ctx.repeats) if kind != "compressed" else ctx.repeats):
                    a_runs.append(mounted_cat())
                    b_runs.append(native())
                target = 0.9 if kind != "compressed" else None
                add(Figure(
                    again_key, f"repeated sequential read of a {kind} object (warm)", "MiB/s",
                    Side("dosfs mount: cat", a_runs, size), Side(native_name, b_runs, size),
                    target=target, target_text="≥ 0.9×" if target else "",
                    params={"bytes": size}))
        if ctx.want("mount.verify_first"):
            # the cost of verification: the same cold read through a verify=off mount
            h = built["packed"]
            with Mount(container, ctx.dir("mount", "mp-raw"), base / "daemon-raw.log",
                       options="verify=off") as raw:
                on_runs: list[float] = []
                off_runs: list[float] = []
                for r in range(max(9, ctx.repeats)):  # cold 1 GiB reads vary +-50% here
                    order = [(on_runs, mp), (off_runs, raw.mountpoint)]
                    for runs, point in (order if r % 2 else order[::-1]):
                        ctx.drop_caches(prime=big + 256 * MIB)
                        runs.append(run_timed(["cat", str(point / "by-hash" / h)]))
            add(Figure(
                "mount.verify_first", "first read of a packed object, verify=on vs verify=off "
                "(the cost of checking its reads against its block sums)", "MiB/s",
                Side("verify=on (default)", on_runs, big), Side("verify=off", off_runs, big),
                target=1 / 1.15, target_text="≥ 0.87× (within 15%)",
                params={"bytes": big, "cold": ctx.drop}))
        daemon_mem["after_big_reads"] = m.memory()

        # Small files: fresh names per run (the first lookup is what costs through FUSE), backing
        # bytes warm on both sides.
        def warm_small(lo: int, hi: int) -> None:
            """Backing bytes warm on both sides: the plain files, and the pack region written
            after the compressed object (where the small objects went)."""
            _cat_files(_write_list(base / "warm.list", plain_files[lo:hi]))
            with open(pack, "rb") as f:
                f.seek(cm["offset"] + cm["length"])
                while f.read(MIB):
                    pass

        if ctx.want("mount.cat_small"):
            a_runs, b_runs = [], []
            for r in range(ctx.repeats):
                lo, hi = r * n_cat, (r + 1) * n_cat
                warm_small(lo, hi)
                b_runs.append(_cat_files(_write_list(base / "n.list", plain_files[lo:hi])))
                a_runs.append(_cat_files(_write_list(
                    base / "m.list", [str(byhash / h) for h in small[lo:hi]])))
            add(Figure(
                "mount.cat_small", "cat of small packed objects (fresh names) vs plain files",
                "files/s", Side("dosfs mount: xargs cat", a_runs, n_cat),
                Side("xargs cat of plain files", b_runs, n_cat), params={"files": n_cat}))
        if ctx.want("mount.stat"):
            a_runs, b_runs = [], []
            for r in range(ctx.repeats):
                lo = ctx.repeats * n_cat + r * n_stat
                hi = lo + n_stat
                warm_small(lo, hi)
                nl = _write_list(base / "n.list", plain_files[lo:hi], "\n")
                ml = _write_list(base / "m.list", [str(byhash / h) for h in small[lo:hi]], "\n")
                b_runs.append(peak(ctx.worker({"task": "stat_list", "list": str(nl)}))
                              ["timings"]["stat"][0])
                a_runs.append(ctx.worker({"task": "stat_list", "list": str(ml)})
                              ["timings"]["stat"][0])
            add(Figure(
                "mount.stat", "os.stat of objects (fresh names: a daemon lookup each)",
                "µs/file", Side("dosfs mount: os.stat", a_runs, n_stat),
                Side("os.stat of plain files", b_runs, n_stat), params={"files": n_stat}))
        if ctx.want("mount.ls"):
            n_entries = len(os.listdir(byhash))
            run_timed(["ls", str(plain)])
            a_runs, b_runs = [], []
            for _ in range(ctx.repeats):
                b_runs.append(run_timed(["ls", str(plain)]))
                a_runs.append(run_timed(["ls", str(byhash)]))
            add(Figure(
                "mount.ls", "ls of by-hash vs ls of a folder of as many plain files", "entries/s",
                Side("dosfs mount: ls by-hash", a_runs, n_entries),
                Side("ls of plain folder", b_runs, len(plain_files)),
                params={"entries": n_entries}))
        daemon_mem["after_small_files"] = m.memory()
        if ctx.want("mount.cp_incoming"):
            add(_cp_incoming(ctx, m, big if want_big else s.mount_big_bytes, peak))
            daemon_mem["after_cp"] = m.memory()
        daemon_mem["end"] = m.memory()
    if ctx.want("mount.daemon_rss"):
        hwm = max(v["VmHWM"] for v in daemon_mem.values())
        figs.append(Figure(
            "mount.daemon_rss", "daemon memory while serving the figures above", "MiB",
            values={"idle RSS": (daemon_mem["idle"]["VmRSS"], "MiB"),
                    "end RSS": (daemon_mem["end"]["VmRSS"], "MiB"), "peak": (hwm, "MiB")},
            value_max=64, target_text="< 64 MiB", extra={"by_stage_mib": daemon_mem},
            params={"objects": n_small + 3}))
    return figs


def _cp_incoming(ctx: Ctx, m: Mount, size: int,
                 peak: Callable[[dict[str, Any]], dict[str, Any]]) -> Figure:
    """cp of a big new file into incoming/ (until its symlink appears: committed) vs an
    in-process read + write + sha256 + rename of the same file (and the same with fsync)."""
    incoming = m.mountpoint / "incoming"
    src_dir, dest = ctx.dir("mount", "cp-src"), ctx.dir("mount", "ingest")
    a_runs: list[float] = []
    cp_only: list[float] = []
    b_runs: list[float] = []
    b_fsync: list[float] = []
    for r in range(ctx.repeats):
        src = src_dir / f"new{r}.bin"
        digest = data.write_file(src, data.random_chunks(size))
        os.sync()
        target = incoming / f"new{r}.bin"
        data.prime_page_cache(ctx.work, size + 256 * MIB)
        t0 = time.perf_counter()
        run_timed(["cp", str(src), str(target)])
        cp_only.append(time.perf_counter() - t0)
        deadline = time.monotonic() + 300
        while not target.is_symlink():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{target} did not become a symlink within 300 s")
            time.sleep(0.001)
        a_runs.append(time.perf_counter() - t0)
        link = os.readlink(target)
        if not link.endswith(digest):
            raise AssertionError(f"incoming/{target.name} -> {link}, expected hash {digest}")
        os.sync()
        variants = [(False, b_runs), (True, b_fsync)]
        for fsync, runs in variants if r % 2 == 0 else variants[::-1]:
            out = ctx.worker({"task": "ingest", "src": str(src), "dest": str(dest / str(fsync)),
                              "fsync": fsync})
            if not fsync:
                peak(out)
            if out["info"]["sha256"] != digest:
                raise AssertionError("in-process ingest hashed differently")
            runs.append(out["timings"]["ingest"][0])
            shutil.rmtree(dest / str(fsync))
            os.sync()
        src.unlink()
    fsync_side = Side("ingest with fsync", b_fsync, size)
    a = Side("dosfs mount: cp into incoming/ until committed", a_runs, size)
    return Figure(
        "mount.cp_incoming", "cp of a new big file into incoming/ vs in-process ingest", "MiB/s",
        a, Side("in-process read+write+sha256+rename", b_runs, size), target=0.6,
        target_text="≥ 0.6×", params={"bytes": size},
        extra={"cp_returned_mib_s": Side("cp", cp_only, size).value("MiB/s"),
               "ingest_with_fsync_mib_s": fsync_side.value("MiB/s"),
               "speed_vs_ingest_with_fsync": fsync_side.per_work() / a.per_work()})


# --- daemon: memory and lookups vs index size ---------------------------------------------------


def count_label(n: int) -> str:
    """10^6 for a power of ten, else the number with separators."""
    text = str(n)
    if text.startswith("1") and set(text[1:]) <= {"0"} and n >= 100:
        return f"10^{len(text) - 1}"
    return f"{n:,}"


def bench_daemon(ctx: Ctx) -> list[Figure]:
    reason = have_fuse()
    if reason:
        raise RuntimeError(f"cannot mount: {reason}")
    s = ctx.sizes
    serve = min(s.daemon_serve_files, s.daemon_small_index // ctx.repeats)
    mem: dict[str, dict[str, dict[str, float]]] = {}
    hit: dict[str, list[float]] = {}
    miss: dict[str, list[float]] = {}
    counts = {"small": s.daemon_small_index, "large": s.daemon_large_index}
    build_s: dict[str, float] = {}
    for label, count in counts.items():
        folder = ctx.work / "daemon" / label
        ctx.dir("daemon")
        t0 = time.perf_counter()
        ctx.worker({"task": "build_index", "folder": str(folder), "count": count})
        build_s[label] = time.perf_counter() - t0
        ctx.log(f"  {count} objects indexed in {build_s[label]:.1f} s")
        rng = random.Random(9)
        picks = rng.sample(range(count), serve * ctx.repeats)
        mp = ctx.dir("daemon", f"mp-{label}")
        with Mount(folder, mp, ctx.work / "daemon" / f"{label}.log") as m:
            mem[label] = {"idle": m.memory()}
            hit[label], miss[label] = [], []
            for r in range(ctx.repeats):
                names = [data.tiny_hashkey(i) for i in picks[r * serve:(r + 1) * serve]]
                paths = [str(mp / "by-hash" / h) for h in names]
                lst = _write_list(ctx.work / "daemon" / "l", paths, "\n")
                hit[label].append(ctx.worker({"task": "stat_list", "list": str(lst)})
                                  ["timings"]["stat"][0])
                unknown = [str(mp / "by-hash" / f"{rng.getrandbits(256):064x}")
                           for _ in range(min(1000, serve))]
                lst = _write_list(ctx.work / "daemon" / "l", unknown, "\n")
                miss[label].append(ctx.worker({"task": "stat_list", "list": str(lst),
                                               "missing": True})["timings"]["stat"][0])
                _cat_files(_write_list(ctx.work / "daemon" / "c", paths))
            mem[label]["served"] = m.memory()
    n_miss = min(1000, serve)
    small_l, large_l = count_label(counts["small"]), count_label(counts["large"])
    vals = {}
    for label, lab in (("small", small_l), ("large", large_l)):
        vals[f"{lab} idle"] = (mem[label]["idle"]["VmRSS"], "MiB")
        vals[f"{lab} served"] = (mem[label]["served"]["VmRSS"], "MiB")
        vals[f"{lab} peak"] = (mem[label]["served"]["VmHWM"], "MiB")
    params = {"objects": counts, "lookups_per_run": serve, "misses_per_run": n_miss,
              "index_build_s": build_s}
    return [
        Figure("daemon.rss", "daemon RSS at idle and after serving lookups + cats", "MiB",
               values=vals, value_max=64, target_text="< 64 MiB, flat", params=params,
               extra={"memory_mib": mem}),
        Figure("daemon.lookup", "first lookup (os.stat) of an existing object", "µs/lookup",
               Side(f"{large_l} objects", hit["large"], serve),
               Side(f"{small_l} objects", hit["small"], serve), target_text="≈ 1× (flat)",
               params=params),
        Figure("daemon.lookup_miss", "lookup of an unknown hash (ENOENT)", "µs/lookup",
               Side(f"{large_l} objects", miss["large"], n_miss),
               Side(f"{small_l} objects", miss["small"], n_miss), target_text="≈ 1× (flat)",
               params=params),
    ]


@dataclass
class Bench:
    name: str
    keys: list[str]
    run: Callable[[Ctx], list[Figure]]
    #: only when named (`scripts/bench aiida`), not in a run of everything
    on_request: bool = False


BENCHES = [
    Bench("api.reads", ["api.get_single", "api.get_bulk", "api.stream_bulk"], bench_api_reads),
    Bench("api.pack_write", ["api.pack_write"], bench_api_pack_write),
    Bench("api.loose", ["api.add_loose", "api.pack_all_loose"], bench_api_loose),
    Bench("api.stream", ["api.stream_write", "api.stream_read"], bench_api_stream),
    Bench("api.compressed", ["api.compressed_random"], bench_api_compressed),
    Bench("api.compressed_fresh", ["api.compressed_fresh", "api.compressed_fresh_foreign"],
          bench_api_compressed_fresh),
    Bench("mount", MOUNT_KEYS, bench_mount),
    Bench("first", FIRST_KEYS, bench_firstread),
    Bench("daemon", ["daemon.rss", "daemon.lookup", "daemon.lookup_miss"], bench_daemon),
    Bench("meta", META_KEYS, bench_meta),
    Bench("backup", ["backup.first", "backup.incremental"], bench_backup),
    Bench("views", VIEW_KEYS, bench_views),
    Bench("aiida", AIIDA_KEYS, bench_aiida, on_request=True),
]
ALL_KEYS = [k for b in BENCHES for k in b.keys]
DEFAULT_KEYS = [k for b in BENCHES if not b.on_request for k in b.keys]
