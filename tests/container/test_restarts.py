"""Random access into large compressed objects (issue 23): restart points in the zlib streams
dosfs writes (recorded in dosfs-restarts.sqlite), and checkpoints shared by readers of the same
stored object. Measured through the pack bytes a read fetches, never by time."""

from __future__ import annotations

import random
import sqlite3
import zlib
from collections.abc import Hashable
from pathlib import Path

import disk_objectstore
import pytest

from dosfs import Container
from dosfs.container.checkpoints import SHARED
from dosfs.container.packstore import PinnedFile
from dosfs.container.readers import COMPRESSED_CHUNK, CompressedReader, reader_for
from dosfs.container.restarts import FILE_NAME, MARKER, RESTART_EVERY, RestartIndex

#: what a read that starts at a restart point may fetch: whole chunks of compressed bytes
NEAR = COMPRESSED_CHUNK + 3 * RESTART_EVERY

SIZE = 8 * 1024 * 1024


def text(n: int, seed: int = 0) -> bytes:
    """Compressible to about half, and different everywhere (a wrong offset gives wrong
    bytes)."""
    rnd = random.Random(seed)
    out = b"".join(b"%09d %s of a compressible object\n" % (i, rnd.randbytes(12).hex().encode())
                   for i in range(n // 55 + 1))
    return out[:n]


class Counting:
    """A pack source that counts the bytes read through it."""

    def __init__(self, inner: PinnedFile) -> None:
        self.inner = inner
        self.read = 0

    @property
    def identity(self) -> Hashable:
        return ("counting", id(self))  # its own: no checkpoints shared with other readers

    @property
    def blocking(self) -> bool:
        return False

    def read_at(self, offset: int, size: int, stop: int | None = None) -> bytes:
        data = self.inner.read_at(offset, size)
        self.read += len(data)
        return data

    def will_read(self, ranges: list[tuple[int, int]]) -> None:
        pass

    def size(self) -> int:
        return self.inner.size()

    def describe(self) -> str:
        return self.inner.describe()


def _reader(
    c: Container, key: str, with_restarts: bool = True
) -> tuple[Counting, CompressedReader]:
    meta = c.get_object_meta(key)
    assert meta.pack_id is not None and meta.pack_offset is not None
    assert meta.pack_length is not None and meta.size is not None
    source = Counting(PinnedFile.open(str(c.folder / "packs" / str(meta.pack_id))))
    row = (1, meta.size, meta.pack_offset, meta.pack_length, meta.pack_id)
    lookup = (lambda: c.parts.restarts.lookup(key, meta.pack_id, meta.pack_offset,
                                              meta.pack_length)) if with_restarts else None
    reader = reader_for(key, source, row, lookup)
    assert isinstance(reader, CompressedReader)
    return source, reader


@pytest.mark.parametrize("how", ["bytes", "stream", "pack_all_loose"])
def test_dosfs_compressed_objects_restart_near_the_offset(container: Container, how: str) -> None:
    data = text(SIZE)
    if how == "bytes":
        key = container.add_objects_to_pack([data], compress=True)[0]
    elif how == "stream":
        import io
        key = container.add_streamed_object_to_pack(io.BytesIO(data), compress=True)
    else:
        key = container.add_object(data)
        container.pack_all_loose(compress=True)
    assert (container.folder / FILE_NAME).exists()
    meta = container.get_object_meta(key)
    assert meta.pack_compressed and zlib.decompress(
        (container.folder / "packs" / str(meta.pack_id)).read_bytes()[
            meta.pack_offset : meta.pack_offset + meta.pack_length]) == data  # plain zlib
    for offset in (SIZE - 131072, SIZE // 2 + 12345, 5 * RESTART_EVERY - 10,
                   9 * RESTART_EVERY - 10):
        source, reader = _reader(container, key)
        assert reader.pread(offset, 131072) == data[offset : offset + 131072]
        # from the restart point before the offset, not from the start (a few 100 KiB)
        assert source.read <= NEAR, (offset, source.read)
        plain_source, plain = _reader(container, key, with_restarts=False)
        assert plain.pread(offset, 131072) == data[offset : offset + 131072]
        if offset >= SIZE // 2:  # from the start, it reads all compressed bytes before
            assert plain_source.read > 4 * source.read
    source, reader = _reader(container, key)
    assert reader.pread(9 * RESTART_EVERY, 4096) == data[9 * RESTART_EVERY :][:4096]
    before = source.read
    assert reader.pread(SIZE - 4096, 4096) == data[-4096:]  # far ahead of where it stands:
    assert source.read - before <= NEAR  # a restart point, not inflating on
    source, reader = _reader(container, key)
    assert reader.pread(0, SIZE) == data  # the whole, in order, still right


def test_disk_objectstore_reads_and_validates_them(container: Container) -> None:
    data = text(SIZE, seed=1)
    key = container.add_objects_to_pack([data], compress=True)[0]
    container.close()
    with disk_objectstore.Container(container.folder) as dos:
        assert dos.get_object_content(key) == data
        assert dos.validate().is_valid()


def test_points_that_do_not_fit_are_ignored(container: Container) -> None:
    """Another tool moved the object, or the side file is wrong: correct bytes all the same."""
    data = text(SIZE, seed=2)
    filler = container.add_objects_to_pack([text(100_000, seed=3)], compress=True)[0]
    key = container.add_objects_to_pack([data], compress=True)[0]
    side = container.folder / FILE_NAME
    with sqlite3.connect(side) as db:  # every point one byte off: no full flush marker there
        (blob,) = db.execute("SELECT points FROM restarts WHERE hashkey = ?", (key,)).fetchone()
        import array
        pts = array.array("q", blob)
        for i in range(1, len(pts), 2):
            pts[i] += 1
        db.execute("UPDATE restarts SET points = ? WHERE hashkey = ?", (pts.tobytes(), key))
    source, reader = _reader(container, key)
    assert reader.pread(SIZE - 1000, 1000) == data[-1000:]
    assert source.read > SIZE // 20  # it had to inflate from the start
    side.write_bytes(b"not a database")
    fresh = Container(container.folder)
    assert fresh.get_object_content(key) == data
    with fresh.get_objects_stream_and_meta([key]) as triplets:
        for _key, stream, _meta in triplets:
            stream.seek(SIZE - 10)
            assert stream.read() == data[-10:]
    fresh.close()
    side.unlink()
    container.delete_objects([filler])  # a hole before it: disk-objectstore's repack moves it
    container.close()
    with disk_objectstore.Container(container.folder) as dos:
        dos.repack()
    c2 = Container(container.folder)
    assert c2.get_object_meta(key).pack_offset == 0
    source, reader = _reader(c2, key)
    assert reader.pread(SIZE - 1000, 1000) == data[-1000:]
    c2.close()


def test_dosfs_repack_keeps_or_makes_points(container: Container) -> None:
    data = text(SIZE, seed=4)
    filler = container.add_objects_to_pack([b"x" * 1000])[0]
    key = container.add_objects_to_pack([data], compress=True)[0]
    plain = container.add_objects_to_pack([text(SIZE, seed=5)], compress=False)[0]
    container.delete_objects([filler])
    container.repack()  # the compressed stream moves: its points move with it
    container.repack(compress_mode="yes")  # the plain one is compressed now, with points
    for k, seed in ((key, 4), (plain, 5)):
        meta = container.get_object_meta(k)
        assert meta.pack_compressed
        points = container.parts.restarts.lookup(k, meta.pack_id, meta.pack_offset,
                                                 meta.pack_length)
        assert points, k
        blob = (container.folder / "packs" / str(meta.pack_id)).read_bytes()
        assert all(blob[meta.pack_offset + c - 4 : meta.pack_offset + c] == MARKER
                   for _u, c in points)
        source, reader = _reader(container, k)
        assert reader.pread(SIZE - 4096, 4096) == text(SIZE, seed)[-4096:]
        assert source.read <= NEAR


def test_clean_storage_forgets_points_of_objects_deleted_or_moved(container: Container) -> None:
    kept = container.add_objects_to_pack([text(SIZE, seed=6)], compress=True)[0]
    gone = container.add_objects_to_pack([text(SIZE, seed=7)], compress=True)[0]
    side = sqlite3.connect(container.folder / "dosfs-restarts.sqlite")
    before = {h for (h,) in side.execute("SELECT hashkey FROM restarts")}
    assert {kept, gone} <= before
    container.delete_objects([gone])
    report = container.clean_storage()
    after = {h for (h,) in side.execute("SELECT hashkey FROM restarts")}
    side.close()
    assert report.restart_points_removed == 1 and after == before - {gone}
    meta = container.get_object_meta(kept)
    assert container.parts.restarts.lookup(kept, meta.pack_id, meta.pack_offset,
                                           meta.pack_length)
    assert container.clean_storage().restart_points_removed == 0


def test_readers_share_checkpoints_of_objects_compressed_by_others(tmp_path: Path) -> None:
    data = text(SIZE, seed=6)
    with disk_objectstore.Container(tmp_path / "dos") as dos:
        dos.init_container()
        key = dos.add_objects_to_pack([data], compress=True)[0]
    SHARED.clear()
    with Container(tmp_path / "dos") as c:
        assert not (c.folder / FILE_NAME).exists()
        first = c.open_object(key)
        assert first.pread(0, SIZE) == data  # one pass leaves checkpoints behind
        second = c.open_object(key)  # a new reader, as every open through the mount
        assert second.checkpoints > 4
        assert second.pread(SIZE - 4096, 4096) == data[-4096:]
        assert RestartIndex(str(c.folder)).lookup(key, 0, 0, 1) is None
