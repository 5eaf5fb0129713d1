"""A throwaway PostgreSQL server from the Debian packages (started and stopped by a fixture):
initdb in a temporary folder as the ``postgres`` user (the server refuses to run as root), a
free port on 127.0.0.1, its unix socket in the same folder, trust authentication."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

USER = "postgres"


def _bindir() -> Path | None:
    """The newest server installed: Debian keeps each major version in its own folder
    (/usr/lib/postgresql/15/bin on Debian 12, 17 on Debian 13) and puts none of it on PATH."""
    found = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")]
    found.sort(key=lambda b: int(b.parent.name) if b.parent.name.isdigit() else -1)
    return found[-1] if found else None


BINDIR = _bindir() or Path("/usr/lib/postgresql/NONE/bin")


def available() -> str | None:
    """Why no server can be started here, or None."""
    if not (BINDIR / "initdb").exists():
        return "PostgreSQL is not installed (apt-get install postgresql)"
    try:
        import pwd

        pwd.getpwnam(USER)
    except KeyError:
        return f"no {USER} user to run PostgreSQL as"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server() -> Iterator[tuple[str, int]]:
    """A running server: yields (host, port); the superuser is ``postgres`` (no password)."""
    root = Path(tempfile.mkdtemp(prefix="wt-views-pg-"))
    shutil.chown(root, USER)
    data = root / "data"
    port = _free_port()
    as_pg = ["runuser", "-u", USER, "--"]
    pg_ctl = [*as_pg, str(BINDIR / "pg_ctl"), "-D", str(data), "-w"]
    started = False
    try:
        subprocess.run([*as_pg, str(BINDIR / "initdb"), "-D", str(data), "-A", "trust", "-U",
                        USER], check=True, capture_output=True, timeout=120)
        subprocess.run([*pg_ctl, "-l", str(root / "log"), "-o",
                        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off",
                        "start"], check=True, capture_output=True, timeout=120)
        started = True
        yield "127.0.0.1", port
    finally:
        if started:
            subprocess.run([*pg_ctl, "-m", "fast", "stop"], capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)
