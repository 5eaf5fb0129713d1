"""Memory stays flat: a big object streams through every path in bounded chunks."""

from __future__ import annotations

import hashlib
import io
import tracemalloc

import pytest

from dosfs import Container

SIZE = 96 * 1024 * 1024
LIMIT = 24 * 1024 * 1024  # peak Python allocations allowed (buffers of 1-8 MiB)


class Generated(io.RawIOBase):
    """SIZE bytes made on the fly (never all in memory)."""

    def __init__(self) -> None:
        self.pos = 0
        self.block = hashlib.sha256(b"seed").digest() * (1 << 15)  # 1 MiB, compressible-ish

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[no-untyped-def]
        n = min(len(b), SIZE - self.pos, len(self.block))
        b[:n] = self.block[:n]
        self.pos += n
        return n


def _expected_hash() -> str:
    h = hashlib.sha256()
    g = Generated()
    while chunk := g.read(1 << 20):
        h.update(chunk)
    return h.hexdigest()


def _peak(fn) -> tuple[object, int]:  # type: ignore[no-untyped-def]
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_big_object_streams_with_flat_memory(container: Container) -> None:
    expected = _expected_hash()
    key, peak = _peak(lambda: container.add_streamed_object(Generated()))
    assert key == expected and peak < LIMIT, peak

    def read_all() -> str:
        h = hashlib.sha256()
        with container.get_object_stream(key) as s:  # type: ignore[arg-type]
            while chunk := s.read(1 << 20):
                h.update(chunk)
        return h.hexdigest()

    got, peak = _peak(read_all)
    assert got == expected and peak < LIMIT, peak

    _none, peak = _peak(lambda: container.pack_all_loose(compress=True, clean_loose_per_pack=True))
    assert peak < LIMIT, peak
    assert container.get_object_meta(key).pack_compressed  # type: ignore[arg-type]

    got, peak = _peak(read_all)
    assert got == expected and peak < LIMIT, peak

    (again,), peak = _peak(lambda: container.add_streamed_objects_to_pack([Generated()]))
    assert again == expected and peak < LIMIT, peak

    report, peak = _peak(container.validate)
    assert report.is_valid() and peak < LIMIT, peak  # type: ignore[attr-defined]
    _none, peak = _peak(lambda: container.repack(compress_mode="no"))
    assert peak < LIMIT, peak
    got, peak = _peak(read_all)
    assert got == expected and peak < LIMIT, peak
