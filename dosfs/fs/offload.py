"""What runs on the worker threads, and why, in one place.

One OS thread runs every handler (pyfuse3 + trio), so a blocking call stalls every request; but a
thread hop costs tens of microseconds, more than a cached `pread`. Measured rules:

* in the loop: an uncompressed `pread` (page cache), an index lookup, a staged `pwrite` with
  on-the-fly sha256, hashing up to INLINE_HASH bytes;
* on the pool: decompression, fsync, commit (hashing when writes were not sequential, rename,
  directory fsync), discarding a staged file, re-seeding a reopened file, listing pages (SQLite
  pages + shard listings; the next page is fetched while the kernel takes this one), hashing
  more than INLINE_HASH bytes, recovery at mount.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from dosfs.fs.engine import ObjectReaderLike
from dosfs.fs.workers import Pending, WorkerPool

T = TypeVar("T")

#: bytes hashed in the loop itself; more go to a worker (sha256 runs at ~1 GB/s here)
INLINE_HASH = 64 * 1024


class Offload:
    """The worker pool and the policy of what goes there."""

    def __init__(self, workers: int, thread_init: Callable[[], None] | None = None) -> None:
        self.pool = WorkerPool(workers, thread_init)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Slow or CPU-heavy work (see the module docstring)."""
        result: T = await self.pool.run(fn, *args)
        return result

    def submit(self, fn: Callable[..., Any], *args: Any) -> Pending:
        """Start `fn` in a worker now, await its result later."""
        return self.pool.submit(fn, *args)

    async def read(self, reader: ObjectReaderLike, offset: int, size: int) -> bytes:
        if reader.compressed:
            return await self.run(reader.pread, offset, size)
        return reader.pread(offset, size)

    async def hash_check(self, check: Callable[[], None], size: int) -> None:
        if size <= INLINE_HASH:
            check()
        else:
            await self.run(check)

    def close(self) -> None:
        self.pool.close()
