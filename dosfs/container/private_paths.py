"""disk-objectstore's private path helpers, as thin aliases on `Container`.

Not dosfs API: code written for disk-objectstore reaches for them (its own backup helper and
examples do), so they answer with the same types (paths, iterators of names) and meaning. The
layout is the same on disk, so each is one line over dosfs's `Layout`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from dosfs.container.config import REPACK_PACK_ID, is_valid_pack_name
from dosfs.container.parts import Parts


class DiskObjectstorePaths:
    """Mixed into Container; `parts` is the loaded container (config read on first use)."""

    @property
    def parts(self) -> Parts:  # pragma: no cover - provided by Container
        raise NotImplementedError

    def _get_loose_folder(self) -> Path:
        return Path(self.parts.layout.loose)

    def _get_duplicates_folder(self) -> Path:
        return Path(self.parts.layout.duplicates)

    def _get_pack_index_path(self) -> Path:
        return Path(self.parts.layout.index)

    def _get_loose_path_from_hashkey(self, hashkey: str) -> Path:
        """Where the loose copy of `hashkey` is (or would be); the key is not checked, as there."""
        return Path(self.parts.layout.loose_path(hashkey))

    def _get_pack_path_from_pack_id(
        self, pack_id: str | int, allow_repack_pack: bool = False
    ) -> Path:
        name = str(pack_id)
        if not (is_valid_pack_name(name) or (allow_repack_pack and name == str(REPACK_PACK_ID))):
            raise ValueError(f"invalid pack id {pack_id!r}")
        return Path(self.parts.layout.packs) / name

    def _get_pack_id_to_write_to(self) -> int:
        """The pack the next direct-to-pack write would append to."""
        return self.parts.chooser.choose()

    def _list_loose(self) -> Iterator[str]:
        """Every loose object's key (also those packed meanwhile), in directory order."""
        layout = self.parts.layout
        if not layout.prefix_len:
            for name in os.listdir(layout.loose):
                if layout.is_valid_hashkey(name):
                    yield name
            return
        for shard in os.listdir(layout.loose):
            if not layout.is_valid_prefix(shard):
                continue
            try:
                names = os.listdir(os.path.join(layout.loose, shard))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for rest in names:
                if layout.is_valid_rest(rest):
                    yield shard + rest

    def _list_packs(self) -> Iterator[str]:
        """The pack ids present in packs/, as names (strings), in directory order."""
        for name in os.listdir(self.parts.layout.packs):
            if is_valid_pack_name(name):
                yield name
