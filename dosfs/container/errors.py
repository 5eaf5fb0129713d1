"""The engine's exception tree. The engine knows no errno; the FUSE layer maps these in one table.

    DosfsError
    ├── NotInitialised          the folder is not (yet) a container
    ├── NotExistent             no object with that hash key (also a KeyError-like miss)
    │   └── InvalidHashKey      the key is not lowercase hex of the hash's exact length
    ├── ModificationNotAllowed  the operation is not allowed now (read-only, lock held, ...)
    │   └── LockedError         another process holds the maintenance or pack lock
    ├── ClosingNotAllowed       disk-objectstore's name; dosfs raises it nowhere (kept for imports)
    ├── InconsistentContent     bytes on disk do not match what the index or key promises
    │   └── CorruptObject       a specific object could not be read back correctly
    └── InvalidContainer        config.json or the index is malformed or unsupported
"""

from __future__ import annotations


class DosfsError(Exception):
    """Base of every error the engine raises on purpose."""


class NotInitialised(DosfsError):
    """The folder exists but holds no valid container (or does not exist at all)."""


class NotExistent(DosfsError):
    """The object is not in the container."""


class InvalidHashKey(NotExistent, ValueError):
    """A hash key that could never name an object; checked before any path is built."""


class ModificationNotAllowed(DosfsError):
    """The container refuses a change in its current state."""


class LockedError(ModificationNotAllowed):
    """Another process holds the lock this operation needs."""


class ClosingNotAllowed(DosfsError):
    """disk-objectstore raises it when a writer is closed by hand; dosfs has no such writer."""


class InconsistentContent(DosfsError):
    """Stored bytes disagree with their key or with the index."""


class CorruptObject(InconsistentContent):
    """Reading one object gave bytes that cannot be right; carries the hash key."""

    def __init__(self, hashkey: str, reason: str) -> None:
        super().__init__(f"object {hashkey} is corrupt: {reason}")
        self.hashkey = hashkey
        self.reason = reason


class InvalidContainer(DosfsError):
    """config.json or packs.idx is malformed or uses something this version cannot handle."""


__all__ = [
    "ClosingNotAllowed",
    "CorruptObject",
    "DosfsError",
    "InconsistentContent",
    "InvalidContainer",
    "InvalidHashKey",
    "LockedError",
    "ModificationNotAllowed",
    "NotExistent",
    "NotInitialised",
]
