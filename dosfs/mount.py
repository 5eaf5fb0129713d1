"""Mount lifecycle: checks with clear errors, the daemon, readiness, signals, unmount.

``dosfs mount`` without ``--foreground`` re-executes itself as a detached daemon
(``python -m dosfs.cli mount --foreground --ready-fd N ...``) and waits on a pipe until the
daemon writes ``READY`` (the mount answers requests) or ``ERROR <message>``; so a failure to
mount is reported by the command the user ran, with a non-zero exit. Re-executing rather than
forking keeps the daemon free of whatever the parent had loaded or started.

In the daemon, one trio loop runs ``pyfuse3.main`` beside a signal task: SIGTERM/SIGINT/SIGHUP
call ``pyfuse3.terminate()``; then ``pyfuse3.close(unmount=True)`` (libfuse detaches the mount
lazily, so open files do not block it), files still being written are discarded (never
committed half-written), and the container is closed. Under systemd (``$NOTIFY_SOCKET``) it sends
``READY=1`` once mounted and ``STOPPING=1`` when a signal arrives.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dosfs.container.errors import DosfsError
from dosfs.fs.limits import DEFAULT_MAX_INODES, DEFAULT_MAX_NAMES

if TYPE_CHECKING:
    from dosfs.container.container import Container
    from dosfs.fs.operations import Operations

log = logging.getLogger("dosfs.mount")

FSTYPE = "fuse.dosfs"
SUBTYPE = "dosfs"
#: Kernel readahead set on the mount after mounting (KiB): 1 MiB read requests instead of 128 KiB.
DEFAULT_READAHEAD_KB = 1024
#: How long `dosfs mount` waits for the daemon to report, and `dosfs umount` for it to exit.
READY_TIMEOUT = 60.0
EXIT_TIMEOUT = 30.0
#: Seconds between passive checkpoints of packs.idx by the daemon (other processes' commits
#: would otherwise stay in packs.idx-wal while the daemon keeps its connections open).
CHECKPOINT_INTERVAL = 10.0

OPTIONS_HELP = (
    "ro, allow_other (implies default_permissions), nolisting (by-hash/ cannot be listed), "
    "verify=on|off (hash every object before serving it in full; default on), "
    "max_names=N (names kept in incoming/), max_inodes=N (by-hash inodes kept for the kernel), "
    "readahead_kb=N (0 keeps the kernel default), "
    "workers=N (worker threads), fsname=NAME"
)


class MountError(Exception):
    """A mount or unmount that cannot happen, with a message that says what to do."""


@dataclass
class MountOptions:
    read_only: bool = False
    allow_other: bool = False
    listing: bool = True
    max_names: int = DEFAULT_MAX_NAMES
    max_inodes: int = DEFAULT_MAX_INODES
    readahead_kb: int = DEFAULT_READAHEAD_KB
    workers: int = 4
    fsname: str | None = None
    verify: bool = True

    def to_args(self) -> str:
        """The same options as one ``-o`` string (handed to the daemon process)."""
        parts = ["ro" if self.read_only else "rw"]
        if self.allow_other:
            parts.append("allow_other")
        if not self.listing:
            parts.append("nolisting")
        if not self.verify:
            parts.append("verify=off")
        parts += [
            f"max_names={self.max_names}",
            f"max_inodes={self.max_inodes}",
            f"readahead_kb={self.readahead_kb}",
            f"workers={self.workers}",
        ]
        if self.fsname:
            parts.append(f"fsname={self.fsname}")
        return ",".join(parts)


def parse_options(values: Iterable[str]) -> MountOptions:
    """Parse ``-o a,b=c`` values (repeatable); unknown options are an error, not ignored."""
    opts = MountOptions()
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            key, eq, arg = item.partition("=")
            if key in ("ro", "rw", "allow_other", "nolisting", "listing", "default_permissions"):
                if eq:
                    raise MountError(f"mount option {key} takes no value")
                if key in ("ro", "rw"):
                    opts.read_only = key == "ro"
                elif key == "allow_other":
                    opts.allow_other = True
                elif key in ("nolisting", "listing"):
                    opts.listing = key == "listing"
                # default_permissions: always on
            elif key in ("max_names", "max_inodes", "readahead_kb", "workers"):
                try:
                    number = int(arg)
                except ValueError:
                    raise MountError(f"mount option {key} needs an integer, got {arg!r}") from None
                low = 0 if key == "readahead_kb" else 1
                if number < low:
                    raise MountError(f"mount option {key} must be >= {low}")
                setattr(opts, key, number)
            elif key == "verify":
                if arg not in ("on", "off"):
                    raise MountError(f"mount option verify must be on or off, got {arg!r}")
                opts.verify = arg == "on"
            elif key == "fsname":
                if not arg or "," in arg:
                    raise MountError("mount option fsname needs a name without commas")
                opts.fsname = arg
            else:
                raise MountError(f"unknown mount option {item!r} (known: {OPTIONS_HELP})")
    return opts


# ---------------------------------------------------------------------------- checks


def check_fuse() -> None:
    """Fail with what to install or load when FUSE cannot work here."""
    try:
        import pyfuse3  # noqa: F401
    except ImportError as exc:
        raise MountError(
            f"pyfuse3 cannot be imported ({exc}): install it with pip (it builds from source and "
            "needs libfuse3-dev, pkg-config and a C compiler: apt install libfuse3-dev pkg-config)"
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


def open_container(folder: Path) -> Container:
    """The engine for ``folder``, or a MountError naming what is missing."""
    from dosfs import Container

    path = Path(os.path.abspath(folder))
    if not path.exists():
        raise MountError(f"container {path} does not exist")
    container = Container(path, index_cache_kib=DAEMON_SQLITE_CACHE_KIB)
    try:
        container.hash_length  # noqa: B018 - reads and validates config.json
    except DosfsError as exc:
        raise MountError(f"not a usable container: {exc}") from None
    except OSError as exc:
        raise MountError(f"container {path} cannot be read: {exc}") from None
    return container


# ---------------------------------------------------------------------------- systemd & logs


def sd_notify(message: str) -> bool:
    """Send ``message`` to systemd's notify socket if there is one (Type=notify units)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:
        log.warning("could not notify systemd (%s): %s", message, exc)
        return False
    return True


class _QuietAbortedReplies(logging.Filter):
    """pyfuse3 logs ERROR when a reply finds its request gone (ENOENT: the caller was
    interrupted, or a RELEASE was still in flight at unmount). Nothing is lost: keep it quiet."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("fuse_reply_" in message and "No such file or directory" in message)


def setup_logging(debug: bool) -> None:
    """Log to stderr (the journal under systemd adds its own timestamps)."""
    fmt = "%(levelname)s %(name)s: %(message)s"
    if "JOURNAL_STREAM" not in os.environ:
        fmt = "%(asctime)s " + fmt
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt))
    for name in ("dosfs", "pyfuse3"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.propagate = False
        logger.setLevel(logging.DEBUG if debug else logging.INFO)
    if not debug:
        pyfuse3_log = logging.getLogger("pyfuse3")
        pyfuse3_log.setLevel(logging.WARNING)
        pyfuse3_log.filters[:] = [_QuietAbortedReplies()]


# ---------------------------------------------------------------------------- mount


def mount(
    container: Path,
    mountpoint: Path,
    opts: MountOptions,
    *,
    foreground: bool = False,
    debug: bool = False,
    log_file: Path | None = None,
    ready_fd: int | None = None,
) -> None:
    """Mount ``container`` at ``mountpoint``; return once the mount answers requests.

    Foreground: serve until unmounted or signalled. Background: start the daemon and wait
    for its readiness report.
    """
    if foreground:
        _serve(container, mountpoint, opts, debug=debug, log_file=log_file, ready_fd=ready_fd)
        return
    check_fuse()
    mp = check_mountpoint(mountpoint)
    c = open_container(container)
    c.close()
    _spawn_daemon(Path(os.path.abspath(container)), mp, opts, debug=debug, log_file=log_file)


def _spawn_daemon(
    container: Path, mountpoint: Path, opts: MountOptions, *, debug: bool, log_file: Path | None
) -> None:
    read_end, write_end = os.pipe()
    cmd = [sys.executable, "-m", "dosfs.cli"]
    if debug:
        cmd.append("--debug")
    cmd += ["mount", "--foreground", "--ready-fd", str(write_end), "-o", opts.to_args()]
    if log_file is not None:
        cmd += ["--log-file", os.path.abspath(log_file)]
    cmd += [str(container), str(mountpoint)]
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


class _Reporter:
    """Tells the waiting parent (pipe) and systemd (NOTIFY_SOCKET) how the mount went."""

    def __init__(self, ready_fd: int | None, log_file: Path | None) -> None:
        self.ready_fd = ready_fd
        self.log_file = log_file

    def _send(self, line: str) -> None:
        if self.ready_fd is None:
            return
        with contextlib.suppress(OSError):
            os.write(self.ready_fd, (line.replace("\n", " ") + "\n").encode())
        with contextlib.suppress(OSError):
            os.close(self.ready_fd)
        self.ready_fd = None

    def error(self, message: str) -> None:
        self._send("ERROR " + message)

    def ready(self) -> None:
        background = self.ready_fd is not None
        self._send("READY")
        sd_notify("READY=1")
        if background:
            # Detach from the terminal of `dosfs mount` now that it has its answer.
            target = os.open(
                str(self.log_file) if self.log_file else os.devnull,
                os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                0o644,
            )
            os.dup2(target, 2)
            os.close(target)


def _serve(
    container: Path,
    mountpoint: Path,
    opts: MountOptions,
    *,
    debug: bool,
    log_file: Path | None,
    ready_fd: int | None,
) -> None:
    setup_logging(debug)
    reporter = _Reporter(ready_fd, log_file)
    early: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda signum, _frame: early.append(signum))
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    }
    try:
        check_fuse()
        mp = check_mountpoint(mountpoint)
        engine = open_container(container)
    except MountError as exc:
        reporter.error(str(exc))
        raise
    import pyfuse3
    import trio

    from dosfs.fs.operations import Operations

    try:
        engine.keep_index_open()  # so that reads keep working when the disk fills up
    except Exception as exc:  # noqa: BLE001 - reads will report it; the mount still serves
        log.warning("could not open the index of %s: %s", engine.folder, exc)
    ops = Operations(
        engine,
        read_only=opts.read_only,
        listing=opts.listing,
        verify=opts.verify,
        max_names=opts.max_names,
        max_inodes=opts.max_inodes,
        workers=opts.workers,
        invalidate_entry=_invalidate_entry,
    )
    fsname = opts.fsname or (str(engine.folder) if "," not in str(engine.folder) else "dosfs")
    fuse_options = {f"fsname={fsname}", f"subtype={SUBTYPE}", "default_permissions", "noatime"}
    if opts.read_only:
        fuse_options.add("ro")
    if opts.allow_other:
        fuse_options.add("allow_other")  # always with default_permissions (above)
    try:
        pyfuse3.init(ops, str(mp), fuse_options)
    except RuntimeError as exc:
        message = f"mounting {mp} failed ({exc})"
        if opts.allow_other:
            message += "; allow_other needs user_allow_other in /etc/fuse.conf for non-root users"
        reporter.error(message)
        raise MountError(message) from None
    unmounted = False
    try:
        trio.run(_main, ops, mp, opts, reporter, early)
        pyfuse3.close(unmount=True)
        unmounted = True
    finally:
        if not unmounted:
            with contextlib.suppress(Exception):
                pyfuse3.close(unmount=True)
        ops.shutdown()
        with contextlib.suppress(Exception):
            engine.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log.info("unmounted %s", mp)


#: SQLite page cache per engine connection in the daemon (KiB). The daemon has one connection
#: per thread (the loop + the workers); the OS page cache holds packs.idx anyway, and the
#: daemon's memory must stay small (the engine's default suits batch jobs).
DAEMON_SQLITE_CACHE_KIB = 1024


def _invalidate_entry(parent_inode: int, name: bytes) -> None:
    """Ask the kernel to drop a directory entry (queued: safe from inside a handler)."""
    import pyfuse3

    pyfuse3.invalidate_entry_async(parent_inode, name, ignore_enoent=True)


async def _main(
    ops: Operations, mountpoint: Path, opts: MountOptions, reporter: _Reporter, early: list[int]
) -> None:
    import pyfuse3
    import trio

    async with trio.open_nursery() as nursery:
        await nursery.start(_watch_signals, early)
        nursery.start_soon(_when_ready, ops, mountpoint, opts, reporter)
        nursery.start_soon(_checkpoints, ops)
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


async def _checkpoints(ops: Operations) -> None:
    """Every CHECKPOINT_INTERVAL seconds, copy other processes' index commits from the WAL into
    packs.idx (passive: never waits for readers or writers)."""
    import trio

    while True:
        await trio.sleep(CHECKPOINT_INTERVAL)
        try:
            await ops.offload.run(ops.engine.checkpoint)
        except Exception as exc:  # noqa: BLE001 - the next round tries again
            log.debug("checkpoint: %s", exc)


async def _watch_signals(early: list[int], task_status: Any) -> None:
    import pyfuse3
    import trio

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        task_status.started()
        signum = early[0] if early else None
        if signum is None:
            async for received in signals:
                signum = received
                break
        log.info("%s received: unmounting", signal.Signals(signum).name if signum else "signal")
        sd_notify("STOPPING=1")
        pyfuse3.terminate()


async def _when_ready(
    ops: Operations, mountpoint: Path, opts: MountOptions, reporter: _Reporter
) -> None:
    """Confirm the mount answers (a stat through it, from a thread), then tune and report;
    then commit what a previous daemon declared complete but could not commit."""
    import trio

    ok = await trio.to_thread.run_sync(os.path.ismount, str(mountpoint))
    if not ok:
        reporter.error(f"{mountpoint} did not become a mount point")
        return
    if opts.readahead_kb:
        await trio.to_thread.run_sync(set_readahead, mountpoint, opts.readahead_kb)
    reporter.ready()
    log.info("mounted at %s (%s)", mountpoint, opts.to_args())
    if not opts.read_only:
        try:
            recovered = await ops.offload.run(ops.engine.recover_staged)
        except Exception as exc:  # noqa: BLE001 - `dosfs clean` can do it later
            log.warning("recovering complete staging files failed: %s", exc)
        else:
            for hashkey in recovered:
                log.info("recovered a file closed before the last daemon died: %s", hashkey)


def bdi_path(mountpoint: Path) -> Path:
    """The mount's backing-device-info folder (its readahead lives there)."""
    dev = os.stat(mountpoint).st_dev
    return Path(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}")


def set_readahead(mountpoint: Path, kb: int) -> bool:
    """Raise the kernel readahead of the mount (root only; others keep the default)."""
    try:
        path = bdi_path(mountpoint) / "read_ahead_kb"
        path.write_text(f"{kb}\n")
    except OSError as exc:
        log.debug("readahead left at the kernel default (%s)", exc)
        return False
    log.debug("readahead of %s set to %d KiB", mountpoint, kb)
    return True


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


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return False
