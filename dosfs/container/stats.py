"""Counts and sizes of a container (disk-objectstore's count_objects and get_total_size)."""

from __future__ import annotations

import os

from dosfs.container import loose as _loose
from dosfs.container.meta import ObjectCount, TotalSize
from dosfs.container.packstore import list_pack_ids
from dosfs.container.parts import Parts


def count_objects(parts: Parts) -> ObjectCount:
    """Like disk-objectstore: loose counts loose files (also those already packed)."""
    layout = parts.layout
    return ObjectCount(
        packed=parts.index.count(),
        loose=sum(1 for _ in _loose.iter_loose(layout)),
        pack_files=len(list_pack_ids(layout)),
    )


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def total_size(parts: Parts) -> TotalSize:
    layout = parts.layout
    packed, packed_on_disk = parts.index.sizes()
    return TotalSize(
        total_size_packed=packed,
        total_size_packed_on_disk=packed_on_disk,
        total_size_packfiles_on_disk=sum(
            _size(layout.pack_path(p)) for p in list_pack_ids(layout)
        ),
        total_size_packindexes_on_disk=_size(layout.index),
        total_size_loose=sum(_size(layout.loose_path(h)) for h in _loose.iter_loose(layout)),
    )
