"""The s3 mount's block cache on disk: blocks come back byte for byte, of any length, whether the
folder's filesystem takes O_DIRECT (ext4, xfs) or not (tmpfs: buffered writes), a later run
adopts what an earlier one left, and the bound holds."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from dosfs.remote.cache import BLOCK, BlockCache


@pytest.mark.parametrize("where", ["disk", "tmpfs"])
def test_blocks_round_trip_and_stay_bounded(tmp_path: Path, where: str) -> None:
    if where == "tmpfs":
        if not os.path.isdir("/dev/shm"):
            pytest.skip("no /dev/shm here")
        base = Path(tempfile.mkdtemp(dir="/dev/shm"))
    else:
        base = tmp_path
    folder = base / "cache"
    try:
        cache = BlockCache(2 * BLOCK, folder)
        blocks = {("seg/a", 0): os.urandom(BLOCK), ("seg/a", 1): os.urandom(BLOCK - 12_345),
                  ("seg/b", 7): os.urandom(16_384), ("seg/c", 0): b"x"}
        for (key, n), data in blocks.items():
            cache.put(key, n, data)
        assert cache.used <= 2 * BLOCK
        kept = {k: v for k, v in blocks.items() if cache.get(*k) is not None}
        assert ("seg/a", 0) not in kept  # the least recently used went first
        for (key, n), data in kept.items():
            assert cache.get(key, n) == data
            assert cache.read(key, n, 1, 100) == data[1:100]
        sizes = sorted(f.stat().st_size for f in folder.iterdir())
        assert sizes == sorted(len(v) for v in kept.values())  # exact: padding cut off
        again = BlockCache(2 * BLOCK, folder)  # a new mount adopts the blocks
        for (key, n), data in kept.items():
            assert again.get(key, n) == data
    finally:
        if where == "tmpfs":
            import shutil

            shutil.rmtree(base, ignore_errors=True)
