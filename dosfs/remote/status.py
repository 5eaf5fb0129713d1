"""`dosfs status s3://BUCKET/PREFIX`: what is published there, read from HEAD and the current
generation's JSON (two small GETs), the generations/ listing and, for each older generation the
listing names, its JSON (to say which ones a prune would delete now, with HEAD as it is;
a prune runs after each push that publishes).

The object count comes from the generation JSON (`objects`, written by push since it exists);
for an older generation without it, the index is read and its rows counted (`objects_from`
says which way was used)."""

from __future__ import annotations

import datetime
import os
import tempfile
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any

import obstore
from obstore.store import S3Store

from dosfs.container.snapshot import IndexCopy
from dosfs.remote.layout import Generation, read_head, remote_error
from dosfs.remote.url import RemoteError, RemoteURL, make_store, parse_url

#: the grace period push prunes with by default (push.GRACE_SECONDS; not imported: push pulls in
#: the container engine, status needs none of it)
DEFAULT_GRACE = 24 * 3600.0


@dataclass
class RemoteStatus:
    url: str
    generation: int
    created: str  # UTC, ISO 8601
    container_id: str
    hash_type: str
    compression_algorithm: str
    objects: int
    objects_size: int | None  # sum of the objects' sizes, None when not recorded
    objects_from: str  # "generation" (the JSON says) or "index" (snapshot rows counted)
    packs: int
    segments: int
    segments_bytes: int
    index_size: int  # the zlib'ed snapshot, as stored
    generations: list[int] = field(default_factory=list)
    prune_candidates: list[int] = field(default_factory=list)
    grace: float = DEFAULT_GRACE

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _count_rows(store: S3Store, url: RemoteURL, gen: Generation) -> tuple[int, int]:
    """(rows, sum of sizes) of the generation's index: its tables read through (format 2), or
    its snapshot streamed to a temporary file (format 1)."""
    if gen.tables:
        from dosfs.remote.cache import ExtentCache
        from dosfs.remote.packstore import RemotePackStore
        from dosfs.remote.tableindex import TableIndex

        packs = RemotePackStore(store, url, gen, ExtentCache(32 << 20))
        try:
            rows = size = 0
            for _h, s, _id in TableIndex(gen, packs).iter_sized():
                rows += 1
                size += s
            return rows, size
        finally:
            packs.pool.close()
    inflate = zlib.decompressobj()
    with tempfile.TemporaryDirectory(prefix="dosfs-status-") as tmp:
        path = os.path.join(tmp, "packs.idx")
        try:
            with open(path, "wb") as out:
                for chunk in obstore.get(store, url.key(gen.index_key)):
                    out.write(inflate.decompress(bytes(chunk)))
                out.write(inflate.flush())
        except zlib.error as exc:
            raise RemoteError(f"{url}: the index snapshot {gen.index_key} is corrupt") from exc
        except Exception as exc:
            raise remote_error(exc, url) from exc
        return IndexCopy(path).count_and_size()


def _nothing_there(store: S3Store, url: RemoteURL) -> RemoteError:
    """No HEAD: say whether the bucket is missing or only the prefix is empty."""
    try:
        list(obstore.list(store, prefix=url.key("HEAD"), chunk_size=1))
    except Exception as exc:
        return remote_error(exc, url)
    return RemoteError(f"{url}: nothing published there (run 'dosfs push' first)")


def status(target: str, *, timeout: float = 30.0, grace: float = DEFAULT_GRACE) -> RemoteStatus:
    """What is published at `target`; RemoteError (one line) when it cannot be read."""
    from dosfs.remote.prune import plan

    url = parse_url(target)
    store = make_store(url, timeout=timeout)
    gen = read_head(store, url)
    if gen is None:
        raise _nothing_there(store, url)
    if gen.objects is not None:
        objects, size, source = gen.objects, gen.size, "generation"
    else:
        objects, counted = _count_rows(store, url, gen)
        size, source = counted, "index"
    try:
        p = plan(store, url, gen, grace)
    except Exception as exc:
        raise remote_error(exc, url) from exc
    created = datetime.datetime.fromtimestamp(gen.created, datetime.UTC)
    return RemoteStatus(
        url=str(url),
        generation=gen.number,
        created=created.isoformat(timespec="seconds").replace("+00:00", "Z"),
        container_id=str(gen.config.get("container_id", "")),
        hash_type=str(gen.config.get("hash_type", "")),
        compression_algorithm=str(gen.config.get("compression_algorithm", "")),
        objects=objects,
        objects_size=size,
        objects_from=source,
        packs=len(gen.packs),
        segments=sum(len(s) for s in gen.packs.values()),
        segments_bytes=sum(s.length for segs in gen.packs.values() for s in segs),
        index_size=gen.index_size,
        generations=p.numbers,
        prune_candidates=p.doomed,
        grace=grace,
    )
