"""The engine contract: what the FUSE adapter relies on, as structural types.

Why a Protocol and not ``dosfs.Container`` itself: the adapter is tested against a fake engine
(exact failures on demand), the s3 mount serves a remote engine (dosfs.remote.engine), and this
file is the written-down contract all of them satisfy; mypy checks ``Container`` against
``EngineLike`` where the mount opens one (mount.open_container) and the fake engine in its tests.
It sits below the engines and the adapter (it imports only the engine's result types), so the
remote tier needs nothing of dosfs.fs.
Results are the engine's own types (``ObjectMeta``), never dicts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from dosfs.container.blocksums import BlockSums
from dosfs.container.meta import ObjectMeta


class ObjectReaderLike(Protocol):
    """An open object whose bytes were pinned at open time (survives packing)."""

    @property
    def hashkey(self) -> str: ...

    @property
    def size(self) -> int: ...

    @property
    def compressed(self) -> bool: ...

    @property
    def meta(self) -> ObjectMeta: ...

    @property
    def may_block(self) -> bool:
        """Whether pread may wait on the network (a remote pack): then it never runs in the
        loop except inside dosfs.container.packstore.local_only() (fs/offload.py)."""
        ...

    def pread(self, offset: int, size: int) -> bytes: ...

    def close(self) -> None: ...

    def where(self) -> str:
        """Where the bytes live (for the ERROR line about a corrupt object)."""
        ...

    def clone(self) -> ObjectReaderLike:
        """Another reader of the same pinned bytes (the verifier reads with it)."""
        ...

    def sequential(self) -> None:
        """Only front-to-back reads will follow (no random-access state needed)."""
        ...


class VerifierLike(Protocol):
    """Hashing of one object in a thread of its own (dosfs.container.verify)."""

    @property
    def ok(self) -> bool | None: ...

    @property
    def reason(self) -> str: ...

    @property
    def unreadable(self) -> bool:
        """No verdict: the bytes could not be read (a server that did not answer in time);
        the object is not known to be corrupt."""
        ...

    def feed(self, offset: int, data: bytes) -> None: ...

    def finish(self) -> None: ...

    def cancel(self) -> None: ...


class StagedObjectLike(Protocol):
    """A writable staging file that becomes a loose object on commit()."""

    @property
    def size(self) -> int: ...

    @property
    def path(self) -> str: ...

    def pwrite(self, data: bytes, offset: int, hash: bool = True) -> int: ...

    def hash_update(self, data: bytes, offset: int) -> None: ...

    def pread(self, offset: int, size: int) -> bytes: ...

    def truncate(self, size: int) -> None: ...

    def fsync(self) -> None: ...

    def mark_complete(self) -> None: ...

    def commit(self) -> str: ...

    def discard(self) -> None: ...


class EngineLike(Protocol):
    """What ``dosfs.Container`` offers to the mount."""

    @property
    def hash_length(self) -> int: ...

    @property
    def hash_type(self) -> str: ...

    @property
    def folder(self) -> Path: ...

    @property
    def index_may_block(self) -> bool:
        """Whether a lookup may wait on a server (an index read on demand): the mount then
        asks inside packstore.local_only() on its loop and moves to a network worker when the
        answer is not local (fs/byhash.py)."""
        ...

    def is_valid_hashkey(self, name: str) -> bool: ...

    def get_object_meta(self, hashkey: str) -> ObjectMeta: ...

    def open_object(self, hashkey: str) -> ObjectReaderLike: ...

    def new_staged_object(self) -> StagedObjectLike: ...

    def iter_hashkeys(self, after: str | None = None) -> Iterator[str]: ...

    def entry(self, hashkey: str) -> tuple[int | None, int]:
        """(index row id or None for a loose object, size); NotExistent when absent."""
        ...

    def entry_recent(self, hashkey: str) -> tuple[int | None, int]:
        """entry() whose hits may come from a read snapshot up to 50 ms old; misses are asked
        fresh. release_snapshot() (same thread) ends the snapshot."""
        ...

    def release_snapshot(self) -> None: ...

    def resolve_prefix(self, prefix: str) -> str | None:
        """The one key starting with `prefix` (>= 8 hex digits), or None."""
        ...

    def entry_by_id(self, rowid: int) -> tuple[str, int] | None:
        """(hashkey, size) of the packed object with this row id, or None."""
        ...

    def open_object_by_id(self, rowid: int) -> ObjectReaderLike: ...

    def iter_entries(self, after: str | None = None) -> Iterator[tuple[str, int, int | None]]:
        """(hashkey, size, row id or None) of every object, ascending, after `after`."""
        ...

    def verifier(
        self,
        reader: ObjectReaderLike,
        *,
        eager: bool,
        on_done: Callable[[VerifierLike], None] | None = None,
    ) -> VerifierLike: ...

    def check_hash(self, hashkey: str, data: bytes, where: str) -> None:
        """CorruptObject unless `data` hashes to `hashkey`."""
        ...

    def block_sums(self, hashkey: str, size: int) -> BlockSums | None:
        """Recorded checksums of the object's blocks (dosfs.container.blocksums), or None:
        with them each read is checked where it reads, with no whole hash."""
        ...

    def recover_staged(self) -> list[str]:
        """Commit staging files a dead writer declared complete; their keys."""
        ...

    def checkpoint(self) -> None: ...


class ServedEngine(EngineLike, Protocol):
    """The daemon's half of the contract: what it asks of the engine it mounts beyond the
    adapter's calls (a local Container and the s3 mount's RemoteEngine alike)."""

    @property
    def container_id(self) -> str:
        """The container's id (config.json), checked against an AiiDA profile's (--aiida-db)."""
        ...

    @property
    def refreshable(self) -> bool:
        """Whether refresh() can ever switch to newer content (a published container)."""
        ...

    def refresh(self) -> bool:
        """Switch to newer content if there is some; True when it switched."""
        ...

    def remote_stats(self) -> dict[str, object] | None:
        """A section for the mount's live statistics, or None."""
        ...

    def keep_index_open(self) -> None: ...

    def close(self) -> None: ...

