"""Write-behind for big incoming/ files: the write is acknowledged once queued, a thread per
file does ``pwrite`` + sha256 in order.

Why: without the kernel's writeback cache, a writer's next ``write()`` only comes after we
answer the previous one, and the daemon's loop is single-threaded: the kernel copy, the pwrite
and the hashing run one after the other on one core. hashlib and pwrite release the GIL, so a
thread per file lets the hashing of chunk N overlap the transfer of chunk N+1 (two cores).

Errors: the first failure is kept; the writer sees it at its next ``write()``, or at
``close()`` (flush drains the queue), and the file is never committed. In-flight data is
bounded (``MAX_PENDING`` bytes per file); a writer beyond it waits.

Small files never get a thread: write-behind starts once a file has ``START_AFTER`` bytes.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

import trio

START_AFTER = 4 << 20
MAX_PENDING = 8 << 20


class WriteBehind:
    """An ordered queue of pwrites on one staged object, drained by its own thread."""

    def __init__(self, pwrite: Callable[[bytes, int], Any], end: int) -> None:
        self._pwrite = pwrite
        self.end = end  # the file size once every queued write is done
        self._queue: queue.SimpleQueue[tuple[bytes, int] | None] = queue.SimpleQueue()
        self._token = trio.lowlevel.current_trio_token()
        self.error: BaseException | None = None
        self.pending = 0  # bytes queued or being written; touched only in the trio thread
        self._progress = trio.Event()
        self._thread = threading.Thread(target=self._loop, name="dosfs-writer", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            data, offset = job
            if self.error is None:
                try:
                    self._pwrite(data, offset)
                except BaseException as exc:  # noqa: BLE001 - reported to the writer later
                    self.error = exc
            try:
                self._token.run_sync_soon(self._done, len(data))
            except trio.RunFinishedError:
                return

    def _done(self, size: int) -> None:
        self.pending -= size
        self._progress.set()
        self._progress = trio.Event()

    async def write(self, data: bytes, offset: int) -> None:
        """Queue one write (waits while too much is in flight)."""
        while self.pending >= MAX_PENDING and self.error is None:
            await self._progress.wait()
        self.pending += len(data)
        self.end = max(self.end, offset + len(data))
        self._queue.put((data, offset))

    async def drain(self) -> None:
        """Wait until every queued write has been done (or failed)."""
        with trio.CancelScope(shield=True):
            while self.pending > 0:
                await self._progress.wait()

    def stop(self, wait: bool = False) -> None:
        """End the thread (after drain(), or with ``wait`` at shutdown)."""
        self._queue.put(None)
        if wait:
            self._thread.join(timeout=30)
