"""Direct pack writes, pack rollover, pack locks, and the pack descriptor cache."""

from __future__ import annotations

import hashlib
import io
import os
import zlib
from pathlib import Path

import pytest

from dosfs import Container, LockedError
from dosfs.container.packs import PackAppender


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_add_objects_to_pack_order_and_dedupe(container: Container, folder: Path) -> None:
    blobs = [b"a", b"b", b"a", b"", b"c" * 1000]
    keys = container.add_objects_to_pack(blobs)
    assert keys == [sha(b) for b in blobs]
    assert container.count_objects().packed == 4
    # no holes: exactly the distinct bytes, once
    assert (folder / "packs" / "0").stat().st_size == 1 + 1 + 0 + 1000
    again = container.add_objects_to_pack([b"a", b"d"])
    assert again == [sha(b"a"), sha(b"d")]
    assert (folder / "packs" / "0").stat().st_size == 1003
    for k, b in zip(keys, blobs, strict=True):
        assert container.get_object_content(k) == b


def test_compressed_objects_are_zlib_streams(container: Container, folder: Path) -> None:
    data = b"compress me " * 1000
    (h,) = container.add_objects_to_pack([data], compress=True)
    meta = container.get_object_meta(h)
    assert meta.pack_compressed and meta.size == len(data) and meta.pack_length < len(data)
    raw = (folder / "packs" / "0").read_bytes()[
        meta.pack_offset : meta.pack_offset + meta.pack_length
    ]
    assert zlib.decompress(raw) == data  # RFC 1950 zlib stream
    (e,) = container.add_objects_to_pack([b""], compress=True)
    assert container.get_object_meta(e).pack_length == 8
    assert container.get_object_content(e) == b""


def test_compress_auto(container: Container) -> None:
    text, noise = b"x" * 10000, os.urandom(10000)
    k1, k2 = container.add_objects_to_pack([text, noise], compress="auto")
    assert container.get_object_meta(k1).pack_compressed
    assert not container.get_object_meta(k2).pack_compressed


def test_rollover(small_packs: Container, folder: Path) -> None:
    blobs = [bytes([i]) * 3000 for i in range(20)]
    keys = small_packs.add_objects_to_pack(blobs)
    packs = sorted(int(p) for p in os.listdir(folder / "packs"))
    assert len(packs) > 3
    for p in packs[:-1]:
        size = (folder / "packs" / str(p)).stat().st_size
        assert 10 * 1024 <= size < 10 * 1024 + 3000  # exceeds the target by at most one object
    assert small_packs.get_objects_content(keys) == dict(zip(keys, blobs, strict=True))


def test_streamed_objects_to_pack(container: Container, folder: Path) -> None:
    big = os.urandom(2 * 1024 * 1024 + 3)
    keys = container.add_streamed_objects_to_pack(
        [io.BytesIO(big), io.BytesIO(b"small"), io.BytesIO(big)], compress=True
    )
    assert keys == [sha(big), sha(b"small"), sha(big)]
    assert container.get_object_content(keys[0]) == big
    size_before = (folder / "packs" / "0").stat().st_size
    # a known object streamed again is cut off: no hole
    assert container.add_streamed_object_to_pack(io.BytesIO(b"small")) == sha(b"small")
    assert (folder / "packs" / "0").stat().st_size == size_before


def test_streamed_objects_open_streams(container: Container, tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"from a file")

    class Lazy:
        def __enter__(self):  # type: ignore[no-untyped-def]
            self.handle = open(path, "rb")  # noqa: SIM115
            return self.handle

        def __exit__(self, *exc: object) -> None:
            self.handle.close()

    (h,) = container.add_streamed_objects_to_pack([Lazy()], open_streams=True)
    assert container.get_object_content(h) == b"from a file"


def test_foreign_pack_lock_refuses(container: Container, folder: Path) -> None:
    (folder / "packs" / "0.lock").write_bytes(b"")  # as disk-objectstore leaves it
    with pytest.raises(LockedError, match="0.lock"):
        container.add_objects_to_pack([b"x"])
    (folder / "packs" / "0.lock").unlink()
    container.add_objects_to_pack([b"x"])
    assert not (folder / "packs" / "0.lock").exists()


def test_stale_dosfs_pack_lock_is_recovered(container: Container, folder: Path) -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    (folder / "packs" / "0.lock").write_text(f"dosfs pid={pid} host={os.uname().nodename}\n")
    container.add_objects_to_pack([b"x"])
    assert not (folder / "packs" / "0.lock").exists()


def test_appender_abort_truncates(container: Container, folder: Path) -> None:
    container.add_objects_to_pack([b"committed"])
    with pytest.raises(RuntimeError):
        with PackAppender(container.layout, 0) as app:
            app.write(b"garbage" * 10_000_000 if False else b"garbage")
            app.flush()
            raise RuntimeError
    assert (folder / "packs" / "0").read_bytes() == b"committed"
    assert not (folder / "packs" / "0.lock").exists()


def test_cached_fd_follows_replaced_pack(small_packs: Container) -> None:
    """Another process repacks (pack files replaced): a reader with cached descriptors must
    never serve bytes of the old file at the new offsets."""
    blobs = [bytes([i]) * 1500 for i in range(30)]
    keys = small_packs.add_objects_to_pack(blobs)
    for k, b in zip(keys, blobs, strict=True):  # warm the cache
        assert small_packs.get_object_content(k) == b
    other = Container(small_packs.folder)
    other.delete_objects(keys[::2])
    other.repack()
    other.close()
    for k, b in list(zip(keys, blobs, strict=True))[1::2]:
        assert small_packs.get_object_content(k) == b
        with small_packs.open_object(k) as r:
            assert r.pread(0, 10**6) == b


def test_open_reader_survives_repack_and_packing(container: Container) -> None:
    keep = container.add_objects_to_pack([b"keep" * 100, b"drop" * 100])
    loose = container.add_object(b"loose content")
    r1 = container.open_object(keep[0])
    r2 = container.open_object(loose)
    container.delete_objects([keep[1]])
    container.repack()
    container.pack_all_loose(clean_loose_per_pack=True)
    assert container.get_object_meta(loose).type == "packed"
    assert r1.pread(0, 1000) == b"keep" * 100
    assert r2.pread(0, 100) == b"loose content"
    r1.close()
    r2.close()
