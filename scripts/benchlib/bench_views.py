"""nodes/ views of an AiiDA profile (issue 14) against what a user does today: `verdi node repo
dump`. Same profile (core.sqlite_dos, `loose_objects` FolderData nodes of 2 files and 1 folder),
same tools after it: `ls -lR` of every node's tree, then `cat` of every file.

* views.first_byte: the first byte of one node's file: `cat` through the mount vs `verdi node repo
  dump PK DIR && cat DIR/in.txt` (verdi's start-up included: it is what the user waits for).
* views.ls_cat_all: `ls -lR` + `cat` of all nodes' files through the mount vs dumping them all
  first (one AiiDA process, node.base.repository.copy_tree: what `verdi node repo dump` runs per
  node) and then the same `ls -lR` + `cat` of the dump. Disk used by the dump is reported.

Needs aiida-core in .venv-aiida (tests/views/conftest.py installs it); without it the figures say
so (an error row), never a made-up number.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchlib.mounting import Mount, run_timed
from benchlib.report import Figure, Side

if TYPE_CHECKING:  # figures.py imports this module to register it
    from benchlib.figures import Ctx

ROOT = Path(__file__).resolve().parents[2]
AIIDA_PY = Path(os.environ.get("DOSFS_AIIDA_VENV", ROOT / ".venv-aiida")) / "bin" / "python"
HELPER = ROOT / "tests" / "views" / "aiida_helper.py"
VIEW_KEYS = ["views.first_byte", "views.ls_cat_all"]


def _aiida(home: Path, *args: str) -> dict[str, Any]:
    env = {**os.environ, "AIIDA_PATH": str(home), "PATH": f"{AIIDA_PY.parent}:{os.environ['PATH']}"}
    out = subprocess.run([str(AIIDA_PY), str(HELPER), *args], check=True, env=env, text=True,
                         capture_output=True, timeout=3600).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def _walk_cmd(folder: Path) -> list[str]:
    return ["sh", "-c", 'ls -lR "$1" > /dev/null && find "$1" -type f -exec cat {} + > /dev/null',
            "sh", str(folder)]


def bench_views(ctx: Ctx) -> list[Figure]:
    if not AIIDA_PY.exists():
        raise RuntimeError(f"aiida-core is not installed in {AIIDA_PY.parent.parent} (run "
                           "tests/views once, or pip install aiida-core there)")
    n = max(20, ctx.sizes.loose_objects)
    base = ctx.dir("views")
    home = ctx.dir("views", "aiida")
    ctx.log(f"  building an AiiDA profile with {n} nodes")
    _aiida(home, "create")
    profile = _aiida(home, "many", str(n))
    container, database = Path(profile["container"]), profile["database"]
    pk = 5  # one of the bench's FolderData nodes (1-4 are the fixed ones of `create`)
    env = {**os.environ, "AIIDA_PATH": str(home), "PATH": f"{AIIDA_PY.parent}:{os.environ['PATH']}"}
    verdi = str(AIIDA_PY.parent / "verdi")
    first = {"a": [], "b": []}  # type: dict[str, list[float]]
    every = {"a": [], "b": []}  # type: dict[str, list[float]]
    dump_bytes = 0
    mnt = ctx.dir("views", "mnt")
    with Mount(container, mnt, base / "mount.log", options=f"aiida_db={database}"):
        nodes = mnt / "nodes" / "by-pk"
        if not (nodes / str(pk) / "in.txt").exists():
            raise RuntimeError("the view does not show the bench's nodes")
        for _ in range(ctx.repeats):
            first["a"].append(run_timed(["cat", str(nodes / str(pk) / "in.txt")]))
            one = base / "one"
            shutil.rmtree(one, ignore_errors=True)
            first["b"].append(run_timed(["sh", "-c", '"$1" node repo dump "$2" "$3" && '
                                         'cat "$3/in.txt"', "sh", verdi, str(pk), str(one)],
                                        env=env))
            ctx.drop_caches()
            every["a"].append(run_timed(_walk_cmd(nodes)))
            dump = base / "dump"
            shutil.rmtree(dump, ignore_errors=True)
            every["b"].append(run_timed(["sh", "-c", '"$1" "$2" dump "$3" > /dev/null && ls -lR '
                                         '"$3" > /dev/null && find "$3" -type f -exec cat {} + '
                                         '> /dev/null', "sh", str(AIIDA_PY), str(HELPER),
                                         str(dump)], env=env))
            dump_bytes = int(subprocess.run(["du", "-sb", str(dump)], check=True, text=True,
                                            capture_output=True).stdout.split()[0])
    params = {"nodes": n + 4, "files_per_node": 2, "folders_per_node": 1,
              "dump_disk_bytes": dump_bytes, "view_disk_bytes": 0}
    return [
        Figure("views.first_byte", "first byte of a node's file: cat through nodes/ vs verdi "
               "node repo dump + cat", "s", Side("dosfs view", first["a"], 1),
               Side("verdi node repo dump", first["b"], 1), target=5, target_text="≥ 5×",
               params=params),
        Figure("views.ls_cat_all", "ls -lR + cat of every node's files: through nodes/ vs dump "
               "all, then the same on the dump", "s", Side("dosfs view", every["a"], 1),
               Side("dump (copy_tree)", every["b"], 1), target=5, target_text="≥ 5×",
               params=params),
    ]
