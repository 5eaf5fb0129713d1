"""The s3 mount's extent cache on disk: extents come back byte for byte, of any length, whether
the folder's filesystem takes O_DIRECT (ext4, xfs) or not (tmpfs: buffered writes), overlapping
puts are refused, a later run adopts what an earlier one left (and drops torn, overlapping or
old-format files), and the bound holds."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from dosfs.remote.cache import PIECE, ExtentCache


@pytest.mark.parametrize("where", ["disk", "tmpfs"])
def test_extents_round_trip_and_stay_bounded(tmp_path: Path, where: str) -> None:
    if where == "tmpfs":
        if not os.path.isdir("/dev/shm"):
            pytest.skip("no /dev/shm here")
        base = Path(tempfile.mkdtemp(dir="/dev/shm"))
    else:
        base = tmp_path
    folder = base / "cache"
    try:
        cache = ExtentCache(2 * PIECE, folder)
        extents = {("seg/a", 0): os.urandom(PIECE), ("seg/a", PIECE): os.urandom(PIECE - 12_345),
                   ("seg/b", 7 * PIECE + 5): os.urandom(16_384), ("seg/c", 3): b"x"}
        for (key, start), data in extents.items():
            assert cache.put(key, start, data)
        assert cache.used <= 2 * PIECE
        kept = {k: v for k, v in extents.items() if cache.covered(k[0], k[1], k[1] + len(v))}
        assert ("seg/a", 0) not in kept  # the least recently used went first
        for (key, start), data in kept.items():
            assert cache.read(key, start, start, start + len(data)) == data
            end = start + min(100, len(data))
            assert cache.read(key, start, start + 1, end) == data[1 : end - start]
            assert cache.holds(key, start, start + len(data))
            assert not cache.holds(key, start, start + len(data) + 1)
            assert not cache.put(key, start + len(data) - 1, b"zz")  # overlaps: refused
        assert cache.read("seg/a", 0, 0, 10) is None
        sizes = sorted(f.stat().st_size for f in folder.iterdir())
        assert sizes == sorted(len(v) for v in kept.values())  # exact: padding cut off
        (folder / f"{ExtentCache.name('seg/b')}-7").write_bytes(b"old 2 MiB block format")
        (folder / f"{ExtentCache.name('seg/b')}-{7 * PIECE}-{7 * PIECE + 10}").write_bytes(
            b"overlaps the one already there")
        (folder / f"{ExtentCache.name('seg/d')}-0-100").write_bytes(b"torn")
        again = ExtentCache(2 * PIECE, folder)  # a new mount adopts the extents
        for (key, start), data in kept.items():
            assert again.read(key, start, start, start + len(data)) == data
        assert sorted(f.stat().st_size for f in folder.iterdir()) == sizes  # the rest dropped
    finally:
        if where == "tmpfs":
            import shutil

            shutil.rmtree(base, ignore_errors=True)


def test_in_memory_extents_and_covered_ranges() -> None:
    cache = ExtentCache(4 * PIECE)
    data = os.urandom(300_000)
    assert cache.put("k", 100_000, data[100_000:200_000])
    assert cache.put("k", 250_000, data[250_000:300_000])
    assert cache.covered("k", 0, 120_000) == [(100_000, 200_000)]
    assert cache.covered("k", 150_000, 260_000) == [(100_000, 200_000), (250_000, 300_000)]
    assert cache.covered("k", 200_000, 250_000) == []
    assert cache.read("k", 250_000, 260_000, 270_000) == data[260_000:270_000]
    assert cache.read("k", 250_000, 240_000, 270_000) is None  # not all inside the extent
