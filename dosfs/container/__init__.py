"""The dosfs engine: a synchronous, thread-safe, disk-objectstore 1.x compatible object store.

Imports neither trio nor pyfuse3. Split by noun: config (layout, hash keys), index (packs.idx),
packstore (where pack bytes come from), resolve (the read protocol), readers (object readers and
streams), bulk (bulk reads, listing), loose (staged writes), packs (appending to packs), packing
(pack writes), maintenance (clean, delete), repack, validate, stats, locks, parts (what the
operations work on) and container (the facade).
"""

from __future__ import annotations

from dosfs.container.container import Container
from dosfs.container.errors import (
    ClosingNotAllowed,
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
    CleanReport,
    CompressMode,
    ObjectCount,
    ObjectMeta,
    ObjectType,
    TotalSize,
    ValidationIssues,
    ValidationReport,
)
from dosfs.container.readers import ObjectReader, ObjectStream

__all__ = [
    "CleanReport",
    "ClosingNotAllowed",
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
    "ValidationIssues",
    "ValidationReport",
]
