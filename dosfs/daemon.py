"""The mount daemon: serve one container at one mountpoint until unmounted or signalled.

One trio loop runs ``pyfuse3.main`` beside a signal task: SIGTERM/SIGINT/SIGHUP call
``pyfuse3.terminate()``; then ``pyfuse3.close(unmount=True)`` (libfuse detaches the mount lazily,
so open files do not block it), files still being written are settled (incoming.shutdown), and
the container is closed. Readiness goes to the waiting ``dosfs mount`` (a pipe) and to systemd
(``$NOTIFY_SOCKET``: ``READY=1`` once mounted, ``STOPPING=1`` when a signal arrives). Beside
serving: a passive index checkpoint every CHECKPOINT_INTERVAL seconds, and at start the
recovery of files a previous daemon had declared complete.
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dosfs.mount import (
    CHECKPOINT_INTERVAL,
    SUBTYPE,
    MountError,
    MountOptions,
    check_fuse,
    check_mountpoint,
    is_remote,
    open_engine,
    open_views,
)

if TYPE_CHECKING:
    from dosfs.engine import ServedEngine
    from dosfs.fs.operations import Operations

log = logging.getLogger("dosfs.mount")


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


def setup_logging(debug: bool, log_file: Path | None = None) -> None:
    """Log to `log_file` from the first line on, else to stderr (the journal under systemd
    adds its own timestamps)."""
    fmt = "%(levelname)s %(name)s: %(message)s"
    if "JOURNAL_STREAM" not in os.environ or log_file is not None:
        fmt = "%(asctime)s " + fmt
    handler: logging.Handler = (
        logging.FileHandler(log_file) if log_file is not None else logging.StreamHandler(sys.stderr)
    )
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


def serve(
    container: Path | str,
    mountpoint: Path,
    opts: MountOptions,
    *,
    debug: bool,
    log_file: Path | None,
    ready_fd: int | None,
) -> None:
    setup_logging(debug, log_file)
    # `kill -USR1 PID` writes every thread's stack to the log (stderr): for a hanging mount.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    reporter = _Reporter(ready_fd, log_file)
    early: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda signum, _frame: early.append(signum))
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    }
    try:
        check_fuse()
        mp = check_mountpoint(mountpoint)
        engine: ServedEngine = open_engine(container, opts)
        views = open_views(opts.aiida_db, engine.container_id)
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
        uid=opts.uid,
        gid=opts.gid,
        umask=opts.umask,
        read_only=opts.read_only,
        listing=opts.listing,
        verify=opts.verify,
        max_names=opts.max_names,
        max_inodes=opts.max_inodes,
        workers=opts.workers,
        invalidate_entry=_invalidate_entry,
        views=views,
        io_timeout=opts.timeout if is_remote(container) else None,
    )
    shown = str(container) if is_remote(container) else str(engine.folder)
    fsname = opts.fsname or (shown if "," not in shown else "dosfs")
    if engine.remote_stats() is not None:
        ops.stats.sections["remote"] = lambda: engine.remote_stats() or {}
    fuse_options = {f"fsname={fsname}", f"subtype={SUBTYPE}", "default_permissions", "noatime"}
    if opts.read_only:
        fuse_options.add("ro")
    if opts.allow_other:
        fuse_options.add("allow_other")  # always with default_permissions (above)
    if opts.auto_unmount:
        fuse_options.add("auto_unmount")  # libfuse's fusermount3 unmounts if we die
    fuse_options.update(opts.kernel_flags)
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
        trio.run(_main, ops, engine, mp, opts, reporter, early)
        pyfuse3.close(unmount=True)
        unmounted = True
    finally:
        if not unmounted:
            try:
                pyfuse3.close(unmount=True)
            except Exception as exc:  # noqa: BLE001 - already failing; say why, go on
                log.warning("unmounting %s after an error: %s", mp, exc)
        ops.shutdown()
        try:
            engine.close()
        except Exception as exc:  # noqa: BLE001 - the mount is gone; only report it
            log.warning("closing the container: %s", exc)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log.info("unmounted %s", mp)


def _invalidate_entry(parent_inode: int, name: bytes) -> None:
    """Ask the kernel to drop a directory entry (queued: safe from inside a handler)."""
    import pyfuse3

    pyfuse3.invalidate_entry_async(parent_inode, name, ignore_enoent=True)


async def _main(
    ops: Operations,
    engine: ServedEngine,
    mountpoint: Path,
    opts: MountOptions,
    reporter: _Reporter,
    early: list[int],
) -> None:
    import pyfuse3
    import trio

    async with trio.open_nursery() as nursery:
        await nursery.start(_watch_signals, early)
        nursery.start_soon(_when_ready, ops, mountpoint, opts, reporter)
        nursery.start_soon(_checkpoints, ops)
        if opts.refresh > 0 and engine.refreshable:
            nursery.start_soon(_refreshes, ops, engine, opts.refresh)
        nursery.start_soon(ops.by_hash.snapshot_keeper)
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


async def _refreshes(ops: Operations, engine: ServedEngine, period: float) -> None:
    """Every `period` seconds, switch an s3:// mount to a newer published generation (files
    already open keep the one they opened; see dosfs.remote.engine)."""
    import trio

    while True:
        await trio.sleep(period)
        await ops.offload.run_network(engine.refresh)


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
    if ops.offload.timeout is not None:  # reads may wait on a server
        await trio.to_thread.run_sync(set_max_background, mountpoint, MAX_BACKGROUND)
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


#: FUSE background requests (readahead) the kernel lets a mount have in flight (its default
#: 12) on an s3 mount: each reader waiting on a frozen server holds one or two, and a cached
#: file's readahead would queue in the kernel behind them (20 hung readers made a cached `cat`
#: wait 19 s)
MAX_BACKGROUND = 256


FUSECTL = Path("/sys/fs/fuse/connections")


def set_max_background(mountpoint: Path, n: int) -> bool:
    """Raise the mount's limit of background requests, and its congestion threshold with it
    (root, with fusectl at /sys/fs/fuse/connections). Why: each request waiting on a frozen
    server holds one of the kernel's 12 background slots, and the 13th waits in the kernel,
    where its deadline has not even started (measured: EIO after twice the timeout with 20
    hung readers). systemd mounts fusectl at boot; where nothing did (a container, a chroot),
    root mounts it here, as systemd would."""
    dev = os.stat(mountpoint).st_dev
    folder = FUSECTL / str(os.major(dev) << 20 | os.minor(dev))
    if not folder.exists() and os.geteuid() == 0 and FUSECTL.is_dir() and not any(
            FUSECTL.iterdir()):
        done = subprocess.run(["mount", "-t", "fusectl", "fusectl", str(FUSECTL)],
                              capture_output=True, text=True, check=False)
        log.info("mounted fusectl at %s: %s", FUSECTL,
                 "ok" if done.returncode == 0 else done.stderr.strip())
    try:
        (folder / "max_background").write_text(f"{n}\n")
        (folder / "congestion_threshold").write_text(f"{n * 3 // 4}\n")
    except OSError as exc:
        log.info("the kernel's limit of FUSE background requests stays at its default (12; "
                 "mount fusectl to let it be raised): %s", exc)
        return False
    log.debug("background requests of %s: up to %d", mountpoint, n)
    return True


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


