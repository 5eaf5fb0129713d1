"""Compatibility with disk-objectstore 1.5 in both directions (it is the other side here)."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest

disk_objectstore = pytest.importorskip("disk_objectstore")
from disk_objectstore import Container as DosContainer  # noqa: E402
from disk_objectstore.utils import CompressMode as DosCompressMode  # noqa: E402

from dosfs import Container  # noqa: E402


def _blobs(n: int, seed: int) -> list[bytes]:
    rnd = random.Random(seed)
    out = [b"", b"duplicate", b"duplicate"]
    for i in range(n):
        size = rnd.choice([0, 1, 10, 300, 5000, 40_000])
        if i % 2:
            out.append(rnd.randbytes(size) + i.to_bytes(4, "big"))
        else:
            out.append(b"text %d " % i * (size // 8 + 1))
    return out


def _check_dosfs_reads(folder: Path, expected: dict[str, bytes]) -> None:
    c = Container(folder)
    try:
        assert c.get_objects_content(list(expected)) == expected
        for h, data in expected.items():
            assert c.get_object_content(h) == data
            with c.get_object_stream(h) as s:
                s.seek(len(data) // 2)
                assert s.read() == data[len(data) // 2 :]
        assert list(c.iter_hashkeys()) == sorted(expected)
        report = c.validate_report()
        assert report.is_valid() and not report.has_warnings(), report.summary()
    finally:
        c.close()


def _check_dos_reads(folder: Path, expected: dict[str, bytes]) -> None:
    d = DosContainer(folder)
    try:
        assert d.get_objects_content(list(expected)) == expected
        assert sorted(d.list_all_objects()) == sorted(expected)
        assert d.validate().is_valid()
        for h, data in list(expected.items())[:20]:
            assert d.get_object_content(h) == data
            meta = d.get_object_meta(h)
            assert meta["size"] == len(data)
    finally:
        d.close()


def test_dos_made_container_read_by_dosfs(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    d = DosContainer(folder)
    d.init_container(pack_size_target=64 * 1024)
    blobs = _blobs(80, 1)
    expected: dict[str, bytes] = {}
    # loose only
    for b in blobs[:20]:
        expected[d.add_object(b)] = b
    # straight to packs, plain and compressed, several packs
    for b, h in zip(blobs[20:50], d.add_objects_to_pack(blobs[20:50]), strict=True):
        expected[h] = b
    for b, h in zip(blobs[50:], d.add_objects_to_pack(blobs[50:], compress=True), strict=True):
        expected[h] = b
    # some loose packed, some left loose
    extra = [b"later %d" % i * 100 for i in range(10)]
    for b in extra:
        expected[d.add_object(b)] = b
    d.pack_all_loose(compress=True)
    for b in [b"stays loose", b"also loose"]:
        expected[d.add_object(b)] = b
    d.close()
    assert len(list((folder / "packs").iterdir())) > 2
    _check_dosfs_reads(folder, expected)
    # dosfs can keep writing, packing, repacking it; disk-objectstore still reads it
    c = Container(folder)
    expected[c.add_object(b"dosfs loose")] = b"dosfs loose"
    c.pack_all_loose(compress="auto", clean_loose_per_pack=True)
    c.delete_objects([h for h in list(expected)[:5]])
    for h in list(expected)[:5]:
        expected.pop(h)
    c.repack()
    c.clean_storage()
    c.close()
    _check_dosfs_reads(folder, expected)
    _check_dos_reads(folder, expected)


def test_dosfs_made_container_used_by_dos(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    c = Container(folder)
    c.init_container(pack_size_target=64 * 1024)
    blobs = _blobs(80, 2)
    expected: dict[str, bytes] = {}
    for b in blobs[:20]:
        expected[c.add_object(b)] = b
    for b, h in zip(blobs[20:50], c.add_objects_to_pack(blobs[20:50]), strict=True):
        expected[h] = b
    for b, h in zip(
        blobs[50:],
        c.add_streamed_objects_to_pack([io.BytesIO(x) for x in blobs[50:]], compress=True),
        strict=True,
    ):
        expected[h] = b
    for i in range(10):
        data = b"loose %d " % i * 50
        expected[c.add_object(data)] = data
    c.pack_all_loose(compress=True)
    c.close()
    _check_dos_reads(folder, expected)

    d = DosContainer(folder)
    # disk-objectstore writes, packs, cleans and repacks the dosfs container
    more = {d.add_object(b"dos %d" % i): b"dos %d" % i for i in range(10)}
    expected.update(more)
    d.pack_all_loose()
    d.clean_storage()
    gone = list(expected)[:7]
    d.delete_objects(gone)
    for h in gone:
        expected.pop(h)
    d.repack()
    d.repack(compress_mode=DosCompressMode.YES)
    assert d.validate().is_valid()
    assert d.count_objects().loose == 0
    d.close()
    _check_dos_reads(folder, expected)
    _check_dosfs_reads(folder, expected)


def test_both_sides_at_once(tmp_path: Path) -> None:
    """Open both on the same folder at the same time; each sees what the other wrote."""
    folder = tmp_path / "c"
    c = Container(folder)
    c.init_container()
    d = DosContainer(folder)
    h1 = c.add_objects_to_pack([b"from dosfs"])[0]
    h2 = d.add_objects_to_pack([b"from dos"])[0]
    assert d.get_object_content(h1) == b"from dosfs"
    assert c.get_object_content(h2) == b"from dos"
    h3 = d.add_object(b"dos loose")
    assert c.get_object_content(h3) == b"dos loose"
    d.pack_all_loose()
    d.clean_storage()
    assert c.get_object_meta(h3).type == "packed"
    assert c.get_object_content(h3) == b"dos loose"
    d.close()
    c.close()


def test_dos_repack_under_a_cached_dosfs_reader(tmp_path: Path) -> None:
    """disk-objectstore replaces a pack file in place; our cached descriptor must notice."""
    folder = tmp_path / "c"
    c = Container(folder)
    c.init_container()
    blobs = [bytes([i]) * 777 for i in range(40)]
    keys = c.add_objects_to_pack(blobs)
    for k, b in zip(keys, blobs, strict=True):
        assert c.get_object_content(k) == b
    d = DosContainer(folder)
    d.delete_objects(keys[:20])
    d.repack()
    d.close()
    for k, b in list(zip(keys, blobs, strict=True))[20:]:
        assert c.get_object_content(k) == b
    c.close()


def test_dosfs_config_and_index_accepted_by_dos(tmp_path: Path) -> None:
    c = Container(tmp_path / "c")
    c.init_container(loose_prefix_len=3, hash_type="sha256", compression_algorithm="zlib+9")
    d = DosContainer(tmp_path / "c")
    assert d.is_initialised
    assert d.loose_prefix_len == 3 and d.compression_algorithm == "zlib+9"
    assert d.container_id == c.container_id
    h = d.add_object(b"x")
    assert (tmp_path / "c" / "loose" / h[:3] / h[3:]).exists()
    assert c.get_object_content(h) == b"x"
    d.close()


@pytest.mark.parametrize("compress", [False, True])
def test_empty_objects_in_packs_validate_on_both_sides(tmp_path: Path, compress: bool) -> None:
    c = Container(tmp_path / "c")
    c.init_container()
    keys = c.add_objects_to_pack([b"\x00", b"", b"abc", b""], compress=compress)
    keys += c.add_streamed_objects_to_pack([io.BytesIO(b""), io.BytesIO(b"z")])
    assert c.validate_report().is_valid()
    d = DosContainer(tmp_path / "c")
    assert d.validate().is_valid()
    assert d.get_objects_content(keys) == {k: c.get_object_content(k) for k in keys}
    d.close()
    c.close()


def test_bulk_plain_writes_read_and_validate_in_disk_objectstore(tmp_path: Path) -> None:
    """add_objects_to_pack's bulk path (a writev per 1024 objects, rows built by zip): more
    objects than one writev takes, packs rolling over inside a writev's run, keys already
    stored and keys repeated in the call; disk-objectstore reads and validates the result."""
    rng = random.Random(7)
    blobs = [rng.randbytes(rng.randrange(0, 200)) for _ in range(3000)]
    folder = tmp_path / "c"
    c = Container(folder)
    c.init_container(pack_size_target=64 * 1024)
    first = c.add_objects_to_pack(blobs[:500])
    keys = c.add_objects_to_pack(blobs + blobs[:10])
    c.close()
    assert keys[:500] == first
    d = DosContainer(folder)
    try:
        assert d.get_objects_content(keys) == dict(zip(keys, blobs + blobs[:10], strict=True))
        assert d.validate().is_valid()
        assert d.count_objects().packed == len(set(keys))
        packs = sorted(int(p.name) for p in (folder / "packs").iterdir() if p.name.isdigit())
        assert len(packs) > 3
        for p in packs[:-1]:  # each pack passes its target by less than one object
            assert 64 * 1024 <= (folder / "packs" / str(p)).stat().st_size < 64 * 1024 + 200
    finally:
        d.close()
