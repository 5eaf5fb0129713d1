"""Step 2 of the package docstring: pin every pack file, snapshot the index, prove the pinned
files are the ones the snapshot describes; and what is never copied from the container root."""

from __future__ import annotations

import errno
import os
import sqlite3
import stat
import time
import urllib.parse
from dataclasses import dataclass

from dosfs.container.backup.report import BackupError
from dosfs.container.config import (
    INDEX_NAME,
    LOOSE_NAME,
    PACK_LOCK_NAME,
    PACKS_NAME,
    REPACK_PACK_ID,
    Layout,
    is_valid_pack_name,
)

#: where the rsync path stages hard links of the pinned packs, inside the container folder
STAGING_PREFIX = ".dosfs-backup-"
#: not copied from the container root as they are: steps 1-3 copy loose/, packs/ and the index
#: themselves; the live WAL and the locks never (staging folders are skipped by their prefix)
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
    """Step 2 of the package docstring: (pinned packs to copy, attempts, warnings).

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
