"""Backups in the layout of disk-objectstore 1.5's `dostore backup` (and so of AiiDA's backups).

DEST holds finished backups `backup_<UTC %Y%m%d%H%M%S>_<4 random [a-z0-9]>/` (each one a complete
container), the in-progress folder `live-backup/` and the symlink `last-backup` -> the newest
folder name (a relative target). A dosfs backup and a dostore backup may follow each other in the
same DEST: each hard-links what did not change since the previous one. See docs/backup.md.

Why the steps come in this order (the container stays in use: loose writers, one packer, readers):
1. loose objects first. An object loose when the backup starts is either copied, or was packed
   and its loose file removed before we got to it; the packer commits the index rows BEFORE it
   removes loose files, so those rows are in the snapshot taken in step 2.
2. the index: every pack file is pinned first (an open descriptor, or a hard link for rsync),
   then one read transaction is copied with SQLite's backup API, then every pinned file must
   still be in place (same st_dev/st_ino) and no pack file may have appeared. A repack replaces
   a file only after moving its rows away (a commit), and rows on pack N always describe the file
   now at N; so "pinned before the snapshot and still in place after it" proves the pinned file
   is the one the snapshot's rows describe. Otherwise (a concurrent repack, a new pack, rows
   still on the repack pack -1) pin and snapshot again, for up to PIN_RETRY_SECONDS.
3. packs, copied from the pinned files up to their size after the snapshot: packs only grow by
   appends, so every byte a snapshot row points at is in the copy.
4. config.json and the rest, without the live `packs.idx-wal`/`-shm` (a WAL copied next to the
   snapshot would be replayed onto it on open, making the index newer than the copied packs),
   lock files, and the contents of sandbox/ (in-progress writes of other processes).
5. the backup is made durable (syncfs), renamed from live-backup to its final name, `last-backup`
   is switched, and old backups are pruned. Until the rename nothing is a finished backup, so an
   interrupted run (exception, SIGKILL, power loss) never becomes `last-backup`; the next run
   removes the leftover live-backup.

Hard links (local DEST, built-in copier) from the previous backup (the one `last-backup` points
to, else the newest `backup_*_*`):
- a loose object: the name proves the content (content-addressed), so it is linked if the
  previous backup has the same name;
- a pack (append-only except a repack, which writes a new file under the same name): linked if
  size, mtime (ns), mode are equal, the last 64 KiB are equal, and the previous backup is of the
  same container (container_id). Copies keep the source's mode, owner and mtime, like rsync -a,
  so dostore's `rsync --link-dest` links to our copies as well;
- anything else: same size, mtime (ns), mode and owner, and for files up to 1 MiB the same bytes.

Remote DEST `[user@]host:path` (or a local DEST with an explicit rsync): the same steps with
`rsync -a` (plus -z when remote) and `--link-dest=../<previous>`, commands on the far side via
`ssh host`, like dostore.
"""

from __future__ import annotations

import ctypes
import datetime
import errno
import fcntl
import fnmatch
import json
import os
import random
import secrets
import shlex
import shutil
import socket
import sqlite3
import stat
import string
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dosfs.container.config import (
    CONFIG_NAME,
    DUPLICATES_NAME,
    INDEX_NAME,
    LOOSE_NAME,
    PACK_LOCK_NAME,
    PACKS_NAME,
    REPACK_PACK_ID,
    SANDBOX_NAME,
    Layout,
    fsync_dir,
    is_valid_pack_name,
    read_config,
)
from dosfs.container.errors import DosfsError

if TYPE_CHECKING:
    from dosfs.container.container import Container

Callback = Callable[[str, Any], None]

#: the names dostore uses in DEST
LIVE_NAME = "live-backup"
LAST_NAME = "last-backup"
BACKUP_GLOB = "backup_*_*"
#: where the rsync path stages hard links of the pinned packs, inside the container folder
STAGING_PREFIX = ".dosfs-backup-"
#: never copied from the container root: the live WAL, locks, our staging folders
_SKIP_ROOT = {
    LOOSE_NAME,
    PACKS_NAME,
    INDEX_NAME,
    INDEX_NAME + "-wal",
    INDEX_NAME + "-shm",
    INDEX_NAME + "-journal",
    PACK_LOCK_NAME,
}
#: how long step 2 keeps re-pinning while packs are being replaced (a running repack)
PIN_RETRY_SECONDS = 30.0
_TAIL = 64 * 1024
_SMALL_FILE = 1024 * 1024
_COPY_CHUNK = 64 * 1024 * 1024
_RSYNC_VANISHED = 24
#: threads that copy and link loose objects (one shard folder each at a time)
LOOSE_THREADS = 4


class BackupError(DosfsError):
    """The backup could not be made; the message says what to do."""


@dataclass
class BackupResult:
    """What a backup did; `folder` is the finished backup (as DEST spells it for a remote)."""

    folder: str
    method: str = "copy"  # "copy" (dosfs's own copier) or "rsync"
    previous: str | None = None
    linked_files: int = 0
    copied_files: int = 0
    copied_bytes: int = 0
    removed: list[str] = field(default_factory=list)
    pin_attempts: int = 1
    warnings: list[str] = field(default_factory=list)


def split_destination(dest: str) -> tuple[str | None, str]:
    """(remote host or None, path). Remote when a ':' comes before any '/', as rsync decides
    (dostore splits on every ':', so it refuses local paths with a colon in them)."""
    head, sep, tail = dest.partition(":")
    if not sep or "/" in head:
        return None, dest
    if not head:
        raise ValueError(f"invalid destination {dest!r}: expected [user@]host:path")
    if tail.startswith("~/"):
        tail = tail[2:]  # ssh commands and rsync both start in the remote home folder
    return head, tail or "."


def backup(
    container: Container | str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    keep: int | None = 1,
    rsync_exe: str | None = None,
    callback: Callback | None = None,
) -> BackupResult:
    """Back up a container (in use or not) into DEST, dostore's layout; returns what it made.

    `keep`: previous backups kept besides the new one (dostore's --keep, default 1); None keeps
    all. A local DEST is copied by dosfs itself unless `rsync_exe` is given; a remote
    `[user@]host:path` always uses rsync over ssh. `callback(action, value)` gets
    disk-objectstore's progress protocol ('init' {'total', 'description'}, 'update' n, 'close').
    """
    if keep is not None and (not isinstance(keep, int) or keep < 0):
        raise ValueError("keep must be a non-negative integer (or None to keep every backup)")
    layout = _layout_of(container)
    remote, path = split_destination(os.fspath(dest))
    if remote is None and rsync_exe is None:
        return _LocalBackup(layout, Path(path), keep, callback).run()
    return _RsyncBackup(layout, remote, path, keep, rsync_exe or "rsync", callback).run()


def _layout_of(container: Container | str | os.PathLike[str]) -> Layout:
    if isinstance(container, (str, os.PathLike)):
        folder = Path(container).absolute()
        return Layout(folder, read_config(folder))
    return container.layout


def new_backup_name(now: datetime.datetime | None = None) -> str:
    """`backup_<UTC timestamp>_<4 random lowercase letters/digits>`, as dostore names them."""
    stamp = (now or datetime.datetime.now(datetime.UTC)).strftime("%Y%m%d%H%M%S")
    suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=4))
    return f"backup_{stamp}_{suffix}"


def choose_previous(names: list[str], last_target: str | None) -> str | None:
    """The backup to hard-link against: the one `last-backup` names, else the newest by name
    (dostore itself always takes the newest by name)."""
    if last_target is not None:
        name = last_target.rstrip("/").rsplit("/", 1)[-1]
        if name in names:
            return name
    return max(names) if names else None


def backups_to_remove(names: list[str], keep: int | None, new_name: str) -> list[str]:
    """Oldest first, all but the newest `keep` besides the new one (never the new one)."""
    if keep is None:
        return []
    others = sorted(n for n in names if n != new_name)
    return others[: max(0, len(others) - keep)]


# -- pinning the packs and the index snapshot ----------------------------------------------------
@dataclass
class _Pin:
    """A pack file held open (fd) or hard-linked (link) so a repack cannot swap it under us."""

    pack_id: int
    dev: int
    ino: int
    fd: int = -1
    link: str | None = None
    size: int = 0
    st: os.stat_result | None = None

    def refresh(self) -> None:
        self.st = os.fstat(self.fd) if self.fd >= 0 else os.stat(self.link or "")
        self.size = self.st.st_size

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.link is not None:
            try:
                os.unlink(self.link)
            except FileNotFoundError:
                pass
            self.link = None


def _pin_packs(layout: Layout, staging: str | None) -> dict[int, _Pin]:
    pins: dict[int, _Pin] = {}
    try:
        names = os.listdir(layout.packs)
    except FileNotFoundError:
        return pins
    try:
        for name in names:
            _pin_one(layout, name, staging, pins)
    except BaseException:
        _release_all(pins)
        raise
    return pins


def _pin_one(layout: Layout, name: str, staging: str | None, pins: dict[int, _Pin]) -> None:
    """Pin one entry of packs/ into `pins` (a regular file with a pack's name only)."""
    if not (is_valid_pack_name(name) or name == str(REPACK_PACK_ID)):
        return  # N.lock, temporary files: not part of a container
    path = os.path.join(layout.packs, name)
    try:  # a pack that is a symlink is followed, as readers do
        if staging is None:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            st = os.fstat(fd)
            pin = _Pin(int(name), st.st_dev, st.st_ino, fd=fd)
        else:
            if not stat.S_ISREG(os.stat(path).st_mode):
                return
            link = os.path.join(staging, name)
            os.link(path, link, follow_symlinks=True)
            st = os.stat(link)
            pin = _Pin(int(name), st.st_dev, st.st_ino, link=link)
    except FileNotFoundError:
        return  # removed meanwhile (a repack dropping an empty pack)
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            raise BackupError(
                f"pack {name} is on another file system than the container folder; the "
                "rsync path needs hard links of the packs next to the container"
            ) from exc
        raise
    if not stat.S_ISREG(st.st_mode):
        pin.release()
        return
    pins[pin.pack_id] = pin


def _release_all(pins: dict[int, _Pin]) -> None:
    for pin in pins.values():
        pin.release()
    pins.clear()


def _copy_index(layout: Layout, target: str) -> None:
    """One read transaction of packs.idx, copied with SQLite's backup API (read-only source:
    never checkpoints or writes the container's index)."""
    uri = "file:" + urllib.parse.quote(layout.index) + "?mode=ro"
    try:
        src = sqlite3.connect(uri, uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot open {layout.index}: {exc}") from exc
    try:
        src.execute("PRAGMA busy_timeout = 60000")
        src.execute("BEGIN")
        src.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the snapshot starts here
        dst = sqlite3.connect(target)
        try:
            dst.execute("PRAGMA synchronous = OFF")  # the whole backup is synced at the end
            src.backup(dst)
        finally:
            dst.close()
        src.execute("COMMIT")
    finally:
        src.close()
    for suffix in ("-wal", "-shm"):  # closed cleanly, so these are empty if present at all
        try:
            os.unlink(target + suffix)
        except FileNotFoundError:
            pass


def _uses_pack(index_copy: str, pack_id: int) -> bool:
    """Whether our copy of the index has rows on `pack_id` (a scan; only asked about -1)."""
    conn = sqlite3.connect(index_copy)
    try:
        sql = "SELECT 1 FROM db_object WHERE pack_id = ? LIMIT 1"
        return conn.execute(sql, (pack_id,)).fetchone() is not None
    finally:
        conn.close()


def _pack_names(layout: Layout) -> set[str]:
    try:
        names = os.listdir(layout.packs)
    except FileNotFoundError:
        return set()
    return {n for n in names if is_valid_pack_name(n) or n == str(REPACK_PACK_ID)}


def _moved_pack(layout: Layout, pins: dict[int, _Pin]) -> str | None:
    """Why the pinned packs may not be the files the snapshot describes, or None: every pinned
    file must still be in place (same st_dev/st_ino) and no pack file may have appeared."""
    names = _pack_names(layout)
    for name in sorted(names):
        pin = pins.get(int(name))
        try:
            st = os.stat(os.path.join(layout.packs, name))
        except FileNotFoundError:
            if pin is not None:
                return f"pack {name} was removed"
            continue
        if not stat.S_ISREG(st.st_mode):
            continue  # not a pack (pinning skipped it too)
        if pin is None:
            return f"pack {name} appeared"
        if (st.st_dev, st.st_ino) != (pin.dev, pin.ino):
            return f"pack {name} was replaced (repack)"
    gone = sorted(set(pins) - {int(n) for n in names})
    return f"pack {gone[0]} was removed" if gone else None


def snapshot(
    layout: Layout, index_target: str, staging: str | None = None
) -> tuple[dict[int, _Pin], int, list[str]]:
    """Step 2 of the module docstring: (pinned packs to copy, attempts, warnings).

    Pin every pack file, copy one read transaction of the index, then check that every pinned
    file is still in place and none appeared (no query over the index: a scan of 10^7 rows would
    cost seconds). With `staging` the pins are hard links in that folder (for rsync), else open
    descriptors. Raises BackupError if the packs keep changing for PIN_RETRY_SECONDS."""
    deadline = time.monotonic() + PIN_RETRY_SECONDS
    attempt = 0
    problem: str | None = None
    while True:
        attempt += 1
        warnings: list[str] = []
        last_try = time.monotonic() >= deadline
        pins = _pin_packs(layout, staging)
        try:
            _copy_index(layout, index_target)
            problem = _moved_pack(layout, pins)
            if problem is None and REPACK_PACK_ID in pins:
                if not _uses_pack(index_target, REPACK_PACK_ID):
                    pins.pop(REPACK_PACK_ID).release()  # a repack's work file: not copied
                elif not last_try:
                    problem = "index rows point at the repack pack -1 (a repack is running)"
                else:
                    warnings.append("index rows stay on pack -1 (an interrupted repack?)")
            if problem is None:
                for pin in pins.values():
                    pin.refresh()  # sizes after the snapshot: >= every byte its rows point at
                return pins, attempt, warnings
        except BaseException:
            _release_all(pins)
            raise
        _release_all(pins)
        os.unlink(index_target)
        if last_try:
            raise BackupError(
                f"the container's packs kept changing for {PIN_RETRY_SECONDS:.0f} s ({problem}); "
                "run the backup again when the repack is done"
            )
        time.sleep(min(0.5, 0.02 * attempt))


# -- small file helpers ----------------------------------------------------------------------------
def _copy_fd_range(src: int, dst: int, size: int, progress: Callable[[int], None] | None) -> int:
    """Copy bytes [0, size) of src to dst (kernel-side when possible); stops early at EOF."""
    done = 0
    use_cfr = True
    while done < size:
        n = min(_COPY_CHUNK, size - done)
        if use_cfr:
            try:
                got = os.copy_file_range(src, dst, n, done, done)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                    raise
                use_cfr = False
                continue
        else:
            data = os.pread(src, min(n, 8 * 1024 * 1024), done)
            got = len(data)
            view = memoryview(data)
            pos = 0
            while pos < got:
                pos += os.pwrite(dst, view[pos:], done + pos)
        if got == 0:
            break
        done += got
        if progress is not None:
            progress(got)
    return done


_IS_ROOT = os.geteuid() == 0


def _umask() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return None


def _create_like(path: str, st: os.stat_result) -> int:
    """A new file for a copy of `st` (its mode already right unless the umask or special bits
    get in the way; _set_meta fixes those)."""
    return os.open(
        path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, stat.S_IMODE(st.st_mode) & 0o777
    )


def _set_meta(fd: int, st: os.stat_result, owner_ok: bool = False) -> None:
    """What rsync -a keeps: mode, owner (when root), mtime; so its --link-dest links to us.
    Only the syscalls that change something (a copy of 10^5 small files feels each one)."""
    mode = stat.S_IMODE(st.st_mode)
    umask = _UMASK
    if umask is None or mode & ~0o777 or mode & umask:
        os.fchmod(fd, mode)
    if _IS_ROOT and not (owner_ok and st.st_uid == _EUID and st.st_gid == _EGID):
        os.fchown(fd, st.st_uid, st.st_gid)
    os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))


_UMASK = _umask()
_EUID = os.geteuid()
_EGID = os.getegid()


def _same_tail(a: int, b_path: str, size: int) -> bool:
    n = min(size, _TAIL)
    try:
        fd = os.open(b_path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        return os.pread(a, n, size - n) == os.pread(fd, n, size - n)
    finally:
        os.close(fd)


def _same_bytes(a_path: str, b_path: str) -> bool:
    try:
        with open(a_path, "rb") as fa, open(b_path, "rb") as fb:
            return bool(fa.read() == fb.read())
    except OSError:
        return False


def _mkdir_owned(path: str, st: os.stat_result) -> None:
    """A folder we can write into; its mode and times are set at the end (like rsync), so a
    read-only source folder does not stop us from filling the copy."""
    os.mkdir(path, 0o700)
    if _IS_ROOT:
        os.chown(path, st.st_uid, st.st_gid)


def _syncfs(path: str) -> None:
    """Make everything written below `path` durable: one syncfs(2) for the whole file system
    instead of an fsync per file."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syncfs(fd) != 0:
            os.sync()
    except (OSError, AttributeError):
        os.sync()
    finally:
        os.close(fd)


def _container_id(folder: str) -> str | None:
    try:
        with open(os.path.join(folder, CONFIG_NAME), encoding="utf8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    value = data.get("container_id") if isinstance(data, dict) else None
    return str(value) if value else None


class _Progress:
    """disk-objectstore's callback protocol, with updates batched (a callback per file of
    10^5 loose objects would cost more than linking them)."""

    def __init__(self, callback: Callback | None) -> None:
        self.callback = callback
        self.pending = 0
        self.last = 0.0

    def init(self, total: int, description: str) -> None:
        if self.callback:
            self.callback("init", {"total": total, "description": description})
            self.pending = 0
            self.last = time.monotonic()

    def update(self, n: int = 1) -> None:
        if self.callback:
            self.pending += n
            now = time.monotonic()
            if now - self.last >= 0.1:
                self.callback("update", self.pending)
                self.pending = 0
                self.last = now

    def close(self) -> None:
        if self.callback:
            if self.pending:
                self.callback("update", self.pending)
                self.pending = 0
            self.callback("close", None)


# -- the local DEST: dosfs copies and hard-links itself --------------------------------------------
class _LocalBackup:
    def __init__(
        self, layout: Layout, dest: Path, keep: int | None, callback: Callback | None
    ) -> None:
        self.layout = layout
        self.dest = dest
        self.keep = keep
        self.progress = _Progress(callback)
        self.src = str(layout.folder)
        self.prev: str | None = None  # path of the previous backup
        self.same_container = False
        self.result = BackupResult(folder="")
        self.dir_times: list[tuple[str, os.stat_result]] = []
        self._lock = threading.Lock()
        self.owner_ok = False

    def _mkdir(self, path: str, st: os.stat_result) -> None:
        _mkdir_owned(path, st)
        self.dir_times.append((path, st))

    # -- driver --
    def run(self) -> BackupResult:
        dest = self.dest
        _make_dest(dest)
        lock = _lock_dest(dest)
        try:
            live = os.path.join(dest, LIVE_NAME)
            _remove_leftover(live)
            names, last_target = _list_backups(str(dest))
            prev_name = choose_previous(names, last_target)
            if prev_name is not None:
                self.prev = os.path.join(dest, prev_name)
                self.result.previous = self.prev
                self.same_container = _container_id(self.prev) == self.layout.config.container_id
            root_st = os.stat(self.src)
            self._mkdir(live, root_st)
            # new files get our uid and gid, unless DEST passes its group down (setgid)
            self.owner_ok = not os.stat(live).st_mode & stat.S_ISGID
            try:
                self._loose(live)
                pins, attempts, warnings = snapshot(self.layout, os.path.join(live, INDEX_NAME))
                self.result.pin_attempts = attempts
                self.result.warnings += warnings
                try:
                    self._packs(live, pins)
                finally:
                    _release_all(pins)
                self._link_unchanged_index(live)
                self._rest(live)
                for path, st in reversed(self.dir_times):
                    os.chmod(path, stat.S_IMODE(st.st_mode))
                    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
                _syncfs(live)
                name = self._finish(live)
            except BaseException:
                shutil.rmtree(live, ignore_errors=True)
                raise
            self.result.folder = os.path.join(dest, name)
            names, _ = _list_backups(str(dest))
            for old in backups_to_remove(names, self.keep, name):
                try:
                    shutil.rmtree(os.path.join(dest, old))
                    self.result.removed.append(os.path.join(dest, old))
                except OSError as exc:
                    self.result.warnings.append(f"could not remove old backup {old}: {exc}")
        finally:
            os.close(lock)
        return self.result

    def _finish(self, live: str) -> str:
        dest = str(self.dest)
        while True:
            name = new_backup_name()
            if not os.path.lexists(os.path.join(dest, name)):
                break
            time.sleep(0.01)
        os.rename(live, os.path.join(dest, name))
        fsync_dir(dest)
        tmp = os.path.join(dest, f".{LAST_NAME}.{secrets.token_hex(4)}")
        os.symlink(name, tmp)
        try:
            os.replace(tmp, os.path.join(dest, LAST_NAME))  # atomic, unlike dostore's ln -sfn
        except OSError as exc:
            os.unlink(tmp)
            self.result.warnings.append(f"could not point {LAST_NAME} at {name}: {exc}")
        fsync_dir(dest)
        return name

    # -- step 1 --
    def _loose(self, live: str) -> None:
        """Shard by shard (a listing of one shard in memory at a time: 10^6 loose objects must
        not cost 100 MB of names); a first pass only counts, for the progress bar."""
        layout = self.layout
        src_root = layout.loose
        dst_root = os.path.join(live, LOOSE_NAME)
        root_st = os.stat(src_root)
        self._mkdir(dst_root, root_st)
        prev_root = os.path.join(self.prev, LOOSE_NAME) if self.prev else None
        shards: list[str] = []
        top_files: list[str] = []
        total = 0
        with os.scandir(src_root) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    shards.append(entry.name)
                    with os.scandir(entry.path) as inner:
                        total += sum(1 for _ in inner)
                else:
                    top_files.append(entry.name)
        self.progress.init(total + len(top_files), "Loose objects")
        flat = layout.prefix_len == 0

        def one_shard(shard: str) -> int:
            src_dir = os.path.join(src_root, shard)
            dst_dir = os.path.join(dst_root, shard)
            try:
                st = os.stat(src_dir)
                names = os.listdir(src_dir)
            except FileNotFoundError:
                return 0
            self._mkdir(dst_dir, st)
            addressed = not flat and layout.is_valid_prefix(shard)
            prev_dir = os.path.join(prev_root, shard) if prev_root else None
            for name in names:
                src = f"{src_dir}/{name}"
                dst = f"{dst_dir}/{name}"
                if not (addressed and layout.is_valid_rest(name)):
                    self._any(src, dst, f"{prev_dir}/{name}" if prev_dir else None)
                elif prev_dir is not None:
                    self._loose_object(src, dst, f"{prev_dir}/{name}")
                else:
                    self._copy_file(src, dst)
            return len(names)

        # a few threads: creating files and links is syscall-bound (the GIL is released), and
        # shards are separate folders, so the kernel does not serialise them
        with ThreadPoolExecutor(LOOSE_THREADS, thread_name_prefix="dosfs-backup") as pool:
            for done in pool.map(one_shard, sorted(shards)):
                self.progress.update(done)
        for name in top_files:
            src = os.path.join(src_root, name)
            dst = os.path.join(dst_root, name)
            prev = os.path.join(prev_root, name) if prev_root else None
            if flat and prev and layout.is_valid_hashkey(name):
                self._loose_object(src, dst, prev)
            else:
                self._any(src, dst, prev)
            self.progress.update()
        self.progress.close()

    def _count(self, linked: int = 0, copied: int = 0, nbytes: int = 0) -> None:
        with self._lock:
            self.result.linked_files += linked
            self.result.copied_files += copied
            self.result.copied_bytes += nbytes

    def _loose_object(self, src: str, dst: str, prev: str) -> None:
        """Content-addressed: the previous backup's file of the same name has the same bytes."""
        try:
            os.link(prev, dst, follow_symlinks=False)
            self._count(linked=1)
            return
        except OSError:
            pass  # not there (or too many links): copy
        self._copy_file(src, dst)

    def _copy_file(self, src: str, dst: str) -> None:
        try:
            sfd = os.open(src, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            return  # a loose object packed and cleaned meanwhile: it is in the snapshot
        try:
            st = os.fstat(sfd)
            if not stat.S_ISREG(st.st_mode):
                return
            dfd = _create_like(dst, st)
            try:
                got = _copy_fd_range(sfd, dfd, st.st_size, None)
                _set_meta(dfd, st, self.owner_ok)
            finally:
                os.close(dfd)
            self._count(copied=1, nbytes=got)
        finally:
            os.close(sfd)

    def _any(self, src: str, dst: str, prev: str | None) -> None:
        """A file that is not content-addressed: rsync's rule (size, mtime, mode, owner), plus
        a byte comparison for small files."""
        try:
            st = os.lstat(src)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(src), dst)
            return
        if stat.S_ISDIR(st.st_mode):
            self._tree(src, dst, prev)
            return
        if not stat.S_ISREG(st.st_mode):
            return  # sockets, fifos: nothing to back up
        if prev is not None:
            try:
                pst = os.lstat(prev)
            except OSError:
                pst = None
            if (
                pst is not None
                and stat.S_ISREG(pst.st_mode)
                and (pst.st_size, pst.st_mtime_ns, pst.st_mode)
                == (st.st_size, st.st_mtime_ns, st.st_mode)
                and (pst.st_uid, pst.st_gid) == (st.st_uid, st.st_gid)
                and (st.st_size > _SMALL_FILE or _same_bytes(src, prev))
            ):
                try:
                    os.link(prev, dst, follow_symlinks=False)
                    self._count(linked=1)
                    return
                except OSError:
                    pass
        self._copy_file(src, dst)

    def _tree(self, src: str, dst: str, prev: str | None) -> None:
        st = os.stat(src)
        self._mkdir(dst, st)
        for name in sorted(os.listdir(src)):
            self._any(
                os.path.join(src, name),
                os.path.join(dst, name),
                os.path.join(prev, name) if prev else None,
            )

    # -- step 3 --
    def _packs(self, live: str, pins: dict[int, _Pin]) -> None:
        dst_dir = os.path.join(live, PACKS_NAME)
        st_dir = os.stat(self.layout.packs)
        self._mkdir(dst_dir, st_dir)
        prev_dir = os.path.join(self.prev, PACKS_NAME) if self.prev else None
        self.progress.init(sum(p.size for p in pins.values()), "Pack files (bytes)")
        for pack_id in sorted(pins):
            pin = pins[pack_id]
            st = pin.st
            assert st is not None
            dst = os.path.join(dst_dir, str(pack_id))
            if prev_dir and self.same_container and self._pack_unchanged(pin, st, prev_dir):
                os.link(os.path.join(prev_dir, str(pack_id)), dst, follow_symlinks=False)
                self.result.linked_files += 1
                self.progress.update(pin.size)
                continue
            dfd = _create_like(dst, st)
            try:
                got = _copy_fd_range(pin.fd, dfd, pin.size, self.progress.update)
                _set_meta(dfd, st, self.owner_ok)
            finally:
                os.close(dfd)
            if got < pin.size:  # an aborted append was cut off meanwhile: those bytes were
                self.progress.update(pin.size - got)  # never referenced by any index row
            self.result.copied_files += 1
            self.result.copied_bytes += got
        self.progress.close()

    @staticmethod
    def _pack_unchanged(pin: _Pin, st: os.stat_result, prev_dir: str) -> bool:
        prev = os.path.join(prev_dir, str(pin.pack_id))
        try:
            pst = os.lstat(prev)
        except OSError:
            return False
        return (
            stat.S_ISREG(pst.st_mode)
            and pst.st_size == pin.size
            and pst.st_mtime_ns == st.st_mtime_ns
            and pst.st_mode == st.st_mode
            and _same_tail(pin.fd, prev, pin.size)
        )

    def _link_unchanged_index(self, live: str) -> None:
        """An unchanged container gives a byte-identical snapshot: link the previous one."""
        if not self.prev:
            return
        ours = os.path.join(live, INDEX_NAME)
        theirs = os.path.join(self.prev, INDEX_NAME)
        try:
            if os.path.getsize(ours) != os.lstat(theirs).st_size or not os.path.isfile(theirs):
                return
        except OSError:
            return
        if _same_files(ours, theirs):
            tmp = ours + ".link"
            os.link(theirs, tmp)
            os.replace(tmp, ours)
            self.result.linked_files += 1

    # -- step 4 --
    def _rest(self, live: str) -> None:
        for name in sorted(os.listdir(self.src)):
            if name in _SKIP_ROOT or name.startswith(STAGING_PREFIX):
                continue
            src = os.path.join(self.src, name)
            dst = os.path.join(live, name)
            if name == SANDBOX_NAME:
                st = os.stat(src)
                self._mkdir(dst, st)
                continue
            self._any(src, dst, os.path.join(self.prev, name) if self.prev else None)
        for name in (SANDBOX_NAME, DUPLICATES_NAME):  # every container has them
            path = os.path.join(live, name)
            if not os.path.isdir(path):
                os.mkdir(path)


def _same_files(a: str, b: str) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x = fa.read(1024 * 1024)
            if x != fb.read(1024 * 1024):
                return False
            if not x:
                return True


def _make_dest(dest: Path) -> None:
    """Create DEST if needed, one level only (as dostore): a typo or an unmounted backup disk
    must fail, not start a backup tree on the wrong file system."""
    if dest.is_dir():
        return
    try:
        os.mkdir(dest)
    except FileExistsError:
        raise BackupError(f"destination {dest} exists and is not a folder") from None
    except OSError as exc:
        raise BackupError(f"cannot create the destination {dest}: {exc.strerror}") from exc


def _lock_dest(dest: Path) -> int:
    """flock() on DEST itself (no extra file in dostore's layout): one dosfs backup at a time."""
    fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise BackupError(f"another dosfs backup into {dest} is running") from None
    return fd


def _remove_leftover(live: str) -> None:
    """A live-backup left by an interrupted run (dosfs or dostore) is never a backup: remove it
    (dostore would rsync into it again, keeping whatever stale files it holds)."""
    if os.path.islink(live) or os.path.isfile(live):
        os.unlink(live)
    elif os.path.isdir(live):
        shutil.rmtree(live)


def _list_backups(dest: str) -> tuple[list[str], str | None]:
    """(names of the finished backups: folders matching backup_*_*, not symlinks; the target of
    last-backup or None)."""
    names: list[str] = []
    with os.scandir(dest) as entries:
        for entry in entries:
            if fnmatch.fnmatchcase(entry.name, BACKUP_GLOB) and entry.is_dir(follow_symlinks=False):
                names.append(entry.name)
    try:
        last: str | None = os.readlink(os.path.join(dest, LAST_NAME))
    except OSError:
        last = None
    return sorted(names), last


# -- rsync (remote DEST, or a local one with an explicit rsync) -----------------------------------
class _RsyncBackup:
    def __init__(
        self,
        layout: Layout,
        remote: str | None,
        path: str,
        keep: int | None,
        rsync_exe: str,
        callback: Callback | None,
    ) -> None:
        self.layout = layout
        self.remote = remote
        self.path = path
        self.keep = keep
        self.rsync = rsync_exe
        self.progress = _Progress(callback)
        self.result = BackupResult(folder="", method="rsync")

    def _where(self, path: str) -> str:
        return f"{self.remote}:{path}" if self.remote else path

    def _sh(self, script: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Run a POSIX sh script here or, for a remote DEST, through `ssh host`."""
        argv = ["sh", "-c", script, "sh", *args]
        if self.remote:
            argv = ["ssh", self.remote, shlex.join(argv)]
        return subprocess.run(argv, capture_output=True, text=True, check=False)

    def _rsync(self, sources: list[str], target: str, prev: str | None, *extra: str) -> None:
        argv = [self.rsync, "-a", *(["-z"] if self.remote else []), *extra]
        if prev is not None:
            argv.append(f"--link-dest=../{prev}")  # relative to the target: right everywhere
        argv += [*sources, self._where(target)]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc.returncode == 0 or (
            proc.returncode == _RSYNC_VANISHED and sources[0].endswith("/" + LOOSE_NAME)
        ):
            return  # vanished loose files were packed meanwhile: they are in the snapshot
        raise BackupError(
            f"rsync to {self._where(target)} failed ({proc.returncode}): {_last_line(proc)}"
        )

    def run(self) -> BackupResult:
        if shutil.which(self.rsync) is None:
            raise BackupError(f"{self.rsync} not found (install rsync or pass --rsync-exe)")
        if self.remote and shutil.which("ssh") is None:
            raise BackupError("ssh not found: it is needed for a remote destination")
        path = self.path.rstrip("/") or "/"
        names, last = self._probe(path)
        prev = choose_previous(names, last)
        self.result.previous = self._where(f"{path}/{prev}") if prev else None
        live = f"{path}/{LIVE_NAME}"
        self._clean_stale_staging()
        staging = os.path.join(
            str(self.layout.folder),
            f"{STAGING_PREFIX}{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(4)}",
        )
        os.mkdir(staging)
        os.mkdir(os.path.join(staging, PACKS_NAME))
        try:
            self.progress.init(4, f"rsync to {self._where(path)}")
            root = str(self.layout.folder)
            self._rsync([os.path.join(root, LOOSE_NAME)], live + "/", prev)
            self.progress.update()
            index_copy = os.path.join(staging, INDEX_NAME)
            pins, attempts, warnings = snapshot(
                self.layout, index_copy, os.path.join(staging, PACKS_NAME)
            )
            self.result.pin_attempts = attempts
            self.result.warnings += warnings
            packs_st = os.stat(self.layout.packs)  # rsync -a copies the folder's attributes
            os.chmod(os.path.join(staging, PACKS_NAME), stat.S_IMODE(packs_st.st_mode))
            os.utime(
                os.path.join(staging, PACKS_NAME), ns=(packs_st.st_atime_ns, packs_st.st_mtime_ns)
            )
            try:
                self._rsync([index_copy, os.path.join(staging, PACKS_NAME)], live + "/", prev)
            finally:
                _release_all(pins)
            self.progress.update(2)
            excludes = [f"--exclude=/{n}" for n in sorted(_SKIP_ROOT)]
            excludes += [f"--exclude=/{STAGING_PREFIX}*", f"--exclude=/{SANDBOX_NAME}/*"]
            self._rsync([root + "/"], live + "/", prev, *excludes)
            self.progress.update()
            self.progress.close()
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        name = new_backup_name()
        proc = self._sh(_FINISH_SH, path, name)
        if proc.returncode != 0:
            raise BackupError(
                f"could not finish the backup in {self._where(path)}: {_last_line(proc)}"
            )
        self.result.folder = self._where(f"{path}/{name}")
        found = [line.rsplit("/", 1)[-1] for line in proc.stdout.splitlines() if line.strip()]
        old = backups_to_remove(found, self.keep, name)
        if old:
            gone = self._sh('cd "$1" && shift && rm -rf -- "$@"', path, *old)
            if gone.returncode == 0:
                self.result.removed += [self._where(f"{path}/{n}") for n in old]
            else:
                self.result.warnings.append(f"could not remove old backups: {_last_line(gone)}")
        return self.result

    def _probe(self, path: str) -> tuple[list[str], str | None]:
        """One round trip: create DEST (one level), remove a leftover live-backup, list."""
        proc = self._sh(_PROBE_SH, path)
        if self.remote and proc.returncode == 255:
            raise BackupError(
                f"remote {self.remote} is not accessible over ssh: {_last_line(proc)}"
            )
        if proc.returncode == 3:
            raise BackupError(f"cannot access or create the destination {self._where(path)}")
        if proc.returncode != 0:
            raise BackupError(f"cannot prepare {self._where(path)}: {_last_line(proc)}")
        names: list[str] = []
        last = None
        for line in proc.stdout.splitlines():
            if line.startswith("last:"):
                last = line[5:] or None
            elif line.startswith("backup:"):
                names.append(line[7:].rsplit("/", 1)[-1])
        return sorted(names), last

    def _clean_stale_staging(self) -> None:
        """Staging folders of dosfs backups that died (same host, pid gone)."""
        root = str(self.layout.folder)
        host = socket.gethostname()
        for name in os.listdir(root):
            if not name.startswith(STAGING_PREFIX):
                continue
            parts = name[len(STAGING_PREFIX) :].rsplit(".", 2)
            if len(parts) != 3 or parts[0] != host or not parts[1].isdigit():
                continue
            pid = int(parts[1])
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                shutil.rmtree(os.path.join(root, name), ignore_errors=True)
            except PermissionError:
                pass


def _last_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The last line of stderr (errors are one line), else the exit code."""
    lines = proc.stderr.strip().splitlines()
    return lines[-1] if lines else f"exit code {proc.returncode}"


_PROBE_SH = f"""
d=$1
if [ ! -e "$d" ]; then mkdir "$d" 2>/dev/null || exit 3; fi
[ -d "$d" ] || exit 3
rm -rf "$d/{LIVE_NAME}" || exit 4
printf 'last:%s\\n' "$(readlink "$d/{LAST_NAME}" 2>/dev/null)"
find "$d" -maxdepth 1 -type d -name '{BACKUP_GLOB}' -print | sed 's/^/backup:/'
"""

_FINISH_SH = f"""
cd "$1" || exit 3
[ -d {LIVE_NAME} ] || {{ echo "{LIVE_NAME} is missing" >&2; exit 4; }}
[ ! -e "$2" ] || {{ echo "$2 exists" >&2; exit 4; }}
sync
mv {LIVE_NAME} "$2" || exit 5
ln -sfn "$2" {LAST_NAME} || echo "could not update {LAST_NAME}" >&2
find . -maxdepth 1 -type d -name '{BACKUP_GLOB}' -print
"""


__all__ = [
    "BACKUP_GLOB",
    "LAST_NAME",
    "LIVE_NAME",
    "BackupError",
    "BackupResult",
    "backup",
    "backups_to_remove",
    "choose_previous",
    "new_backup_name",
    "snapshot",
    "split_destination",
]
