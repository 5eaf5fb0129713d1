"""A fixed pool of long-lived threads for the blocking work the trio loop must not do.

Why not ``trio.to_thread``: its threads come and go (they exit after 10 s idle), and the engine
opens one SQLite connection per thread that it keeps until the container is closed, so a
long-running daemon would collect connections (and their page caches) burst after burst. Here
the threads live as long as the mount, so there are at most ``size`` such connections, and an
``initializer`` runs once in each (the mount uses it to keep their SQLite caches small).

Jobs are shielded from cancellation like ``trio.to_thread.run_sync``: a commit that started
finishes even when the mount is shutting down.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

import trio

log = logging.getLogger("dosfs.fs")

_Job = tuple[Callable[..., Any], tuple[Any, ...], trio.lowlevel.TrioToken, list[Any], trio.Event]


class Pending:
    """A job handed to the pool; its result (or exception) once it has run."""

    def __init__(self) -> None:
        self.box: list[Any] = []
        self.done = trio.Event()

    async def result(self) -> Any:
        with trio.CancelScope(shield=True):
            await self.done.wait()
        ok, value = self.box[0]
        if ok:
            return value
        raise value


class WorkerPool:
    """``await pool.run(fn, *args)`` runs ``fn`` in one of ``size`` threads."""

    def __init__(
        self, size: int, initializer: Callable[[], None] | None = None, name: str = "worker"
    ) -> None:
        self.size = max(1, size)
        self.initializer = initializer
        self.name = name
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    def _start(self) -> None:
        for i in range(self.size):
            thread = threading.Thread(target=self._loop, name=f"dosfs-{self.name}-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _loop(self) -> None:
        if self.initializer is not None:
            try:
                self.initializer()
            except Exception as exc:  # noqa: BLE001 - tuning only; the worker still works
                log.debug("worker initializer failed: %s", exc)
        while True:
            job = self._queue.get()
            if job is None:
                return
            fn, args, token, box, done = job
            try:
                box.append((True, fn(*args)))
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
                box.append((False, exc))
            try:
                token.run_sync_soon(done.set)
            except trio.RunFinishedError:
                pass

    def submit(self, fn: Callable[..., Any], *args: Any) -> Pending:
        """Start ``fn`` now; await ``.result()`` later (work ahead of need, e.g. a listing's
        next batch while the kernel is busy with this one)."""
        if not self._threads:
            self._start()
        pending = Pending()
        self._queue.put((fn, args, trio.lowlevel.current_trio_token(), pending.box, pending.done))
        return pending

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self.submit(fn, *args).result()

    def close(self) -> None:
        """Stop the threads (after the loop ended; queued jobs finish first)."""
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=30)
        self._threads = []
