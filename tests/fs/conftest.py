"""Real-mount fixtures: the daemon as a subprocess, always unmounted, leftovers swept.

Every test mount has the fsname ``dosfs-test`` (or ``$DOSFS_TEST_FSNAME``, so that two
checkouts can run their suites at once without sweeping each other's mounts) so a crashed run's
mounts can be found and removed at the next session start. Teardown unmounts cleanly
(``fusermount3 -u`` and waits for the daemon), and on failure lazily (``-uz``) and kills the
daemon.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dosfs.mount import daemon_pids

FSNAME = os.environ.get("DOSFS_TEST_FSNAME", "dosfs-test")
DOSFS = [sys.executable, "-m", "dosfs.cli"]


def fuse_unavailable() -> str | None:
    """Why real mounts cannot run here, or None."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing (load the fuse module or pass the device into the container)"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is not installed (apt install fuse3)"
    try:
        import pyfuse3  # noqa: F401
    except ImportError as exc:
        return f"pyfuse3 cannot be imported: {exc}"
    if os.geteuid() != 0 and not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "no permission to open /dev/fuse"
    return None


def fsname_mounts() -> list[str]:
    """Mountpoints of leftover test mounts (fsname dosfs-test)."""
    found = []
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            source, target = line.split()[:2]
            if source == FSNAME:
                found.append(target.replace("\\040", " "))
    return found


def sweep() -> None:
    for target in fsname_mounts():
        for pid in daemon_pids(Path(target)):
            with_suppress_kill(pid)
        subprocess.run(["fusermount3", "-uz", target], capture_output=True)


def with_suppress_kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


@pytest.fixture(scope="session", autouse=True)
def _sweep_leftover_mounts() -> Iterator[None]:
    if fuse_unavailable() is None:
        sweep()
    yield


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@dataclass
class Mounted:
    """A running test mount."""

    container: Path
    path: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None  # None: background mount (`dosfs mount`)
    expect_errors: bool = False
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def by_hash(self) -> Path:
        return self.path / "by-hash"

    @property
    def incoming(self) -> Path:
        return self.path / "incoming"

    def log_text(self) -> str:
        try:
            return self.log.read_text()
        except FileNotFoundError:
            return ""

    def is_mounted(self) -> bool:
        return str(self.path) in fsname_mounts()

    def pids(self) -> list[int]:
        if self.proc is not None:
            return [self.proc.pid] if self.proc.poll() is None else []
        return daemon_pids(self.path)

    def unmount(self) -> None:
        """Clean unmount; then wait for the daemon to exit by itself."""
        pids = self.pids()
        if self.is_mounted():
            subprocess.run(["fusermount3", "-u", str(self.path)], check=True, capture_output=True)
        if self.proc is not None:
            self.proc.wait(timeout=20)
        else:
            wait_for(lambda: not any(os.path.exists(f"/proc/{p}") for p in pids), what="exit")

    def cleanup_after_failure(self) -> None:
        subprocess.run(["fusermount3", "-uz", str(self.path)], capture_output=True)
        for pid in self.pids():
            with_suppress_kill(pid)
        if self.proc is not None:
            self.proc.wait(timeout=10)


@pytest.fixture
def fuse() -> None:
    reason = fuse_unavailable()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def mount(fuse: None, tmp_path: Path) -> Iterator[Callable[..., Mounted]]:
    """Factory: ``mount(container, "ro", background=False)`` -> Mounted (ready to use)."""
    mounts: list[Mounted] = []

    def start(
        container: Path, *options: str, background: bool = False, name: str = "mnt"
    ) -> Mounted:
        path = tmp_path / name
        path.mkdir(exist_ok=True)
        log = tmp_path / f"{name}.log"
        opts = ",".join((f"fsname={FSNAME}",) + options)
        m = Mounted(container=container, path=path, log=log)
        mounts.append(m)
        if background:
            subprocess.run(
                [*DOSFS, "mount", "-o", opts, "--log-file", str(log), str(container), str(path)],
                check=True,
                timeout=60,
            )
            assert m.is_mounted()  # ready when `dosfs mount` returns: no polling
        else:
            with open(log, "wb") as out:
                m.proc = subprocess.Popen(
                    [*DOSFS, "mount", "--foreground", "-o", opts, str(container), str(path)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )

            def up() -> bool:
                assert m.proc is not None
                if m.proc.poll() is not None:
                    raise AssertionError(f"daemon exited early:\n{m.log_text()}")
                return os.path.ismount(path)

            wait_for(up, what="the mount")
        return m

    yield start
    failed = []
    for m in mounts:
        try:
            m.unmount()
        except Exception as exc:  # noqa: BLE001 - fall back to the failure path below
            failed.append(f"{m.path}: clean unmount failed: {exc}")
            m.cleanup_after_failure()
    for m in mounts:
        text = m.log_text()
        if not m.expect_errors:
            assert "Traceback" not in text and " ERROR " not in text, text
    assert not failed, failed


@pytest.fixture
def make_container(tmp_path: Path) -> Callable[..., Path]:
    from dosfs import Container

    def make(name: str = "container") -> Path:
        folder = tmp_path / name
        Container(folder).init_container()
        return folder

    return make
