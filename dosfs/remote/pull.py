"""pull: a local container (new or updated) from a published generation.

Why through RemoteContainer and the ordinary pack writer: every byte is verified against its
name on the way in, and the result is a container like any other (disk-objectstore reads and
validates it). Incremental: only objects the local container lacks are fetched. Small objects
travel in bulk batches (neighbouring ranges coalesced); big ones stream, so memory stays flat.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dosfs.container import Container
from dosfs.remote.container import RemoteContainer

#: objects up to this size are fetched in bulk batches of about BATCH_BYTES
STREAM_ABOVE = 16 * 1024 * 1024
BATCH_BYTES = 64 * 1024 * 1024


@dataclass
class PullReport:
    generation: int
    fetched: int
    fetched_bytes: int
    already_here: int


#: progress(bytes fetched, bytes to fetch), after each batch or big object
Progress = Callable[[int, int], None]


def pull(
    target: str, dest: str | os.PathLike[str], *, timeout: float = 30.0,
    progress: Progress | None = None,
) -> PullReport:
    """Copy what `dest` lacks of the generation published at `target`."""
    with RemoteContainer(target, timeout=timeout) as rc:
        config = rc.generation.config
        with Container(Path(dest)) as local:
            if not local.is_initialised:
                local.init_container(
                    pack_size_target=int(config.get("pack_size_target", 4 << 30)),
                    loose_prefix_len=int(config.get("loose_prefix_len", 2)),
                    hash_type=str(config.get("hash_type", "sha256")),
                    compression_algorithm=str(config.get("compression_algorithm", "zlib+1")),
                )
            have = set(local.list_all_objects())
            wanted = [h for h in rc.list_all_objects() if h not in have]
            sizes = {h: int(meta["size"]) for h, meta in rc.get_objects_meta(wanted)}
            report = PullReport(rc.generation.number, 0, 0, len(have))
            total = sum(sizes.values())

            def advance() -> None:
                if progress is not None:
                    progress(report.fetched_bytes, total)

            advance()
            batch: list[str] = []
            batch_bytes = 0
            for h in wanted:
                size = sizes[h]
                if size > STREAM_ABOVE:
                    with rc.get_object_stream(h) as stream:
                        got = local.add_streamed_object_to_pack(stream)
                    _check(got, h)
                    report.fetched += 1
                    report.fetched_bytes += size
                    advance()
                    continue
                batch.append(h)
                batch_bytes += size
                if batch_bytes >= BATCH_BYTES:
                    _store_batch(rc, local, batch, report)
                    advance()
                    batch, batch_bytes = [], 0
            _store_batch(rc, local, batch, report)
            advance()
    return report


def _store_batch(
    rc: RemoteContainer, local: Container, batch: list[str], report: PullReport
) -> None:
    if not batch:
        return
    contents = rc.get_objects_content(batch, skip_if_missing=False)
    datas = [contents[h] or b"" for h in batch]
    for got, h in zip(local.add_objects_to_pack(datas), batch, strict=True):
        _check(got, h)
    report.fetched += len(batch)
    report.fetched_bytes += sum(len(d) for d in datas)


def _check(got: str, want: str) -> None:
    if got != want:  # cannot happen with verified reads; never store under a wrong name
        raise RuntimeError(f"pulled bytes of {want} hashed to {got}")
