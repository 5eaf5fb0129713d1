"""AiiDA itself on dosfs's engine (issue 24): a real AiiDA (in .venv-aiida) with dosfs's
`Container` in place of disk-objectstore's, through an import shim that lives in this test only
(tests/views/dosfs_shim/sitecustomize.py, on PYTHONPATH for every AiiDA process, verdi included).
A fresh core.sqlite_dos profile stores a few hundred nodes with files, reads them back, is
maintained, backed up twice, archived and imported into a second profile; anything AiiDA prints
as an error or a traceback fails the test. Then disk-objectstore itself validates both
containers and the backup's, and reads every object of them, each hashing to its key."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import disk_objectstore
import pytest

from tests.views.conftest import HELPER

ROOT = Path(__file__).resolve().parents[2]
SHIM = Path(__file__).with_name("dosfs_shim")
NODES = 300


def _clean(out: str, what: str) -> None:
    """What AiiDA prints for a failure (its CLI's 'Error:' and 'Critical:', any traceback)."""
    for marker in ("Traceback", "Error:", "Critical:", "Exception"):
        assert marker not in out, f"{what} printed {marker!r}:\n{out[-3000:]}"


class Aiida:
    def __init__(self, python: Path, home: Path, log: Path) -> None:
        self.python = python
        self.env = {**os.environ, "AIIDA_PATH": str(home), "PYTHONPATH": str(SHIM),
                    "DOSFS_ROOT": str(ROOT), "DOSFS_SHIM_LOG": str(log),
                    "PATH": f"{python.parent}:{os.environ['PATH']}"}

    def _run(self, cmd: list[str], what: str) -> str:
        r = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=600,
                           stdin=subprocess.DEVNULL)
        out = r.stdout + r.stderr
        assert r.returncode == 0, f"{what} exited {r.returncode}:\n{out[-3000:]}"
        _clean(out, what)
        return r.stdout

    def helper(self, *args: str) -> dict[str, Any]:
        out = self._run([str(self.python), str(HELPER), *args], f"aiida_helper {args[0]}")
        data: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return data

    def verdi(self, *args: str) -> str:
        return self._run([str(self.python.parent / "verdi"), *args], f"verdi {' '.join(args)}")


def _read_all_with_disk_objectstore(folder: Path) -> set[str]:
    """disk-objectstore validates the container and reads every object back, verified."""
    with disk_objectstore.Container(folder) as c:
        assert c.validate().is_valid(), folder
        keys = set(c.list_all_objects())
        for key, data in c.get_objects_content(sorted(keys)).items():
            assert hashlib.sha256(data).hexdigest() == key
    return keys


@pytest.fixture
def aiida(aiida_python: Path, tmp_path: Path) -> Aiida:
    check = ("import sys, sqlite_utils, xxhash; from importlib.metadata import version; "
             "sys.exit(tuple(map(int, version('click').split('.')[:2])) >= (8, 3))")
    probe = subprocess.run([str(aiida_python), "-c", check], capture_output=True)
    if probe.returncode != 0:  # dosfs's runtime dependencies that AiiDA does not bring;
        # AiiDA pins click < 8.3, and sqlite-utils 4 wants click >= 8.3
        subprocess.run([str(aiida_python), "-m", "pip", "install", "-q",
                        "--disable-pip-version-check", "sqlite-utils>=3.35,<4", "click<8.3",
                        "xxhash>=3.0"],
                       check=True, timeout=600)
    home = tmp_path / "aiida"
    home.mkdir()
    return Aiida(aiida_python, home, tmp_path / "shim.log")


def test_aiida_runs_on_dosfs(aiida: Aiida, tmp_path: Path) -> None:
    first = aiida.helper("create")  # verdi presto + a file, folders, a calculation's retrieved
    container = Path(first["container"])
    aiida.helper("many", str(NODES))
    log = Path(aiida.env["DOSFS_SHIM_LOG"]).read_text()
    assert f" verdi {container}" in log and f" aiida_helper.py {container}" in log, log

    aiida.verdi("-p", "views", "storage", "maintain", "--full", "--force")
    info = aiida.verdi("-p", "views", "storage", "info")
    assert "Repository" in info or "repository" in info, info
    with disk_objectstore.Container(container) as c:
        assert c.count_objects().loose == 0  # maintain --full packed everything, through dosfs
    back = aiida.helper("show", *(str(n["pk"]) for n in first["nodes"]))
    assert back["nodes"] == first["nodes"]  # every file read back through AiiDA, unchanged

    backups = tmp_path / "backups"
    for _ in range(2):
        aiida.verdi("-p", "views", "storage", "backup", str(backups))
    last = backups / "last-backup"
    assert last.is_symlink() and len([p for p in backups.iterdir() if p.is_dir()
                                       and not p.is_symlink()]) == 2

    aiida.helper("seal", *(str(n["pk"]) for n in first["nodes"]
                           if n["node_type"].startswith("process.")))
    archive = tmp_path / "all.aiida"
    aiida.verdi("-p", "views", "archive", "create", "--all", str(archive))
    aiida.verdi("presto", "--profile-name", "second")
    aiida.verdi("-p", "second", "archive", "import", str(archive))
    config = json.loads((Path(aiida.env["AIIDA_PATH"]) / ".aiida" / "config.json").read_text())
    second = Path(config["profiles"]["second"]["storage"]["config"]["filepath"]) / "container"
    assert second != container and (second / "packs.idx").exists(), second
    assert f" verdi {second}" in Path(aiida.env["DOSFS_SHIM_LOG"]).read_text()

    keys = _read_all_with_disk_objectstore(container)
    assert len(keys) > NODES  # each node has its own files
    assert keys <= _read_all_with_disk_objectstore(second)  # the import brought every object
    assert _read_all_with_disk_objectstore(last.resolve() / "container") == keys
