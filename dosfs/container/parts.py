"""The parts of one open container, built together: what every operation module works on.

Why one object: packing, maintenance, repack, validate, bulk and backup each need some of the
layout, the index, the pack cache (over a pack store), the read protocol and the container lock.
They take `Parts` instead of the `Container` facade, so no helper imports the facade (no import
cycle) and the facade only composes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dosfs.container.blocksums import BlockSumIndex
from dosfs.container.config import Layout, read_config
from dosfs.container.index import Index
from dosfs.container.index_contract import IndexAPI
from dosfs.container.locks import ContainerLock
from dosfs.container.packs import PackChooser
from dosfs.container.packstore import LocalPackStore, PackCache, PackStore
from dosfs.container.resolve import Resolver
from dosfs.container.restarts import RestartIndex


@dataclass(frozen=True, eq=False, slots=True)
class Parts:
    layout: Layout
    index: IndexAPI
    packs: PackCache
    resolver: Resolver
    lock: ContainerLock
    chooser: PackChooser
    restarts: RestartIndex
    #: block checksums (blocksums.py); None when the pack bytes are not local files
    blocksums: BlockSumIndex | None

    @property
    def hash_type(self) -> str:
        return self.layout.config.hash_type

    def close(self) -> None:
        """Close SQLite connections and forget cached pack sources (all threads)."""
        self.index.close()
        self.packs.clear()
        self.restarts.close()
        if self.blocksums is not None:
            self.blocksums.close()


def open_parts(
    folder: Path,
    index_cache_kib: int = 8192,
    store: PackStore | None = None,
    index: IndexAPI | None = None,
    index_mmap_kib: int = 0,
) -> Parts:
    """Read config.json (NotInitialised unless `folder` is a container) and build the parts;
    `store` replaces the local pack files as the source of pack bytes, `index` packs.idx."""
    layout = Layout(folder, read_config(folder))
    if index is None:
        index = Index(layout.index, index_cache_kib, index_mmap_kib)
    packs = PackCache(store if store is not None else LocalPackStore(layout))
    restarts = RestartIndex(str(folder))
    return Parts(
        layout=layout,
        index=index,
        packs=packs,
        resolver=Resolver(layout, index, packs, restarts),
        lock=ContainerLock(layout.pack_lock),
        chooser=PackChooser(layout),
        restarts=restarts,
        blocksums=BlockSumIndex(str(folder)) if store is None else None,
    )
