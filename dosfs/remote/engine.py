"""The engine behind `dosfs mount s3://…`: the mount's engine contract (dosfs.engine) over
the newest published generation, read-only.

Why generations are swapped whole: a reader must see one generation, never a mix, so each new
generation (found by `refresh()`, every `-o refresh=SECONDS`) is opened beside the current one
(its index fetched) and then replaces it in one assignment. Files already open keep reading the
generation they opened: their readers hold that generation's pack segments, which the bucket
never overwrites and prunes only after a grace period. A retired generation's index is closed
RETIRE_AFTER seconds later (calls in flight on it finish first). The extent cache and the pool of
fetchers are shared, so a new generation starts warm for every segment it keeps.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from dosfs.container.blocksums import BlockSums
from dosfs.container.errors import ModificationNotAllowed
from dosfs.container.meta import ObjectMeta
from dosfs.engine import ObjectReaderLike, StagedObjectLike, VerifierLike
from dosfs.remote.cache import ExtentCache
from dosfs.remote.fetch import FetchPool
from dosfs.remote.generation import OpenGeneration
from dosfs.remote.layout import Generation, read_head
from dosfs.remote.url import RemoteError, make_store, parse_url

log = logging.getLogger("dosfs.remote")

#: seconds a replaced generation's index stays open for calls already running on it
RETIRE_AFTER = 60.0


def default_cache_dir(target: str) -> Path:
    """Where a mount of `target` keeps its blocks unless told (-o cache_dir): one folder per
    URL under $XDG_CACHE_HOME/dosfs (~/.cache/dosfs), kept across mounts."""
    url = parse_url(target)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dosfs"
    tag = hashlib.sha256(str(url).encode()).hexdigest()[:12]
    return base / f"{url.bucket}-{tag}"


class RemoteEngine:
    """Read-only engine for `s3://bucket/prefix`; see the module docstring."""

    def __init__(
        self,
        target: str,
        *,
        cache_dir: Path | None,
        cache_size: int,
        timeout: float = 30.0,
        index_cache_kib: int | None = None,
    ) -> None:
        self.url = parse_url(target)
        self.timeout = timeout
        self.store = make_store(self.url, timeout=timeout)
        self._index_cache_kib = index_cache_kib
        generation = read_head(self.store, self.url)
        if generation is None:
            raise RemoteError(f"{self.url}: nothing published there (run 'dosfs push' first)")
        self.cache = ExtentCache(cache_size, cache_dir)
        self.pool = FetchPool(self.store, self.url, self.cache)
        self._current = self._open(generation)
        self._retired: list[tuple[float, OpenGeneration]] = []
        self._lock = threading.Lock()
        self._refreshing = threading.Lock()
        self._closed = False
        self._keep_open = False
        self._failing = False

    def _open(self, generation: Generation) -> OpenGeneration:
        return OpenGeneration(self.store, self.url, generation, self.cache, timeout=self.timeout,
                              pool=self.pool, index_cache_kib=self._index_cache_kib)

    @property
    def generation(self) -> int:
        return self._current.number

    #: new generations are published: refresh() looks for them (dosfs.engine)
    refreshable = True
    #: a generation's index tables are read on demand (remote/tableindex.py)
    index_may_block = True

    def refresh(self) -> bool:
        """Switch to a newer published generation if there is one; True when it switched.
        A server that cannot be reached leaves the current generation served (logged once).
        The server is asked without the lock held: a frozen server (up to the timeout) never
        holds up checkpoint() or close(); refreshes themselves run one at a time."""
        with self._refreshing:
            with self._lock:
                self._close_retired()
                current = self._current.number
            try:
                head = read_head(self.store, self.url, newer_than=current)
                fresh = None if head is None else self._open(head)
            except (RemoteError, OSError) as exc:
                if not self._failing:
                    log.warning("refresh of %s failed, still serving generation %d: %s",
                                self.url, current, exc)
                self._failing = True
                return False
            self._recovered()
            if fresh is None:
                return False
            with self._lock:
                if self._closed:  # closed while we asked the server
                    fresh.close()
                    return False
                if self._keep_open:
                    fresh.container.keep_index_open()
                old, self._current = self._current, fresh
                self._retired.append((time.monotonic(), old))
        log.info("now serving generation %d of %s (was %d)", fresh.number, self.url, old.number)
        return True

    def _recovered(self) -> None:
        if self._failing:
            log.info("%s answers again", self.url)
        self._failing = False

    def _close_retired(self, force: bool = False) -> None:
        now = time.monotonic()
        keep = []
        for when, gen in self._retired:
            if force or now - when >= RETIRE_AFTER:
                try:
                    gen.close()
                except Exception as exc:  # noqa: BLE001 - only a temp folder is at stake
                    log.debug("closing generation %d: %s", gen.number, exc)
            else:
                keep.append((when, gen))
        self._retired = keep

    def remote_stats(self) -> dict[str, object]:
        """The s3 mount's own counters, for the mount's live statistics (`dosfs stats`)."""
        return {
            "url": str(self.url),
            "generation": self._current.number,
            "requests": self.pool.requests,
            "bytes_fetched": self.pool.bytes_fetched,
            "cache_hits": self.cache.hits,
            "cache_misses": self.cache.misses,
            "cache_bytes": self.cache.used,
            "cache_capacity": self.cache.capacity,
            "refresh_failing": self._failing,
        }

    # ------------------------------------------------------------------ the engine contract
    @property
    def hash_length(self) -> int:
        return self._current.container.hash_length

    @property
    def container_id(self) -> str:
        return str(self._current.container.container_id)

    @property
    def hash_type(self) -> str:
        return self._current.container.hash_type

    @property
    def folder(self) -> Path:
        return self._current.container.folder

    def is_valid_hashkey(self, name: str) -> bool:
        return self._current.container.is_valid_hashkey(name)

    def get_object_meta(self, hashkey: str) -> ObjectMeta:
        return self._current.container.get_object_meta(hashkey)

    def open_object(self, hashkey: str) -> ObjectReaderLike:
        return self._current.container.open_object(hashkey)

    def new_staged_object(self) -> StagedObjectLike:
        raise ModificationNotAllowed(f"{self.url} is mounted read-only")

    def iter_hashkeys(self, after: str | None = None) -> Iterator[str]:
        return self._current.container.iter_hashkeys(after)

    def entry(self, hashkey: str) -> tuple[int | None, int]:
        return self._current.container.entry(hashkey)

    def entry_recent(self, hashkey: str) -> tuple[int | None, int]:
        return self._current.container.entry_recent(hashkey)

    def release_snapshot(self) -> None:
        self._current.container.release_snapshot()

    def resolve_prefix(self, prefix: str) -> str | None:
        return self._current.container.resolve_prefix(prefix)

    def entry_by_id(self, rowid: int) -> tuple[str, int] | None:
        return self._current.container.entry_by_id(rowid)

    def open_object_by_id(self, rowid: int) -> ObjectReaderLike:
        return self._current.container.open_object_by_id(rowid)

    def iter_entries(self, after: str | None = None) -> Iterator[tuple[str, int, int | None]]:
        return self._current.container.iter_entries(after)

    def verifier(
        self,
        reader: ObjectReaderLike,
        *,
        eager: bool,
        on_done: Callable[[VerifierLike], None] | None = None,
    ) -> VerifierLike:
        return self._current.container.verifier(reader, eager=eager, on_done=on_done)

    def check_hash(self, hashkey: str, data: bytes, where: str) -> None:
        self._current.container.check_hash(hashkey, data, where)

    def block_sums(self, hashkey: str, size: int) -> BlockSums | None:
        return None  # not published: remote objects are hashed whole (verify.py)

    def recover_staged(self) -> list[str]:
        return []  # nothing is ever staged here

    def checkpoint(self) -> None:
        """The index is a private read-only copy: nothing to checkpoint; closes retired
        generations whose grace is over (the daemon calls this every few seconds)."""
        with self._lock:
            self._close_retired()

    def keep_index_open(self) -> None:
        self._keep_open = True
        self._current.container.keep_index_open()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._close_retired(force=True)
            self._current.close()
        self.pool.close()
