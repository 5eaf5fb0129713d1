"""What a server of many names (the mount) needs from a container, beyond disk-objectstore's
API: one index round trip per lookup, open by index row, listings with sizes, short hashes,
verification off the serving thread, recovery and index upkeep. A part of the Container facade
(it composes; the work is in resolve.py, bulk.py, verify.py, loose.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from dosfs.container import bulk, loose
from dosfs.container.blocksums import MIN_SIZE as SUMS_MIN_SIZE
from dosfs.container.blocksums import BlockSums
from dosfs.container.decoding import check_hash
from dosfs.container.parts import Parts
from dosfs.container.readers import ObjectReader
from dosfs.container.verify import ObjectVerifier, ProcessVerifier, Readable, verifier_for


class ServerAPI:
    """Mixed into Container (which provides `parts`, `_parts`, `_load`, `hash_type`)."""

    _parts: Parts | None

    def _load(self) -> Parts:  # pragma: no cover - Container defines it
        raise NotImplementedError

    @property
    def parts(self) -> Parts:  # pragma: no cover - Container defines it
        raise NotImplementedError

    @property
    def hash_type(self) -> str:  # pragma: no cover - Container defines it
        raise NotImplementedError

    def entry(self, hashkey: str) -> tuple[int | None, int]:
        """(index row id, or None when the object is loose; size); NotExistent when absent."""
        parts = self._parts or self._load()
        parts.layout.check_hashkey(hashkey)
        return parts.resolver.entry(hashkey)

    def entry_recent(self, hashkey: str) -> tuple[int | None, int]:
        """entry() whose hits may come from a read snapshot up to 50 ms old (misses are always
        asked fresh): about half the cost. The caller must call release_snapshot() when idle,
        in the same thread."""
        parts = self._parts or self._load()
        parts.layout.check_hashkey(hashkey)
        return parts.resolver.entry_recent(hashkey)

    def release_snapshot(self) -> None:
        """End the read snapshot entry_recent() holds in this thread (if any)."""
        if self._parts is not None:
            self._parts.index.release_snapshot()

    def entry_by_id(self, rowid: int) -> tuple[str, int] | None:
        """(hashkey, size) of the packed object with this index row id, or None."""
        return bulk.entry_by_id((self._parts or self._load()).index, rowid)

    def open_object_by_id(self, rowid: int) -> ObjectReader:
        """open_object() of the packed object with this index row id (NotExistent if none)."""
        return (self._parts or self._load()).resolver.reader_by_id(rowid)

    def iter_entries(self, after: str | None = None) -> Iterator[tuple[str, int, int | None]]:
        """(hashkey, size, row id or None) of every object once, ascending, after `after`."""
        parts = self.parts
        return bulk.iter_entries(parts.layout, parts.index, after)

    def resolve_prefix(self, prefix: str) -> str | None:
        """The one key that starts with `prefix` (at least 8 lowercase hex digits), or None
        when none or several do (git's short hashes)."""
        parts = self._parts or self._load()
        return bulk.resolve_prefix(parts.layout, parts.index, prefix)

    def keys_with_prefix(self, prefix: str) -> list[str]:
        """Keys that start with `prefix` (as resolve_prefix; two or more: ambiguous)."""
        parts = self._parts or self._load()
        return bulk.keys_with_prefix(parts.layout, parts.index, prefix)

    def check_index(self) -> None:
        """InvalidContainer unless packs.idx reads back whole (see Index.check)."""
        self.parts.index.check()

    def keep_index_open(self) -> None:
        """Hold an index connection until close(): reads keep working on a full disk."""
        self.parts.index.keepalive()

    #: a local container is read live: there is nothing to switch to (dosfs.engine)
    refreshable = False
    #: its index is a local file: a lookup never waits on a server (dosfs.engine)
    index_may_block = False

    def refresh(self) -> bool:
        return False

    def remote_stats(self) -> dict[str, object] | None:
        return None

    def checkpoint(self) -> None:
        """Copy committed index changes from packs.idx-wal into packs.idx (never waits)."""
        self.parts.index.checkpoint()

    def verifier(
        self,
        reader: Readable,
        *,
        eager: bool,
        on_done: Callable[[Any], None] | None = None,
    ) -> ObjectVerifier | ProcessVerifier:
        """Hash `reader`'s object off the calling thread (see verify.py); a whole hash of a
        local object also records its block sums."""
        sums = self.parts.blocksums
        return verifier_for(reader, self.hash_type, eager=eager, on_done=on_done,
                            sums_folder=None if sums is None else str(self.parts.layout.folder))

    def block_sums(self, hashkey: str, size: int) -> BlockSums | None:
        """The recorded block checksums of a big local object (blocksums.py), or None: reads
        are then checked block by block instead of hashing the whole object."""
        sums = self.parts.blocksums
        if sums is None or size <= SUMS_MIN_SIZE:
            return None
        return sums.lookup(hashkey, size)

    def check_hash(self, hashkey: str, data: bytes, where: str) -> None:
        """CorruptObject unless `data` hashes to `hashkey`."""
        check_hash(hashkey, self.hash_type, data, where)

    def recover_staged(self) -> list[str]:
        """Commit staging files a dead writer declared complete; their keys."""
        return loose.recover_complete(self.parts.layout)
