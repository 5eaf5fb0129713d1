"""A dosfs mount as a context manager that always unmounts, plus what the figures need around it:
the daemon's pid and memory, dropping the page cache, running and timing shell tools."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

FSNAME_PREFIX = "dosfs-bench"


class MountError(RuntimeError):
    pass


def dosfs_command() -> list[str]:
    """The `dosfs` console script next to this Python (the venv), else `python -m dosfs.cli`."""
    script = Path(sys.executable).parent / "dosfs"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "dosfs.cli"]


def mounted(path: Path) -> bool:
    target = str(path.resolve())
    with open("/proc/mounts") as f:
        return any(line.split()[1] == target for line in f)


def mounts_under(root: Path) -> list[Path]:
    """Every mount point inside `root` (the sweep that runs before the temp dir is removed)."""
    prefix = str(root.resolve()).rstrip("/") + "/"
    out = []
    with open("/proc/mounts") as f:
        for line in f:
            point = line.split()[1].replace("\\040", " ")
            if point.startswith(prefix):
                out.append(Path(point))
    return out


def force_unmount(path: Path) -> None:
    """Last resort: lazy unmount (the kernel detaches it even while busy)."""
    for cmd in (["fusermount3", "-u", str(path)], ["fusermount3", "-uz", str(path)],
                ["umount", "-l", str(path)]):
        if not mounted(path):
            return
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


class Mount:
    """`dosfs mount --foreground CONTAINER MOUNTPOINT` as a child process: its pid is the daemon's,
    so its memory can be read from /proc. Unmounts on exit, also when the body raised."""

    def __init__(self, container: Path, mountpoint: Path, log: Path, timeout: float = 60.0,
                 options: str = ""):
        self.container = container
        self.mountpoint = mountpoint
        self.log_path = log
        self.timeout = timeout
        self.options = options
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __enter__(self) -> Mount:
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        cmd = [*dosfs_command(), "mount", "--foreground", str(self.container), str(self.mountpoint)]
        if self.options:
            cmd[3:3] = ["-o", self.options]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + self.timeout
        while not mounted(self.mountpoint):
            if self.proc.poll() is not None:
                raise MountError(
                    f"dosfs mount exited with {self.proc.returncode}: {self.log_tail()}")
            if time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise MountError(f"dosfs mount not ready after {self.timeout}s: {self.log_tail()}")
            time.sleep(0.01)
        return self

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        proc = self.proc
        if mounted(self.mountpoint):
            subprocess.run([*dosfs_command(), "umount", str(self.mountpoint)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
                           timeout=60)
        if mounted(self.mountpoint):
            subprocess.run(["fusermount3", "-u", str(self.mountpoint)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=False)
        if proc is not None:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        force_unmount(self.mountpoint)

    def memory(self) -> dict[str, float]:
        """Daemon VmRSS and VmHWM (peak) in MiB."""
        out = {}
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                key = line.split(":")[0]
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(line.split()[1]) / 1024
        return out


def drop_caches() -> str | None:
    """Flush dirty pages and drop the page cache (root only). Returns None, or why it could not."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError as exc:
        return f"cannot drop the page cache ({exc.strerror}); first reads are warm"
    return None


def run_timed(cmd: list[str], **kw: object) -> float:
    """Wall time of one command, output discarded; a failure raises with its stderr."""
    t0 = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False, **kw)  # type: ignore[call-overload]
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed ({p.returncode}): {p.stderr[-500:]!r}")
    return dt


def have_fuse() -> str | None:
    """None when a mount can work here, else the reason it cannot."""
    if not Path("/dev/fuse").exists():
        return "/dev/fuse is missing"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is not installed (Debian package fuse3)"
    return None
