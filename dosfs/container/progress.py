"""disk-objectstore's progress callback protocol, with updates batched.

`callback(action, value)`: "init" with {"total", "description"}, "update" with an increment in
the same units as the total, "close" with None. Updates are sent at most every 0.1 s (a callback
per object of 10^5 small ones would cost more than the work); `close` flushes the rest, so the
increments always add up to what was done.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

Callback = Callable[[str, Any], None]

#: least seconds between two "update" calls
INTERVAL = 0.1


class Progress:
    """One operation's progress; every method is a no-op without a callback."""

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
            if now - self.last >= INTERVAL:
                self.callback("update", self.pending)
                self.pending = 0
                self.last = now

    def close(self) -> None:
        if self.callback:
            if self.pending:
                self.callback("update", self.pending)
                self.pending = 0
            self.callback("close", None)
