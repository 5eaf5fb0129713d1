"""How big each figure is: the issue's sizes for a full run, smaller ones for --quick, and a scale
factor on top so the smoke test can run everything on tiny data."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


@dataclass(frozen=True)
class Sizes:
    """Counts and byte sizes of every figure (see docs/benchmarks.md for what each one measures)."""

    small_objects: int = 100_000  # 0-1000 B packed objects: bulk reads, direct pack writes
    single_gets: int = 10_000  # get_object_content calls
    loose_objects: int = 10_000  # add_object calls, then pack_all_loose of them
    stream_bytes: int = 1 * GiB  # add_streamed_object + get_object_stream
    compressed_bytes: int = 64 * MiB  # object for random reads inside a compressed object
    compressed_reads: int = 20  # random 128 KiB reads per run
    random_read_size: int = 128 * KiB
    mount_big_bytes: int = 1 * GiB  # loose/packed objects read via the mount; cp in
    mount_compressed_bytes: int = 1 * GiB  # compressed object read through the mount
    mount_cat_files: int = 10_000  # small packed objects cat'ed through the mount, per run
    mount_stat_files: int = 10_000  # objects stat'ed through the mount, per run
    mount_ls_objects: int = 100_000  # objects in the mounted container (ls of by-hash)
    daemon_small_index: int = 10_000  # objects in the index, small container
    daemon_large_index: int = 1_000_000  # objects in the index, large container
    daemon_serve_files: int = 10_000  # lookups + cats per run when measuring the daemon
    meta_small_objects: int = 20_000  # 1 KiB packed objects: stat, open+read+close, ls -l
    meta_large_objects: int = 1_000_000  # ls -l and stat of all of them, daemon memory
    meta_per_run: int = 2_000  # names stat'ed or opened per run (fresh each run)

    def scaled(self, factor: float) -> Sizes:
        """Every count and size times `factor`, with floors that keep each figure meaningful."""
        if factor == 1.0:
            return self
        floors = {
            "compressed_reads": 3,
            "random_read_size": self.random_read_size,  # a figure of the issue: never scaled
            "stream_bytes": 1 * MiB,
            "compressed_bytes": 1 * MiB,
            "mount_big_bytes": 1 * MiB,
            "mount_compressed_bytes": 1 * MiB,
        }
        changes: dict[str, int] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "random_read_size":
                continue
            changes[f.name] = max(floors.get(f.name, 20), int(value * factor))
        scaled = dataclasses.replace(self, **changes)
        if scaled.meta_per_run * 9 > scaled.meta_small_objects:  # 3 figures x 3 runs
            per_run = max(1, scaled.meta_small_objects // 9)
            scaled = dataclasses.replace(scaled, meta_per_run=per_run)
        if scaled.daemon_large_index <= scaled.daemon_small_index:
            scaled = dataclasses.replace(scaled, daemon_large_index=scaled.daemon_small_index * 10)
        return scaled


FULL = Sizes()
QUICK = Sizes(
    small_objects=10_000,
    single_gets=2_000,
    loose_objects=1_000,
    stream_bytes=128 * MiB,
    compressed_bytes=16 * MiB,
    compressed_reads=10,
    mount_big_bytes=128 * MiB,
    mount_compressed_bytes=64 * MiB,
    mount_cat_files=2_000,
    mount_stat_files=2_000,
    mount_ls_objects=10_000,
    daemon_small_index=10_000,
    daemon_large_index=100_000,
    daemon_serve_files=2_000,
    meta_small_objects=20_000,
    meta_large_objects=100_000,
    meta_per_run=1_000,
)
