"""A remote DEST `[user@]host:path` (or a local one with an explicit rsync): the same steps with
`rsync -a --link-dest`, and the DEST side in two sh scripts run through `ssh host`, like dostore."""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import socket
import stat
import subprocess

from dosfs.container.backup.dest import (
    BACKUP_GLOB,
    LAST_NAME,
    LIVE_NAME,
    backups_to_remove,
    choose_previous,
    new_backup_name,
)
from dosfs.container.backup.pinning import _SKIP_ROOT, STAGING_PREFIX, _release_all, snapshot
from dosfs.container.backup.report import BackupError, BackupResult
from dosfs.container.config import INDEX_NAME, LOOSE_NAME, PACKS_NAME, SANDBOX_NAME, Layout
from dosfs.container.progress import Callback, Progress

_RSYNC_VANISHED = 24


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
        self.progress = Progress(callback)
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
