"""Fetch what is read: a miss downloads about the bytes asked for, read-ahead is for sequential
readers only and never passes the object's end, and whatever the order, concurrency and cache
pressure, every byte served is the byte published (checked against the local packs)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dosfs.container import Container
from dosfs.remote.container import RemoteContainer
from dosfs.remote.push import push
from tests.fs.conftest import DOSFS, Mounted

MiB = 1024 * 1024


@pytest.fixture
def published(
    tmp_path: Path, bucket: str, aws_env: None
) -> Iterator[tuple[str, dict[str, bytes], str]]:
    """One pack: 400 objects of 1-64 KiB, then a 24 MiB object, then 8 MiB more objects."""
    rng = random.Random(7)
    objects: dict[str, bytes] = {}
    with Container(tmp_path / "c") as c:
        c.init_container()
        small = [rng.randbytes(rng.randint(1024, 64 * 1024)) for _ in range(400)]
        objects.update(zip(c.add_objects_to_pack(small), small, strict=True))
        big = rng.randbytes(24 * MiB)
        big_key = c.add_objects_to_pack([big])[0]
        objects[big_key] = big
        after = [rng.randbytes(MiB) for _ in range(8)]
        objects.update(zip(c.add_objects_to_pack(after), after, strict=True))
    target = f"s3://{bucket}/fetch"
    push(tmp_path / "c", target)
    yield target, objects, big_key


def test_random_small_reads_fetch_about_their_bytes(
    tmp_path: Path, published: tuple[str, dict[str, bytes], str]
) -> None:
    target, objects, big = published
    small = [h for h in objects if len(objects[h]) <= 64 * 1024]
    chosen = random.Random(1).sample(small, 100)
    with RemoteContainer(target, cache_dir=tmp_path / "cache") as rc:
        for h in chosen:
            assert rc.get_object_content(h) == objects[h]
        read = sum(len(objects[h]) for h in chosen)
        assert rc.packs.pool.bytes_fetched <= 1.5 * read, rc.packs.pool.bytes_fetched / read
        fetched = rc.packs.pool.bytes_fetched
        for h in chosen:  # a second pass comes from the cache
            assert rc.get_object_content(h) == objects[h]
        assert rc.packs.pool.bytes_fetched == fetched


def test_a_sequential_read_fetches_its_object_once_with_read_ahead(
    tmp_path: Path, published: tuple[str, dict[str, bytes], str]
) -> None:
    target, objects, big = published
    with RemoteContainer(target, cache_dir=tmp_path / "cache") as rc:
        with rc.get_object_stream(big) as stream:
            parts = []
            while chunk := stream.read(128 * 1024):
                parts.append(chunk)
        assert b"".join(parts) == objects[big]
        pool = rc.packs.pool
        assert len(objects[big]) <= pool.bytes_fetched <= 1.1 * len(objects[big])
        # 192 reads of 128 KiB, far fewer GETs: read-ahead grew with the run
        assert pool.requests <= 40, pool.requests


def test_through_the_mount_random_and_sequential_reads_fetch_what_they_read(
    tmp_path: Path, published: tuple[str, dict[str, bytes], str], mount: Callable[..., Mounted]
) -> None:
    target, objects, big = published
    small = [h for h in objects if len(objects[h]) <= 64 * 1024]
    chosen = random.Random(2).sample(small, 100)
    m = mount(target, f"cache_dir={tmp_path / 'cache'}", "refresh=0")

    def fetched() -> int:
        out = subprocess.run([*DOSFS, "stats", "--json", str(m.path)], check=True,
                             capture_output=True, text=True).stdout
        return int(json.loads(out)["remote"]["bytes_fetched"])

    for h in chosen:
        assert (m.by_hash / h).read_bytes() == objects[h]
    read = sum(len(objects[h]) for h in chosen)
    assert fetched() <= 1.5 * read, fetched() / read
    before = fetched()
    got = subprocess.run(["cat", str(m.by_hash / big)], check=True, capture_output=True).stdout
    assert got == objects[big]
    assert fetched() - before <= 1.1 * len(objects[big])


def test_every_byte_is_right_whatever_the_order_concurrency_and_eviction(
    tmp_path: Path, published: tuple[str, dict[str, bytes], str]
) -> None:
    """Random ranges, sequential runs and re-reads from 4 threads through a 2 MiB cache (read-
    ahead and misses evict each other all the time), compared with the local pack."""
    target, objects, big = published
    local = (tmp_path / "c" / "packs" / "0").read_bytes()
    errors: list[BaseException] = []
    with RemoteContainer(target, cache_dir=tmp_path / "cache", cache_size=2 * MiB) as rc:
        packs = rc.packs

        def work(seed: int) -> None:
            rng = random.Random(seed * 7919 + int(os.environ.get("DOSFS_TEST_SEED", "0")))
            source = packs.open(0)
            try:
                for _ in range(60):
                    if rng.random() < 0.3:  # a sequential run inside one "object"
                        start = rng.randrange(len(local) - 4 * MiB)
                        stop = start + rng.randint(MiB, 4 * MiB)
                        pos = start
                        while pos < stop:
                            n = min(rng.choice((4096, 65536, 131072, 1 << 20)), stop - pos)
                            assert source.read_at(pos, n, stop) == local[pos : pos + n]
                            pos += n
                    else:
                        off = rng.randrange(len(local))
                        n = rng.randint(1, 300_000)
                        stop = rng.choice((None, min(len(local), off + n + rng.randrange(MiB))))
                        assert source.read_at(off, n, stop) == local[off : off + n]
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert not errors, errors[0]
        assert rc.cache.used <= 2 * MiB
        held = sum(f.stat().st_size for f in (tmp_path / "cache").iterdir() if f.is_file())
        assert held <= 2 * MiB
    assert os.path.isdir(tmp_path / "cache")


def test_bulk_reads_coalesce_neighbours_and_a_second_pass_fetches_nothing(
    tmp_path: Path, published: tuple[str, dict[str, bytes], str]
) -> None:
    target, objects, big = published
    small = [h for h in objects if len(objects[h]) <= 64 * 1024]
    chosen = random.Random(3).sample(small, 300)
    with RemoteContainer(target, cache_dir=tmp_path / "cache") as rc:
        assert rc.get_objects_content(chosen) == {h: objects[h] for h in chosen}
        pool = rc.packs.pool
        assert pool.requests < 30, pool.requests  # neighbours share GETs: not 300
        fetched = pool.bytes_fetched
        with rc.get_objects_stream_and_meta(chosen + [big]) as triplets:
            for h, stream, _meta in triplets:
                assert stream.read() == objects[h]
        assert pool.bytes_fetched - fetched <= 1.1 * len(objects[big])  # only the big one
