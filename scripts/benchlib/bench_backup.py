"""`dosfs backup` vs `dostore backup` (disk-objectstore 1.5.0) of the same container into a local
DEST, as a user runs them: the two command lines, start-up included.

The container holds `small_objects` packed objects of 0-1000 B plus loose ones. Per run, each side
gets a fresh DEST: a first backup, then (after adding a few loose objects, the same for both) an
incremental one into the same DEST, which hard-links what did not change. The sides alternate
which goes first; `sync` runs (untimed) before every timed command. Page cache warm. dosfs flushes
the backup (syncfs) before it is renamed into place; dostore does not flush at all.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from benchlib.mounting import run_timed
from benchlib.report import Figure, Side

if TYPE_CHECKING:  # figures.py imports this module to register it
    from benchlib.figures import Ctx

NEW_OBJECTS = 10


def _exe(name: str, fallback: list[str]) -> list[str]:
    found = shutil.which(name, path=os.path.dirname(sys.executable))
    return [found] if found else fallback


def _add_loose(folder: Path, count: int, seed: int) -> None:
    from dosfs import Container

    c = Container(folder)
    try:
        for i in range(count):
            c.add_object(b"bench backup loose %d %d " % (seed, i) * (i % 40 + 1))
    finally:
        c.close()


def _objects(folder: Path) -> list[str]:
    from dosfs import Container

    c = Container(folder)
    try:
        return list(c.iter_hashkeys())
    finally:
        c.close()


def bench_backup(ctx: Ctx) -> list[Figure]:
    from benchlib.figures import DOS, dosfs_name

    s = ctx.sizes
    base = ctx.dir("backup")
    src = base / "container"
    loose = max(20, s.loose_objects // 10)
    ctx.log(f"  building the container ({s.small_objects} packed + {loose} loose objects)")
    ctx.worker({"task": "build_packed", "side": "dosfs", "folder": str(src),
                "count": s.small_objects, "seed": 11, "hashes_path": str(base / "hashes")})
    _add_loose(src, loose, seed=0)
    pack_bytes = sum(p.stat().st_size for p in (src / "packs").iterdir())
    dosfs_cmd = _exe("dosfs", [sys.executable, "-m", "dosfs.cli"])
    dostore_cmd = _exe("dostore", [sys.executable, "-m", "disk_objectstore.cli"])

    def run_dosfs(dest: Path) -> float:
        return run_timed([*dosfs_cmd, "backup", str(src), str(dest)])

    def run_dos(dest: Path) -> float:
        return run_timed([*dostore_cmd, "-p", str(src), "backup", str(dest),
                          "--verbosity", "silent"])

    first: dict[str, list[float]] = {"a": [], "b": []}
    incr: dict[str, list[float]] = {"a": [], "b": []}
    dests = {"a": base / "dest-dosfs", "b": base / "dest-dostore"}
    runners = {"a": run_dosfs, "b": run_dos}
    for r in range(ctx.repeats):
        order = ["a", "b"] if r % 2 == 0 else ["b", "a"]
        for side in order:
            shutil.rmtree(dests[side], ignore_errors=True)
            subprocess.run(["sync"], check=False)
            first[side].append(runners[side](dests[side]))
        _add_loose(src, NEW_OBJECTS, seed=r + 1)
        for side in order:
            subprocess.run(["sync"], check=False)
            incr[side].append(runners[side](dests[side]))
    # both last backups hold every object of the container (untimed check)
    want = _objects(src)
    for side, dest in dests.items():
        got = _objects(dest / "last-backup")
        if got != want:
            raise AssertionError(f"backup of side {side} has {len(got)} objects, expected "
                                 f"{len(want)}")
    params = {"packed_objects": s.small_objects, "loose_objects": loose,
              "pack_bytes": pack_bytes, "new_objects_before_incremental": NEW_OBJECTS,
              "dest": "local folder", "dosfs_flushes": "syncfs before the rename",
              "dostore_flushes": "no"}
    return [
        Figure("backup.first", "first backup into an empty DEST (command line, start-up "
               "included)", "s", Side(dosfs_name(), first["a"], 1), Side(DOS, first["b"], 1),
               target=1, target_text="≥ 1×", params=params),
        Figure("backup.incremental", f"next backup into the same DEST after {NEW_OBJECTS} new "
               "loose objects (hard links)", "s", Side(dosfs_name(), incr["a"], 1),
               Side(DOS, incr["b"], 1), target=1, target_text="≥ 1×", params=params),
    ]
