"""First read of a big object through a fresh dosfs daemon (verification on, the default) against
the smallest pyfuse3 filesystem serving the same container (benchlib/minimalfs.py: one pread per
request, no verification), page cache dropped, idle and with one CPU hog beside both.

Every run mounts both afresh (a daemon remembers verdicts per inode; a fresh one has none), and
the two sides alternate. What dosfs verifies in each figure:
- `first.loose`, `first.packed`: objects dosfs wrote, so their block sums exist: each read is
  checked against them (docs/semantics.md, "Which bytes are verified, when");
- `first.packed_nosums`: the same object with its block sums removed before each run, as for an
  object another tool wrote: the whole object is hashed with sha256 while it is served.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from benchlib import data
from benchlib.bench_meta import MinimalMount
from benchlib.mounting import Mount, have_fuse, run_timed
from benchlib.report import Figure, Side

if TYPE_CHECKING:  # figures.py imports this module to register it
    from benchlib.figures import Ctx

MIB = 1 << 20
FIRST_KEYS = ["first.loose", "first.packed", "first.loose_hog", "first.packed_hog",
              "first.packed_nosums"]
SUMS_FILE = "dosfs-blocksums.sqlite"


class CpuHog:
    """One busy process (a CPU-bound neighbour), the same for both sides."""

    def __enter__(self) -> CpuHog:
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.kill()
        self.proc.wait()


def _drop_sums(container: Path) -> None:
    for name in os.listdir(container):
        if name.startswith(SUMS_FILE):
            os.unlink(container / name)


def bench_firstread(ctx: Ctx) -> list[Figure]:
    reason = have_fuse()
    if reason:
        raise RuntimeError(f"cannot mount: {reason}")
    size = ctx.sizes.mount_big_bytes
    base = ctx.dir("first")
    src = ctx.dir("first", "src")
    loose_src, packed_src, tiny = src / "loose.bin", src / "packed.bin", src / "tiny.txt"
    ctx.log(f"  building a container with a loose and a packed object of {size // MIB} MiB")
    data.write_file(loose_src, data.random_chunks(size))
    data.write_file(packed_src, data.random_chunks(size))
    data.write_file(tiny, data.compressible_chunks(4096))
    container = base / "container"
    built = ctx.worker({"task": "build_mount_container", "folder": str(container),
                        "loose_src": str(loose_src), "packed_src": str(packed_src),
                        "compressed_src": str(tiny), "small_count": 0, "seed": 1,
                        "plain_dir": str(src / "plain"),
                        "hashes_path": str(base / "hashes")})["info"]
    loose_src.unlink()
    packed_src.unlink()
    figs: list[Figure] = []
    cases = [("first.loose", "loose", False, False), ("first.packed", "packed", False, False),
             ("first.loose_hog", "loose", True, False), ("first.packed_hog", "packed", True, False),
             ("first.packed_nosums", "packed", False, True)]
    for key, kind, hog, nosums in cases:
        if not ctx.want(key):
            continue
        h = built[kind]
        runs: dict[str, list[float]] = {"d": [], "m": []}
        peak = {"d": 0.0, "m": 0.0}
        # cold 1 GiB reads vary a lot here: 5 runs at least; a smoke run's tiny objects 3
        for r in range(max(ctx.repeats, 5 if size >= 512 * MIB else 3)):
            for side in (("d", "m") if r % 2 else ("m", "d")):
                point = base / f"mp-{side}"
                if nosums and side == "d":
                    _drop_sums(container)
                opener = (Mount(container, point, base / "dosfs.log") if side == "d"
                          else MinimalMount(container, point, base / "min.log"))
                with opener as m:
                    ctx.drop_caches(prime=size + 256 * MIB)
                    if hog:
                        with CpuHog():
                            runs[side].append(run_timed(["cat", str(point / "by-hash" / h)]))
                    else:
                        runs[side].append(run_timed(["cat", str(point / "by-hash" / h)]))
                    peak[side] = max(peak[side], m.memory()["VmHWM"])
        what = {"loose": "a loose", "packed": "a packed"}[kind]
        how = "block sums removed before each run (sha256 of the whole)" if nosums else \
            "verified by its block sums"
        cold = "cold page cache" if ctx.drop else "WARM (could not drop caches)"
        figs.append(Figure(
            key, f"first read of {what} object through a fresh mount, {how}"
            + (", one CPU hog beside" if hog else "") + f" ({cold})", "MiB/s",
            Side("dosfs mount (verify on)", runs["d"], size, peak_rss_mib=peak["d"]),
            Side("minimal pyfuse3 FS", runs["m"], size, peak_rss_mib=peak["m"]),
            target=None if nosums else 0.9, target_text="" if nosums else "≥ 0.9×",
            params={"bytes": size, "cold": ctx.drop, "hog": hog}))
    return figs
