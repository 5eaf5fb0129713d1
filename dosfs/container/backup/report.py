"""What a backup tells its caller: the result, the error, and progress in disk-objectstore's
callback protocol (so AiiDA's progress bars work unchanged)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dosfs.container.errors import DosfsError

Callback = Callable[[str, Any], None]


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
