"""A real AiiDA for the view tests: aiida-core in its own virtualenv (it pins click < 8.3, which
dosfs's environment does not), installed once and reused (``.venv-aiida``, stamped), driven
through tests/views/aiida_helper.py in subprocesses. Without network and outside CI the tests
that need it are skipped with the reason; under CI they fail.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fs.conftest import _sweep_leftover_mounts, fuse, mount  # noqa: F401 - fixtures
from tests.views.aiida_venv import ensure_aiida_venv

HELPER = Path(__file__).with_name("aiida_helper.py")


@dataclass
class Profile:
    """An AiiDA profile made by aiida_helper.py: its container, database and nodes."""

    home: Path
    python: Path
    container: Path
    database: Path | str
    nodes: list[dict[str, Any]]

    def run(self, *args: str) -> dict[str, Any]:
        env = {**os.environ, "AIIDA_PATH": str(self.home),
               "PATH": f"{self.python.parent}:{os.environ['PATH']}"}
        out = subprocess.run([str(self.python), str(HELPER), *args], check=True, env=env,
                             capture_output=True, text=True, timeout=600).stdout
        data: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return data


@pytest.fixture(scope="session")
def aiida_python() -> Path:
    python = ensure_aiida_venv()
    if python is None:
        if os.environ.get("CI"):
            pytest.fail("could not install aiida-core into .venv-aiida")
        pytest.skip("aiida-core could not be installed (no network?)")
    return python


@pytest.fixture
def make_profile(aiida_python: Path, tmp_path: Path) -> Callable[[], Profile]:
    def make() -> Profile:
        home = tmp_path / "aiida"
        home.mkdir()
        profile = Profile(home, aiida_python, Path(), Path(), [])
        data = profile.run("create")
        profile.container = Path(data["container"])
        profile.database = Path(data["database"])
        profile.nodes = data["nodes"]
        return profile

    return make


@pytest.fixture(scope="session")
def pg_server() -> Iterator[tuple[str, int]]:
    from tests.views import postgres

    reason = postgres.available()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    with postgres.server() as address:
        yield address


@pytest.fixture
def make_psql_profile(aiida_python: Path, tmp_path: Path,
                      pg_server: tuple[str, int]) -> Callable[[], Profile]:
    """A core.psql_dos profile on the session's server (one per test: database `aiida`)."""

    def make() -> Profile:
        import psycopg

        host, port = pg_server
        with psycopg.connect(f"postgresql://postgres@{host}:{port}/postgres",
                             autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS aiida")
        home = tmp_path / "aiida"
        home.mkdir()
        profile = Profile(home, aiida_python, Path(), Path(), [])
        data = profile.run("create-psql", host, str(port))
        profile.container = Path(data["container"])
        profile.database = data["database"]
        profile.nodes = data["nodes"]
        return profile

    return make
