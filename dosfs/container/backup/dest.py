"""DEST in dostore's layout: its names, which backup to link against and which to prune, and
the local DEST's creation, lock and listing."""

from __future__ import annotations

import datetime
import fcntl
import fnmatch
import json
import os
import random
import shutil
import string
from pathlib import Path

from dosfs.container.backup.report import BackupError
from dosfs.container.config import CONFIG_NAME

#: the names dostore uses in DEST
LIVE_NAME = "live-backup"
LAST_NAME = "last-backup"
BACKUP_GLOB = "backup_*_*"


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


def check_apart(container: Path, dest: str) -> None:
    """BackupError when a local DEST lies inside the container or the container inside DEST
    (symlinks resolved): the copy would copy itself (a recursion without end), or the next
    backup would copy the previous ones. Checked before anything is created."""
    src = os.path.realpath(container)
    target = os.path.realpath(dest)
    if target == src or target.startswith(src.rstrip(os.sep) + os.sep):
        raise BackupError(
            f"destination {dest} is inside the container {container}: choose a folder outside it"
        )
    if src.startswith(target.rstrip(os.sep) + os.sep):
        raise BackupError(
            f"the container {container} is inside the destination {dest}: choose a folder "
            "that does not hold the container"
        )


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


def _container_id(folder: str) -> str | None:
    try:
        with open(os.path.join(folder, CONFIG_NAME), encoding="utf8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    value = data.get("container_id") if isinstance(data, dict) else None
    return str(value) if value else None
