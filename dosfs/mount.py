"""Mount lifecycle: options, checks with clear errors, starting the daemon, unmount.

``dosfs mount`` without ``--foreground`` re-executes itself as a detached daemon
(``python -m dosfs.cli mount --foreground --ready-fd N ...``) and waits on a pipe until the
daemon writes ``READY`` (the mount answers requests) or ``ERROR <message>``; so a failure to
mount is reported by the command the user ran, with a non-zero exit. Re-executing rather than
forking keeps the daemon free of whatever the parent had loaded or started. The daemon itself
(serving, signals, readiness, systemd) is daemon.py; this module imports neither pyfuse3 nor
trio, so its own errors (a missing pyfuse3 among them) reach the user.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import logging
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dosfs.options import (
    DEFAULT_READAHEAD_KB,
    OPTIONS_HELP,
    MountError,
    MountOptions,
    parse_options,
)

if TYPE_CHECKING:
    from dosfs.container.container import Container
    from dosfs.remote.engine import RemoteEngine
    from dosfs.views.rows import Source

log = logging.getLogger("dosfs.mount")

FSTYPE = "fuse.dosfs"
SUBTYPE = "dosfs"
#: How long `dosfs mount` waits for the daemon to report, and `dosfs umount` for it to exit.
READY_TIMEOUT = 60.0
EXIT_TIMEOUT = 30.0
#: SQLite page cache per engine connection in the daemon (KiB). The daemon has one connection
#: per thread (the loop + the workers); the OS page cache holds packs.idx anyway, and the
#: daemon's memory must stay small (the engine's default suits batch jobs; for the same reason
#: the daemon maps none of packs.idx: mapped pages would count in its RSS).
DAEMON_SQLITE_CACHE_KIB = 1024
#: Seconds between passive checkpoints of packs.idx by the daemon (other processes' commits
#: would otherwise stay in packs.idx-wal while the daemon keeps its connections open).
CHECKPOINT_INTERVAL = 10.0

# ---------------------------------------------------------------------------- checks


def check_fuse(*, load: bool = True) -> None:
    """Fail with what to install or load when FUSE cannot work here. Not `load`: pyfuse3
    is only looked for, not imported (the `dosfs mount` command: importing it and trio takes
    ~85 ms; the daemon imports it, and reports an import error as one line)."""
    try:
        if load:
            import pyfuse3  # noqa: F401
        elif importlib.util.find_spec("pyfuse3") is None:
            raise ImportError("No module named 'pyfuse3'")
    except ImportError as exc:
        raise MountError(
            f"pyfuse3 cannot be imported ({exc}): install the mount extra, pip install "
            "'dosfs[mount]' (pyfuse3 builds from source and needs libfuse3-dev, pkg-config and a "
            "C compiler: apt install libfuse3-dev pkg-config gcc)"
        ) from None
    if not os.path.exists("/dev/fuse"):
        raise MountError(
            "FUSE is not available: /dev/fuse does not exist. Load the kernel module "
            "(modprobe fuse); in a container, pass the device (--device /dev/fuse "
            "--cap-add SYS_ADMIN)"
        )
    if os.geteuid() != 0:
        if shutil.which("fusermount3") is None:
            raise MountError(
                "fusermount3 not found: install FUSE 3 (Debian/Ubuntu: apt install fuse3; "
                "Fedora: dnf install fuse3)"
            )
        if not os.access("/dev/fuse", os.R_OK | os.W_OK):
            raise MountError("no permission to open /dev/fuse (is the user allowed to use FUSE?)")


def mount_entry(mountpoint: str | os.PathLike[str]) -> tuple[str, str] | None:
    """``(source, fstype)`` of what is mounted exactly at ``mountpoint``, from /proc/self/mounts."""
    target = os.path.abspath(mountpoint)
    found = None
    with contextlib.suppress(OSError), open("/proc/self/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) >= 3 and _unescape(fields[1]) == target:
                found = (_unescape(fields[0]), fields[2])  # the last one is the visible one
    return found


def _unescape(field: str) -> str:
    """/proc/mounts escapes space, tab, newline and backslash as octal."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit() and len(field[i + 1 : i + 4]) == 3:
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def check_mountpoint(mountpoint: Path) -> Path:
    """The absolute mountpoint, or a MountError saying why it cannot be used."""
    path = Path(os.path.abspath(mountpoint))
    entry = mount_entry(path)
    if entry is not None:
        raise MountError(
            f"{path} is already a mount point ({entry[1]} from {entry[0]}); "
            f"unmount it first (dosfs umount {path})"
        )
    try:
        st = path.stat()
    except FileNotFoundError:
        raise MountError(f"mountpoint {path} does not exist (create it: mkdir -p {path})") from None
    except OSError as exc:
        raise MountError(f"mountpoint {path} cannot be used: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise MountError(f"mountpoint {path} is not a directory")
    try:
        if any(os.scandir(path)):
            raise MountError(f"mountpoint {path} is not empty; mount on an empty directory")
    except PermissionError:
        raise MountError(f"mountpoint {path} cannot be read (permission denied)") from None
    return path


def is_remote(source: str | os.PathLike[str]) -> bool:
    return str(source).startswith("s3://")


def open_engine(source: str | os.PathLike[str], opts: MountOptions) -> Container | RemoteEngine:
    """The engine the daemon serves: a local Container, or for ``s3://…`` the newest published
    generation (read-only whatever the options say)."""
    if not is_remote(source):
        given = opts.remote_options()
        if given:
            raise MountError(f"mount option {given[0]} is only for s3:// containers")
        return open_container(Path(source))
    from dosfs.remote.engine import RemoteEngine, default_cache_dir
    from dosfs.remote.url import RemoteError

    opts.read_only = True
    cache = Path(opts.cache_dir) if opts.cache_dir else default_cache_dir(str(source))
    try:
        return RemoteEngine(str(source), cache_dir=cache, cache_size=opts.cache_size,
                            timeout=opts.timeout, index_cache_kib=DAEMON_SQLITE_CACHE_KIB)
    except (RemoteError, OSError) as exc:
        raise MountError(str(exc)) from None


def open_container(folder: Path) -> Container:
    """The engine for ``folder``, or a MountError naming what is missing."""
    from dosfs import Container
    from dosfs.container.errors import DosfsError

    path = Path(os.path.abspath(folder))
    if not path.exists():
        raise MountError(f"container {path} does not exist")
    container = Container(path, index_cache_kib=DAEMON_SQLITE_CACHE_KIB, index_mmap_kib=0)
    try:
        container.hash_length  # noqa: B018 - reads and validates config.json
        container.check_index()  # a damaged packs.idx would be EIO for every packed object
    except DosfsError as exc:
        raise MountError(f"not a usable container: {exc}") from None
    except OSError as exc:
        raise MountError(f"container {path} cannot be read: {exc}") from None
    return container


# ---------------------------------------------------------------------------- mount


def prepare(container: Path | str, opts: MountOptions) -> None:
    """What a location means for the options, before anything starts (foreground or not): an
    s3:// mount is read-only, and its endpoint=, profile=, credentials_file= options become
    the S3 client's environment (fstab gives none), for the checks and the daemon alike."""
    if is_remote(container):
        if opts.rw_given:
            raise MountError("s3:// mounts are read-only: drop -o rw (or say -o ro)")
        opts.read_only = True
        os.environ.update(opts.environment())


def mount(
    container: Path | str,
    mountpoint: Path,
    opts: MountOptions,
    *,
    debug: bool = False,
    log_file: Path | None = None,
) -> None:
    """Mount ``container`` at ``mountpoint`` in the background: check what can be checked
    here (one line each), start the daemon and return once it reports the mount ready. (The
    foreground form is the daemon itself: prepare(), then dosfs.daemon.serve.)"""
    debug = debug or opts.debug
    prepare(container, opts)
    check_fuse(load=False)
    mp = check_mountpoint(mountpoint)
    check_log_file(log_file)
    container_id = ""
    if is_remote(container):  # the daemon reads HEAD first: its errors come back as one line
        source = str(container)
    else:
        if opts.remote_options():
            raise MountError(f"mount option {opts.remote_options()[0]} is only for s3:// "
                             "containers")
        local = open_container(Path(container))
        container_id = str(local.container_id)
        local.close()
        source = os.path.abspath(container)
    if opts.aiida_db:  # here, so that its errors are one line before anything starts
        views = open_views(opts.aiida_db, container_id)
        if views is not None:
            views.close()
    _spawn_daemon(source, mp, opts, debug=debug, log_file=log_file)


def open_views(spec: str | None, container_id: str) -> Source | None:
    """The AiiDA database behind nodes/ (``--aiida-db``), or a MountError saying what is wrong:
    also when the profile's repository is another container (its node folders would look
    empty: none of their objects is here)."""
    if spec is None:
        return None
    from dosfs.views.sources import open_source

    try:
        source = open_source(spec)
        uuid = source.repository_uuid()
    except (OSError, ValueError, sqlite3.Error) as exc:
        raise MountError(f"cannot open the AiiDA database {spec}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - psycopg's errors, without importing it here
        raise MountError(f"cannot open the AiiDA database {spec}: "
                         f"{' '.join(str(exc).split())}") from None
    if uuid is not None and container_id and uuid != container_id:
        source.close()
        raise MountError(
            f"the AiiDA profile of {spec} uses the repository {uuid}, but this container is "
            f"{container_id}: mount the profile's own container"
        )
    return source


def check_log_file(log_file: Path | None) -> None:
    """--log-file must be writable before the daemon starts (it logs there from its first
    line, where nobody would read the error)."""
    if log_file is None:
        return
    try:
        with open(log_file, "a"):
            pass
    except OSError as exc:
        raise MountError(f"cannot write the log file {log_file}: {exc.strerror}") from None


def _spawn_daemon(
    container: str, mountpoint: Path, opts: MountOptions, *, debug: bool, log_file: Path | None
) -> None:
    read_end, write_end = os.pipe()
    cmd = [sys.executable, "-m", "dosfs.cli"]
    if debug:
        cmd.append("--debug")
    cmd += ["mount", "--foreground", "--ready-fd", str(write_end), "-o", opts.to_args()]
    if log_file is not None:
        cmd += ["--log-file", os.path.abspath(log_file)]
    cmd += [container, str(mountpoint)]
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    try:
        proc = subprocess.Popen(
            cmd,
            pass_fds=(write_end,),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            start_new_session=True,  # the daemon survives the terminal and its signals
            cwd="/",
            env=env,
        )
    finally:
        os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        message = _read_report(pipe, proc)
    if message == "READY":
        return
    if message.startswith("ERROR "):
        raise MountError(message[6:])
    code = proc.poll()
    raise MountError(
        f"the mount daemon exited (status {code}) before the mount was ready"
        + ("" if debug else "; run with --debug or --foreground to see why")
    )


def _read_report(pipe: Any, proc: subprocess.Popen[bytes]) -> str:
    import select

    deadline = time.monotonic() + READY_TIMEOUT
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            proc.terminate()
            raise MountError(f"the mount daemon did not become ready within {READY_TIMEOUT:.0f} s")
        readable, _, _ = select.select([pipe], [], [], left)
        if readable:
            chunk = os.read(pipe.fileno(), 4096)
            if not chunk:
                break
            data += chunk
    return data.decode(errors="replace").strip()


# ---------------------------------------------------------------------------- unmount


def daemon_pids(mountpoint: Path) -> list[int]:
    """Processes serving ``mountpoint`` (`dosfs mount --foreground ... MOUNTPOINT`)."""
    target = os.fsencode(os.path.abspath(mountpoint))
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                argv = f.read().rstrip(b"\0").split(b"\0")
        except OSError:
            continue
        if b"mount" in argv and b"--foreground" in argv and argv[-1] == target:
            pids.append(int(entry.name))
    return pids


def daemon_died(mountpoint: str | os.PathLike[str]) -> bool:
    """Is `mountpoint` a FUSE mount whose daemon is gone (every request: ENOTCONN)?"""
    try:
        os.statvfs(mountpoint)  # stat() of the root may be answered from the kernel's cache
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    return False


def mounts_of(container: str | os.PathLike[str]) -> list[str]:
    """Mountpoints where a dosfs daemon serves `container` (found by the daemons' command lines,
    which name both; and by the mount table, whose source is the container unless fsname=)."""
    folder = os.fsencode(os.path.abspath(container))
    found: list[str] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                argv = f.read().rstrip(b"\0").split(b"\0")
        except OSError:
            continue
        if b"mount" in argv and b"--foreground" in argv and len(argv) >= 2 and argv[-2] == folder:
            point = os.fsdecode(argv[-1])
            if mount_entry(point) is not None and point not in found:
                found.append(point)
    with contextlib.suppress(OSError), open("/proc/self/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) >= 3 and fields[2] == FSTYPE and _unescape(fields[0]) == os.fsdecode(
                folder
            ):
                point = _unescape(fields[1])
                if point not in found:
                    found.append(point)
    return found


def umount(mountpoint: Path, *, lazy: bool = False) -> None:
    """Unmount a dosfs mount and wait for its daemon to finish (pending commits included)."""
    mp = Path(os.path.abspath(mountpoint))
    entry = mount_entry(mp)
    if entry is None:
        raise MountError(f"{mp} is not mounted")
    if entry[1] != FSTYPE:
        raise MountError(f"{mp} is not a dosfs mount ({entry[1]} from {entry[0]}); not touching it")
    pids = daemon_pids(mp)
    if shutil.which("fusermount3"):
        cmd = ["fusermount3", "-u"] + (["-z"] if lazy else []) + [str(mp)]
    else:
        cmd = ["umount"] + (["-l"] if lazy else []) + [str(mp)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        detail = result.stderr.strip() or f"{cmd[0]} exited with {result.returncode}"
        hint = "" if lazy else " (files open? close them, or use --lazy)"
        raise MountError(f"unmounting {mp} failed: {detail}{hint}")
    deadline = time.monotonic() + EXIT_TIMEOUT
    while pids and time.monotonic() < deadline:
        pids = [pid for pid in pids if _alive(pid)]
        if pids:
            time.sleep(0.05)
    if pids:
        raise MountError(
            f"{mp} is unmounted, but its daemon (pid {', '.join(map(str, pids))}) is still "
            f"running after {EXIT_TIMEOUT:.0f} s (finishing commits?); see its log"
        )


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return False


__all__ = [
    "DEFAULT_READAHEAD_KB",
    "OPTIONS_HELP",
    "MountError",
    "MountOptions",
    "mount",
    "mounts_of",
    "parse_options",
    "umount",
]
