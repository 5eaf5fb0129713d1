"""The dosfs engine: a synchronous, thread-safe, disk-objectstore 1.x compatible object store.

Imports neither trio nor pyfuse3. Split by noun: config (layout, hash keys), index (packs.idx),
loose (staged writes), packs (pack files), streams (readers), bulk (bulk reads, listing),
packing (pack writes), maintenance (clean, repack, delete, validate), locks, container (facade).
"""

from __future__ import annotations

from dosfs.container.container import Container
from dosfs.container.errors import (
    CorruptObject,
    DosfsError,
    InconsistentContent,
    InvalidContainer,
    InvalidHashKey,
    LockedError,
    ModificationNotAllowed,
    NotExistent,
    NotInitialised,
)
from dosfs.container.loose import StagedObject
from dosfs.container.meta import (
    CompressMode,
    ObjectCount,
    ObjectMeta,
    ObjectType,
    TotalSize,
    ValidationReport,
)
from dosfs.container.streams import ObjectReader, ObjectStream

__all__ = [
    "CompressMode",
    "Container",
    "CorruptObject",
    "DosfsError",
    "InconsistentContent",
    "InvalidContainer",
    "InvalidHashKey",
    "LockedError",
    "ModificationNotAllowed",
    "NotExistent",
    "NotInitialised",
    "ObjectCount",
    "ObjectMeta",
    "ObjectReader",
    "ObjectStream",
    "ObjectType",
    "StagedObject",
    "TotalSize",
    "ValidationReport",
]
