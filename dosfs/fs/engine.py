"""The slice of the engine contract the FUSE adapter relies on, as structural types.

Why a Protocol and not ``dosfs.Container`` itself: the adapter is tested against a fake engine
(exact failures on demand), and this file is the written-down contract both must satisfy.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol


class ObjectReaderLike(Protocol):
    """An open object whose bytes were pinned at open time (survives packing)."""

    size: int
    compressed: bool

    def pread(self, offset: int, size: int) -> bytes: ...

    def close(self) -> None: ...


class StagedObjectLike(Protocol):
    """A writable staging file that becomes a loose object on commit()."""

    @property
    def size(self) -> int: ...

    def pwrite(self, data: bytes, offset: int) -> int: ...

    def pread(self, offset: int, size: int) -> bytes: ...

    def truncate(self, size: int) -> None: ...

    def fsync(self) -> None: ...

    def commit(self) -> str: ...

    def discard(self) -> None: ...


class EngineLike(Protocol):
    """What ``dosfs.Container`` offers to the mount (see notes/common.md, the engine contract)."""

    @property
    def hash_length(self) -> int: ...

    @property
    def folder(self) -> Path: ...

    def is_valid_hashkey(self, name: str) -> bool: ...

    def get_object_meta(self, hashkey: str) -> Mapping[str, Any]: ...

    def open_object(self, hashkey: str) -> ObjectReaderLike: ...

    def new_staged_object(self) -> StagedObjectLike: ...

    def iter_hashkeys(self, after: str | None = None) -> Iterator[str]: ...


_MISSING = object()


def meta_get(meta: Any, key: str, default: Any = None) -> Any:
    """Read one field of an ObjectMeta whether it is an object with attributes (fast: the
    engine's) or a mapping (disk-objectstore style)."""
    value = getattr(meta, key, _MISSING)
    if value is not _MISSING:
        return value
    try:
        return meta[key]
    except (KeyError, TypeError, IndexError):
        return default
