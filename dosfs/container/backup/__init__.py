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

The modules: `dest` (DEST's names, choosing the previous backup, pruning), `pinning` (step 2),
`files` (copying and comparing one file, syncfs), `local` (the built-in copier), `rsync` (rsync
and ssh), `report` (result, error, progress callbacks).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from dosfs.container.backup.dest import (
    BACKUP_GLOB,
    LAST_NAME,
    LIVE_NAME,
    backups_to_remove,
    check_apart,
    choose_previous,
    new_backup_name,
    split_destination,
)
from dosfs.container.backup.local import _LocalBackup
from dosfs.container.backup.pinning import _moved_pack as _moved_pack
from dosfs.container.backup.pinning import _pin_packs as _pin_packs
from dosfs.container.backup.pinning import _release_all as _release_all
from dosfs.container.backup.pinning import snapshot
from dosfs.container.backup.report import BackupError, BackupResult
from dosfs.container.backup.rsync import _RsyncBackup
from dosfs.container.config import Layout, read_config
from dosfs.container.progress import Callback

if TYPE_CHECKING:
    from dosfs.container.container import Container


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
    if remote is None:
        check_apart(layout.folder, path)
    if remote is None and rsync_exe is None:
        return _LocalBackup(layout, Path(path), keep, callback).run()
    return _RsyncBackup(layout, remote, path, keep, rsync_exe or "rsync", callback).run()


def _layout_of(container: Container | str | os.PathLike[str]) -> Layout:
    if isinstance(container, (str, os.PathLike)):
        folder = Path(container).absolute()
        return Layout(folder, read_config(folder))
    return container.layout


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
