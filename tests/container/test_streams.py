"""Readers and streams: seek/read/tell, random access in compressed objects, corruption."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from dosfs import Container, CorruptObject, NotExistent
from dosfs.container import readers as streams_mod


@pytest.fixture
def objects(container: Container) -> dict[str, tuple[str, bytes]]:
    data = os.urandom(300_000)
    text = b"".join(b"line %d of some text\n" % i for i in range(20_000))
    loose = container.add_object(data)
    (packed,) = container.add_objects_to_pack([data + b"p"])
    (compressed,) = container.add_objects_to_pack([text], compress=True)
    return {
        "loose": (loose, data),
        "packed": (packed, data + b"p"),
        "compressed": (compressed, text),
    }


@pytest.mark.parametrize("kind", ["loose", "packed", "compressed"])
def test_stream_seek_read_tell(container: Container, objects: dict, kind: str) -> None:
    h, data = objects[kind]
    with container.get_object_stream(h) as s:
        assert s.seekable() and s.readable()
        assert s.read(10) == data[:10] and s.tell() == 10
        assert s.seek(-5, io.SEEK_END) == len(data) - 5
        assert s.read() == data[-5:]
        assert s.read(3) == b""
        s.seek(100)
        s.seek(50, io.SEEK_CUR)
        assert s.read(7) == data[150:157]
        s.seek(len(data) + 10)
        assert s.read(1) == b""
        with pytest.raises(ValueError):
            s.seek(-1)
        s.seek(0)
        buf = bytearray(1000)
        assert s.readinto(buf) == 1000 and bytes(buf) == data[:1000]
        s.seek(0)
        assert s.read() == data
    with container.get_object_stream_and_meta(h) as (s, meta):
        assert meta.size == len(data) and s.read() == data
    assert s.closed


def test_compressed_backward_reads_use_checkpoints(container: Container) -> None:
    data = os.urandom(1 << 20) * 6  # 6 MiB, compresses poorly -> real work
    (h,) = container.add_objects_to_pack([data], compress=True)
    (container.folder / "dosfs-restarts.sqlite").unlink()  # as for an object others compressed
    with container.open_object(h) as r:
        assert r.compressed
        assert r.pread(len(data) - 100, 200) == data[-100:]  # end: verifies the checksum
        checkpoints = r.checkpoints  # type: ignore[attr-defined]
        assert 5 <= checkpoints <= streams_mod.MAX_CHECKPOINTS + 1
        for off in (5_000_000, 10, 3_300_000, 1_048_576, 4_194_303):
            assert r.pread(off, 4096) == data[off : off + 4096]
        assert r.checkpoints == checkpoints  # type: ignore[attr-defined]


def test_checkpoints_bounded_for_huge_objects(container: Container, monkeypatch) -> None:
    monkeypatch.setattr(streams_mod, "MIN_CHECKPOINT_INTERVAL", 1024)
    data = b"".join(os.urandom(64) * 16 for _ in range(2000))  # ~2 MiB, 2000+ KiB-intervals
    (h,) = container.add_objects_to_pack([data], compress=True)
    with container.open_object(h) as r:
        assert r.pread(0, len(data)) == data
        assert r.checkpoints <= streams_mod.MAX_CHECKPOINTS + 1  # type: ignore[attr-defined]
        assert r.pread(len(data) // 2, 10) == data[len(data) // 2 : len(data) // 2 + 10]


def test_checkpoints_keep_no_fetched_input(container: Container) -> None:
    """A checkpoint holds the decompressor state and at most FEED bytes of input, not the
    pack chunk it was taken in (64 of those would be 16 MiB per handle)."""
    data = os.urandom(1 << 20) * 5
    (h,) = container.add_objects_to_pack([data], compress=True)
    with container.open_object(h) as r:
        assert r.pread(0, len(data)) == data
        cps = r._cps  # type: ignore[attr-defined]
        assert len(cps) >= 4
        for cp in cps:
            assert cp.buf == b""
            assert len(cp.dobj.unconsumed_tail) <= streams_mod.FEED
        # and reading from a checkpoint re-fetches its input correctly
        assert r.pread(3 << 20, 100_000) == data[3 << 20 : (3 << 20) + 100_000]


def test_reader_meta_and_errors(container: Container, objects: dict) -> None:
    h, data = objects["compressed"]
    r = container.open_object(h)
    assert r.size == len(data) and r.meta.type == "packed" and r.meta.pack_compressed
    assert r.pread(len(data), 10) == b""
    with pytest.raises(ValueError):
        r.pread(-1, 1)
    r.close()
    with pytest.raises(NotExistent):
        container.open_object("0" * 64)


def _corrupt(folder: Path, pack: int, offset: int, data: bytes) -> None:
    with open(folder / "packs" / str(pack), "r+b") as f:
        f.seek(offset)
        f.write(data)


def test_corrupt_compressed_object_raises(container: Container, folder: Path) -> None:
    text = b"abcdefgh" * 50_000
    (h,) = container.add_objects_to_pack([text], compress=True)
    meta = container.get_object_meta(h)
    _corrupt(folder, 0, meta.pack_offset + meta.pack_length // 2, b"\xff\x00\xff\x00")
    with pytest.raises(CorruptObject) as info:
        container.get_object_content(h)
    assert info.value.hashkey == h
    with pytest.raises(CorruptObject):
        with container.open_object(h) as r:
            r.pread(0, len(text))
    report = container.validate_report()
    assert not report.is_valid() and h in report.invalid_hashes_packed


def test_corrupt_trailer_detected_by_reader(container: Container, folder: Path) -> None:
    text = b"x" * 100_000
    (h,) = container.add_objects_to_pack([text], compress=True)
    meta = container.get_object_meta(h)
    _corrupt(folder, 0, meta.pack_offset + meta.pack_length - 1, b"\x00")  # adler32 byte
    with pytest.raises(CorruptObject):
        container.get_object_content(h)
    with container.open_object(h) as r:
        assert r.pread(0, 10) == b"x" * 10  # the beginning is still readable
        with pytest.raises(CorruptObject):
            r.pread(len(text) - 10, 10)  # reaching the end checks adler32


def test_truncated_pack_raises(container: Container, folder: Path) -> None:
    h, h2 = container.add_objects_to_pack([b"first" * 100, b"second" * 100])
    os.truncate(folder / "packs" / "0", 600)
    assert container.get_object_content(h) == b"first" * 100
    with pytest.raises(CorruptObject, match="ends"):
        container.get_object_content(h2)
    with pytest.raises(CorruptObject):
        container.open_object(h2).pread(0, 600)
    report = container.validate_report()
    assert report.rows_past_end_of_pack == [h2]


def test_missing_pack_raises(container: Container, folder: Path) -> None:
    (h,) = container.add_objects_to_pack([b"x"])
    (folder / "packs" / "0").unlink()
    with pytest.raises(CorruptObject, match="missing"):
        container.get_object_content(h)
    assert container.validate_report().missing_pack_files == [0]
