"""disk-objectstore's API beyond reading and writing: pack locks, loosening, lazy loose streams,
importing from another container. Here so that code written for disk-objectstore 1.5 (AiiDA's
repository backend first) runs unchanged; each says where dosfs's design differs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from dosfs.container import loose as _loose
from dosfs.container.config import REPACK_PACK_ID
from dosfs.container.errors import NotExistent
from dosfs.container.meta import CompressMode
from dosfs.container.packing import add_bytes_to_packs, add_streams_to_packs
from dosfs.container.packs import PackLock
from dosfs.container.parts import Parts
from dosfs.container.progress import Callback, Progress
from dosfs.container.readers import ObjectStream


@contextmanager
def lock_pack(parts: Parts, pack_id: str, allow_repack_pack: bool = False) -> Iterator[IO[bytes]]:
    """`packs/<id>.lock` held while the body appends to the pack (an append-mode handle).
    Raises LockedError when another writer holds it (disk-objectstore raises FileExistsError)."""
    try:
        number = int(pack_id)
    except ValueError:
        raise ValueError(f"invalid pack id {pack_id!r}") from None
    if number < 0 and not (allow_repack_pack and number == REPACK_PACK_ID):
        raise ValueError(f"invalid pack id {pack_id!r}")
    with PackLock(parts.layout, number), open(parts.layout.pack_path(number), "ab") as handle:
        yield handle


def loosen_object(parts: Parts, hashkey: str) -> Path:
    """Make a packed object also available as a loose file; its path. As in disk-objectstore, a
    concurrent clean_storage may remove it again (dosfs itself never needs this: its readers
    seek inside compressed objects without a loose copy)."""
    path = parts.layout.loose_path(hashkey)
    if os.path.exists(path):
        return Path(path)
    staged = _loose.StagedObject(parts.layout)
    try:  # verify=hash type: the read that reaches the end raises unless the bytes are right
        with ObjectStream(parts.resolver.reader(hashkey), parts.hash_type) as stream:
            while chunk := stream.read(_loose.CHUNK):
                staged.write(chunk)
    except BaseException:
        staged.discard()
        raise
    staged.commit()
    return Path(path)


class LazyObjectStream:
    """What disk-objectstore's `get_lazy_loose_stream` returns: a stream opened on `with` (or
    `open_stream()`), seekable anywhere. disk-objectstore writes an uncompressed loose copy of a
    compressed object to seek in it; dosfs seeks inside the compressed object and writes
    nothing into the container."""

    def __init__(self, open_stream: Callable[[], ObjectStream]) -> None:
        self._open = open_stream
        self._stream: ObjectStream | None = None

    @property
    def mode(self) -> str:
        return "rb"

    @staticmethod
    def seekable() -> bool:
        return True

    @property
    def closed(self) -> bool:
        return self._stream is None or self._stream.closed

    def _live(self) -> ObjectStream:
        if self._stream is None or self._stream.closed:
            raise ValueError("I/O operation on closed file.")
        return self._stream

    def open_stream(self) -> None:
        if self._stream is None or self._stream.closed:
            self._stream = self._open()

    def close_stream(self) -> None:
        if self._stream is not None:
            self._stream.close()

    def read(self, size: int = -1) -> bytes:
        return self._live().read(size)

    def seek(self, target: int, whence: int = 0) -> int:
        return self._live().seek(target, whence)

    def tell(self) -> int:
        return self._live().tell()

    def __enter__(self) -> LazyObjectStream:
        self.open_stream()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close_stream()


def import_objects(
    parts: Parts,
    hashkeys: Iterable[str],
    source: Any,
    compress: bool | str | CompressMode,
    target_memory_bytes: int,
    callback: Callback | None,
    fsync: bool,
) -> dict[str, str]:
    """Copy objects from `source` (a dosfs or disk-objectstore container) straight into packs;
    returns old key -> new key (equal when both use the same hash type). Small objects are
    buffered up to `target_memory_bytes` and written in bulk; bigger ones stream."""
    mode = CompressMode.coerce(compress)
    wanted = sorted(set(hashkeys))
    progress = Progress(callback)
    present: set[str] = set()
    if source.hash_type == parts.hash_type:
        # The phases and totals disk-objectstore reports, so its progress bars fit: "Listing
        # objects" (which keys are here already), "Copy objects" (the others), "Final flush".
        progress.init(len(wanted), "Listing objects")
        step = LIST_CHUNK if callback is not None else max(len(wanted), 1)  # one query: faster
        for i in range(0, len(wanted), step):
            chunk = wanted[i : i + step]
            found = parts.index.existing(chunk)
            found.update(h for h in chunk if h not in found and _is_loose(parts, h))
            present |= found
            progress.update(len(chunk))
        progress.close()
    todo = [h for h in wanted if h not in present]
    progress.init(len(todo), "Copy objects")
    mapping: dict[str, str] = {h: h for h in present}
    batch: list[tuple[str, bytes]] = []
    batch_bytes = 0

    def flush(report: Progress | None = None) -> None:
        nonlocal batch_bytes
        if batch:
            if report is not None:
                report.init(len(batch), "Final flush")
            new = add_bytes_to_packs(parts, [data for _h, data in batch], mode, fsync=fsync)
            mapping.update((old, key) for (old, _d), key in zip(batch, new, strict=True))
            if report is not None:
                report.update(len(batch))
                report.close()
            batch.clear()
            batch_bytes = 0

    with source.get_objects_stream_and_meta(todo, skip_if_missing=False) as triplets:
        for old, stream, meta in triplets:
            if stream is None:
                raise NotExistent(f"object {old} is not in the source container")
            size = meta["size"] or 0
            if size > target_memory_bytes:
                (key,) = add_streams_to_packs(parts, [stream], mode, False, fsync=fsync)
                mapping[old] = key
            else:
                batch.append((old, stream.read()))
                batch_bytes += size
                if batch_bytes >= target_memory_bytes:
                    flush()
            progress.update(1)
    progress.close()
    flush(progress)
    return mapping


#: keys looked up per query while listing what an import finds already here
LIST_CHUNK = 10_000


def report_listing_existing(parts: Parts, callback: Callback | None) -> None:
    """disk-objectstore's "List existing" phase of `add_streamed_objects_to_pack(no_holes=True)`
    (total: the packed objects), for progress bars written for it. dosfs lists nothing there: it
    checks each object once it is hashed and drops the copy of one it has. So the phase is
    reported whole at once, and only when there are packed objects, as there."""
    if callback is None:
        return
    total = parts.index.count()
    if total:
        progress = Progress(callback)
        progress.init(total, "List existing")
        progress.update(total)
        progress.close()


def _is_loose(parts: Parts, hashkey: str) -> bool:
    return os.path.exists(parts.layout.loose_path(hashkey))
