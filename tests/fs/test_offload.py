"""The offload policy: a reader whose bytes are local is read in the loop (or on the CPU pool
when compressed); one that may wait on the network is tried locally first (local_only) and,
when its bytes are not here, read on the network pool, never in the loop or on the CPU pool,
with one deadline taken when the request arrived."""

from __future__ import annotations

import threading
import time

import trio

from dosfs.container.meta import ObjectType, new_meta
from dosfs.container.packstore import WouldBlock, current_deadline, is_local_only
from dosfs.fs.offload import Offload


class Reader:
    """A reader whose bytes are "cached" below `cached_upto` and remote above it."""

    hashkey = "0" * 64
    size = 1 << 20
    meta = new_meta(ObjectType.LOOSE, 1 << 20)

    def __init__(self, *, may_block: bool, compressed: bool = False, cached_upto: int = 0) -> None:
        self.may_block = may_block
        self.compressed = compressed
        self.cached_upto = cached_upto
        self.calls: list[tuple[str, bool, float | None]] = []

    def pread(self, offset: int, size: int) -> bytes:
        local = is_local_only()
        self.calls.append((threading.current_thread().name, local, current_deadline()))
        if self.may_block and local and offset + size > self.cached_upto:
            raise WouldBlock("not here")
        return b"x" * size

    def close(self) -> None: ...
    def where(self) -> str: return "test"
    def clone(self) -> Reader: return self
    def sequential(self) -> None: ...


def _read(offload: Offload, reader: Reader, offset: int, size: int) -> bytes:
    async def main() -> bytes:
        try:
            return await offload.read(reader, offset, size)  # type: ignore[arg-type]
        finally:
            offload.close()

    return trio.run(main)


def test_local_bytes_are_read_in_the_loop_compressed_ones_on_the_cpu_pool() -> None:
    plain = Reader(may_block=False)
    assert _read(Offload(2), plain, 0, 10) == b"x" * 10
    assert plain.calls == [(threading.current_thread().name, False, None)]
    packed = Reader(may_block=False, compressed=True)
    _read(Offload(2), packed, 0, 10)
    assert packed.calls[0][0].startswith("dosfs-worker-")


def test_remote_bytes_in_the_cache_are_served_in_the_loop_without_waiting() -> None:
    reader = Reader(may_block=True, cached_upto=100)
    assert _read(Offload(2, timeout=5), reader, 0, 100) == b"x" * 100
    assert reader.calls == [(threading.current_thread().name, True, None)]


def test_remote_bytes_not_here_are_read_on_the_network_pool_with_one_deadline() -> None:
    for compressed in (False, True):
        reader = Reader(may_block=True, compressed=compressed)
        before = time.monotonic()
        assert _read(Offload(2, timeout=5), reader, 0, 100) == b"x" * 100
        (first, local, _), (second, waited, when) = reader.calls
        assert local and not waited
        assert first.startswith("dosfs-worker-") == compressed  # never in the loop if CPU-bound
        assert second.startswith("dosfs-net-")  # neither the loop nor the CPU pool
        assert when is not None and before + 5 <= when <= time.monotonic() + 5
