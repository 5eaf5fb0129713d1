"""Block checksums (dosfs/container/blocksums.py): taken by every dosfs writer and whole-object
verification, keyed by content, so they survive packing by either tool; wrong or stale sums
never make a good object unreadable, and clean_storage forgets those of deleted objects."""

from __future__ import annotations

import io
import os
import sqlite3
from pathlib import Path

import pytest
import xxhash
from disk_objectstore import Container as DosContainer
from hypothesis import given, settings
from hypothesis import strategies as st

from dosfs import Container
from dosfs.container.blocksums import (
    BLOCK,
    FILE_NAME,
    MIN_SIZE,
    BlockMismatch,
    BlockSumIndex,
    BlockSummer,
)
from dosfs.container.verify import verifier_for


def naive_sums(data: bytes) -> bytes:
    return b"".join(xxhash.xxh3_64_digest(data[i : i + BLOCK]) for i in range(0, len(data), BLOCK))


@settings(max_examples=60, deadline=None)
@given(size=st.integers(0, 5 * BLOCK + 7), cuts=st.lists(st.integers(1, 3 * BLOCK), max_size=12))
def test_summer_is_independent_of_how_the_bytes_arrive(size: int, cuts: list[int]) -> None:
    data = bytes(range(256)) * (size // 256 + 1)
    data = data[:size]
    summer = BlockSummer()
    pos = 0
    for cut in cuts:
        summer.update(data[pos : pos + cut])
        pos += cut
    summer.update(data[pos:])
    assert summer.size == size
    assert summer.sums() == naive_sums(data)


def test_add_object_records_sums_of_big_objects_only(tmp_path: Path) -> None:
    c = Container(tmp_path / "c")
    c.init_container()
    big = os.urandom(3 * BLOCK + MIN_SIZE)
    small = os.urandom(MIN_SIZE)
    kb, ks = c.add_object(big), c.add_object(small)
    index = BlockSumIndex(str(tmp_path / "c"))
    sums = index.lookup(kb, len(big))
    assert sums is not None and sums.sums == naive_sums(big)
    assert index.lookup(ks, len(small)) is None
    assert index.lookup(kb, len(big) + 1) is None  # a size that is not the object's
    streamed = os.urandom(2 * MIN_SIZE + 5)  # a streamed write too
    ks2 = c.add_streamed_object(io.BytesIO(streamed))
    got = index.lookup(ks2, len(streamed))
    assert got is not None and got.sums == naive_sums(streamed)
    c.close()


def test_sums_check_blocks_and_refuse_a_flipped_byte(tmp_path: Path) -> None:
    c = Container(tmp_path / "c")
    c.init_container()
    data = os.urandom(9 * BLOCK + 1000)
    key = c.add_object(data)
    sums = BlockSumIndex(str(tmp_path / "c")).lookup(key, len(data))
    assert sums is not None
    assert sums.span(BLOCK + 5, 10) == (BLOCK, 2 * BLOCK)
    assert sums.span(9 * BLOCK + 10, BLOCK) == (9 * BLOCK, len(data))  # clipped at the end
    sums.check(BLOCK, data[BLOCK : 3 * BLOCK], "here")
    sums.check(9 * BLOCK, data[9 * BLOCK :], "here")
    bad = bytearray(data[BLOCK : 3 * BLOCK])
    bad[BLOCK + 17] ^= 1
    with pytest.raises(BlockMismatch, match=f"offset {2 * BLOCK}"):
        sums.check(BLOCK, bytes(bad), "here")
    with pytest.raises(BlockMismatch, match="unaligned"):
        sums.check(BLOCK + 1, data[BLOCK + 1 : 2 * BLOCK], "here")
    c.close()


def test_sums_are_kept_through_packing_by_either_tool(tmp_path: Path) -> None:
    """Content-keyed: loose, packed by dosfs (compressed), repacked by disk-objectstore."""
    folder = tmp_path / "c"
    c = Container(folder)
    c.init_container()
    data = os.urandom(3 * MIN_SIZE)
    key = c.add_object(data)
    c.pack_all_loose(compress=True)
    c.clean_storage()
    c.close()
    d = DosContainer(folder)
    d.repack()
    d.close()
    c = Container(folder)
    assert c.get_object_content(key) == data
    sums = c.block_sums(key, len(data))
    assert sums is not None and sums.sums == naive_sums(data)
    c.close()


def test_a_whole_verification_records_sums_for_objects_written_by_others(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    d = DosContainer(folder)
    d.init_container()
    data = os.urandom(2 * MIN_SIZE + 3)
    key = d.add_objects_to_pack([data], compress=True)[0]
    d.close()
    c = Container(folder)
    assert c.block_sums(key, len(data)) is None
    with c.open_object(key) as reader:
        assert c.verifier(reader, eager=True).wait(30)
    sums = c.block_sums(key, len(data))
    assert sums is not None and sums.sums == naive_sums(data)
    # a thread verifier (no helper process) records them too
    BlockSumIndex(str(folder)).forget(key)
    assert c.block_sums(key, len(data)) is None
    with c.open_object(key) as reader:
        v = verifier_for(reader, c.hash_type, eager=True, sums_folder=str(folder))
        v.wait(30)
        assert v.ok
    assert c.block_sums(key, len(data)) is not None
    c.close()


def test_a_bad_object_records_no_sums(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    d = DosContainer(folder)
    d.init_container()
    data = os.urandom(2 * MIN_SIZE)
    key = d.add_object(data)
    d.close()
    path = folder / "loose" / key[:2] / key[2:]
    raw = bytearray(path.read_bytes())
    raw[5] ^= 1
    path.write_bytes(bytes(raw))
    c = Container(folder)
    with c.open_object(key) as reader:
        verifier = c.verifier(reader, eager=True)
        verifier.wait(30)
        assert verifier.ok is False
    assert c.block_sums(key, len(data)) is None
    c.close()


def test_unreadable_or_odd_side_files_are_ignored(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    c = Container(folder)
    c.init_container()
    data = os.urandom(2 * MIN_SIZE)
    key = c.add_object(data)
    c.close()
    side = folder / FILE_NAME
    with sqlite3.connect(side) as conn:  # a blob of the wrong length
        conn.execute("UPDATE blocksums SET sums = x'00'")
    conn.close()
    c = Container(folder)
    assert c.block_sums(key, len(data)) is None
    assert c.get_object_content(key) == data
    c.close()
    for name in os.listdir(folder):
        if name.startswith(FILE_NAME):
            os.unlink(folder / name)
    side.write_bytes(b"not a database" * 100)
    c = Container(folder)
    assert c.block_sums(key, len(data)) is None
    c.add_object(os.urandom(2 * MIN_SIZE))  # recording fails quietly, the write does not
    assert c.get_object_content(key) == data
    c.close()


def test_clean_storage_forgets_sums_of_deleted_objects(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    c = Container(folder)
    c.init_container()
    keep = c.add_object(os.urandom(2 * MIN_SIZE))
    packed = c.add_object(os.urandom(2 * MIN_SIZE + 1))
    gone = c.add_object(os.urandom(2 * MIN_SIZE + 2))
    c.pack_all_loose()
    c.clean_storage()
    c.add_object(c.get_object_content(keep))  # loose again as well: still kept
    c.delete_objects([gone])
    report = c.clean_storage()
    assert report.block_sums_removed == 1
    assert c.block_sums(gone, 2 * MIN_SIZE + 2) is None
    assert c.block_sums(packed, 2 * MIN_SIZE + 1) is not None
    assert c.block_sums(keep, 2 * MIN_SIZE) is not None
    assert c.clean_storage().block_sums_removed == 0
    c.close()


def test_streamed_pack_writes_and_packing_record_sums(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    d = DosContainer(folder)
    d.init_container()
    theirs = os.urandom(2 * MIN_SIZE + 11)
    loose_key = d.add_object(theirs)  # written by disk-objectstore: no sums
    d.close()
    c = Container(folder)
    assert c.block_sums(loose_key, len(theirs)) is None
    ours = os.urandom(3 * MIN_SIZE)
    [key] = c.add_streamed_objects_to_pack([io.BytesIO(ours)], compress=True)
    got = c.block_sums(key, len(ours))
    assert got is not None and got.sums == naive_sums(ours)
    c.pack_all_loose()  # hashes the loose file as it packs it: sums from that pass
    got = c.block_sums(loose_key, len(theirs))
    assert got is not None and got.sums == naive_sums(theirs)
    c.close()


def test_validate_records_sums_of_good_packed_objects(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    d = DosContainer(folder)
    d.init_container()
    good, bad = os.urandom(2 * MIN_SIZE), os.urandom(2 * MIN_SIZE)
    kg, kb = d.add_objects_to_pack([good, bad])
    d.close()
    c = Container(folder)
    meta = c.get_object_meta(kb)
    with open(folder / "packs" / str(meta.pack_id), "r+b") as f:  # damage the second one
        f.seek(meta.pack_offset + 100)
        byte = f.read(1)
        f.seek(meta.pack_offset + 100)
        f.write(bytes([byte[0] ^ 1]))
    report = c.validate()
    assert kb in report.invalid_hashes_packed and kg not in report.invalid_hashes_packed
    got = c.block_sums(kg, len(good))
    assert got is not None and got.sums == naive_sums(good)
    assert c.block_sums(kb, len(bad)) is None
    c.close()
