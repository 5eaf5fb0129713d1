"""What a backup tells its caller: the result and the error (progress goes through the
engine's disk-objectstore callback protocol, container/progress.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from dosfs.container.errors import DosfsError


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

