"""What runs on the worker threads, and why, in one place.

One OS thread runs every handler (pyfuse3 + trio), so a blocking call stalls every request; but a
thread hop costs tens of microseconds, more than a cached `pread`. Measured rules:

* in the loop: an uncompressed `pread` of local bytes (page cache: a local pack, or a remote
  range already in the extent cache), an index lookup, a staged `pwrite` with on-the-fly sha256,
  hashing up to INLINE_HASH bytes;
* on the CPU pool: decompression (of local bytes), fsync, commit (hashing when writes were not
  sequential, rename, directory fsync), discarding a staged file, re-seeding a reopened file,
  listing pages (SQLite pages + shard listings; the next page is fetched while the kernel takes
  this one), hashing more than INLINE_HASH bytes, recovery at mount;
* on the network pool: anything that may wait on a server (a read of bytes a remote pack store
  does not hold yet, a refresh of the remote head). A separate pool, so that GETs hanging on a
  frozen server never take the threads that decompress and hash cached bytes; a read tries the
  local bytes first (packstore.local_only) and moves there only when they are missing.

A network read carries one deadline, taken when the request arrives (packstore.deadline): a read
queued behind hung ones does not get a fresh timeout of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from dosfs.container.packstore import WouldBlock, deadline, local_only
from dosfs.engine import ObjectReaderLike
from dosfs.fs.workers import Pending, WorkerPool

T = TypeVar("T")

#: bytes hashed in the loop itself; more go to a worker (sha256 runs at ~1 GB/s here)
INLINE_HASH = 64 * 1024
#: threads that may wait on the network (each holds one read until its deadline at most): as
#: many as the remote store's miss fetchers, so parallel readers' misses overlap
NETWORK_WORKERS = 16


def _local(reader: ObjectReaderLike, offset: int, size: int) -> bytes:
    with local_only():
        return reader.pread(offset, size)


def _by(when: float | None, reader: ObjectReaderLike, offset: int, size: int) -> bytes:
    with deadline(when):
        return reader.pread(offset, size)


def _within(when: float | None, fn: Callable[..., T], *args: Any) -> T:
    with deadline(when):
        return fn(*args)


class Offload:
    """The worker pools and the policy of what goes where."""

    def __init__(
        self,
        workers: int,
        thread_init: Callable[[], None] | None = None,
        *,
        network_workers: int = NETWORK_WORKERS,
        timeout: float | None = None,
    ) -> None:
        self.pool = WorkerPool(workers, thread_init)
        self.network = WorkerPool(network_workers, thread_init, name="net")
        #: seconds one read request may wait on the network (None: the engine's own bound)
        self.timeout = timeout

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Slow or CPU-heavy work (see the module docstring)."""
        result: T = await self.pool.run(fn, *args)
        return result

    async def run_network(self, fn: Callable[..., T], *args: Any) -> T:
        """Work that may wait on a server (never on the CPU pool: see the module docstring)."""
        result: T = await self.network.run(fn, *args)
        return result

    async def wait_network(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn` on the network pool under one deadline (the timeout from now): a call that
        may fetch from a server, e.g. an index lookup of an s3 mount."""
        when = None if self.timeout is None else time.monotonic() + self.timeout
        result: T = await self.network.run(_within, when, fn, *args)
        return result

    def submit(self, fn: Callable[..., Any], *args: Any, network: bool = False) -> Pending:
        """Start `fn` in a worker now (on the network pool if it may wait on a server), await
        its result later."""
        return (self.network if network else self.pool).submit(fn, *args)

    async def read(self, reader: ObjectReaderLike, offset: int, size: int) -> bytes:
        if not reader.may_block:
            if reader.compressed:
                return await self.run(reader.pread, offset, size)
            return reader.pread(offset, size)
        when = None if self.timeout is None else time.monotonic() + self.timeout
        try:
            if reader.compressed:
                return await self.run(_local, reader, offset, size)
            return _local(reader, offset, size)
        except WouldBlock:
            data: bytes = await self.network.run(_by, when, reader, offset, size)
            return data

    async def hash_check(self, check: Callable[[], None], size: int) -> None:
        if size <= INLINE_HASH:
            check()
        else:
            await self.run(check)

    def close(self) -> None:
        self.pool.close()
        self.network.close()
