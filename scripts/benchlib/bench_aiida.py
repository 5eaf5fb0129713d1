"""AiiDA's own maintenance on both engines (issue 24): `verdi storage maintain --full` of the
same profile content, once with disk-objectstore's Container (AiiDA as shipped) and once with
dosfs's (the import shim of tests/views/dosfs_shim on PYTHONPATH). Each run gets a fresh
profile (maintain packs the loose objects, so a second run has nothing to do); the time is of
the whole command, AiiDA's start-up included, as a user waits for it. Minutes, not seconds:
only run when asked for (`scripts/bench aiida`), not in a run of everything.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from benchlib.bench_views import AIIDA_PY, HELPER, ROOT
from benchlib.report import Figure, Side

if TYPE_CHECKING:  # figures.py imports this module to register it
    from benchlib.figures import Ctx

AIIDA_KEYS = ["aiida.maintain_full"]
SHIM = ROOT / "tests" / "views" / "dosfs_shim"


def _env(home: Path, dosfs: bool) -> dict[str, str]:
    env = {**os.environ, "AIIDA_PATH": str(home), "PATH": f"{AIIDA_PY.parent}:{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)
    if dosfs:
        env.update(PYTHONPATH=str(SHIM), DOSFS_ROOT=str(ROOT))
    return env


def _run(env: dict[str, str], *args: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([str(AIIDA_PY), str(HELPER), *args], check=True, env=env,
                   capture_output=True, timeout=3600)
    return time.perf_counter() - t0


def bench_aiida(ctx: Ctx) -> list[Figure]:
    if not AIIDA_PY.exists():
        raise RuntimeError(f"aiida-core is not installed in {AIIDA_PY.parent.parent} (run "
                           "tests/views once)")
    n = max(20, ctx.sizes.loose_objects)
    runs: dict[str, list[float]] = {"dosfs": [], "dos": []}
    for i in range(min(ctx.repeats, 3)):  # a new profile each: slow, so `scripts/bench aiida`
        for side in ("dos", "dosfs"):
            home = ctx.dir("aiida-maintain", f"{side}-{i}")
            env = _env(home, side == "dosfs")
            ctx.log(f"  {side}: a profile with {n} nodes")
            _run(env, "create")
            _run(env, "many", str(n))
            runs[side].append(_run(env, "maintain"))
    return [Figure("aiida.maintain_full", "storage maintain --full (as verdi runs it) of "
                   "the same new profile", "s",
                   Side("AiiDA on dosfs", runs["dosfs"], 1),
                   Side("AiiDA on disk-objectstore", runs["dos"], 1),
                   params={"nodes": n + 4, "files_per_node": 2})]
