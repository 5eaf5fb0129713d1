"""The remote layout (docs/format.md, "Remote layout"): immutable pack segments and
generations, and HEAD, the one object that is ever overwritten, written last.

    PREFIX/HEAD                         {"format": 1, "generation": N}
    PREFIX/generations/<N>.json         the generation: config, packs -> segments, index key
    PREFIX/generations/<N>-<token>.idx  zlib'ed SQLite snapshot of packs.idx (format 1 only)
    PREFIX/index/<sha256>.tbl           an index table (format 2: a base and runs, table.py)
    PREFIX/segments/<cid>/<pack>-<ino>-<start>-<end>   bytes [start, end) of a local pack
    PREFIX/segments/<cid>/loose-<sha256>             the loose objects, concatenated
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import obstore
from obstore.store import S3Store

from dosfs.remote.errors import remote_error as remote_error  # the one mapping
from dosfs.remote.table import TableRef
from dosfs.remote.url import RemoteError, RemoteURL

#: generations with an SQLite snapshot as their index (`index`), and with index tables
FORMAT = 1
FORMAT_TABLES = 2


@dataclass(frozen=True, slots=True)
class Segment:
    key: str  # relative to the prefix
    length: int


@dataclass(frozen=True, slots=True)
class Generation:
    number: int
    config: dict[str, Any]
    index_key: str
    index_size: int
    packs: dict[int, list[Segment]]
    local: dict[int, dict[str, int]]  # pack id -> {"ino", "length"} (push's plan)
    created: float
    rows_digest: str = ""
    #: rows in the index snapshot and the sum of their sizes; None in generations written
    #: before these fields existed (readers then count the snapshot's rows)
    objects: int | None = None
    size: int | None = None
    #: format 2: the index tables, oldest first (a base, then runs: remote/table.py), the sum
    #: of the rows' lengths, and push's watermark (what it published of the local index)
    tables: tuple[TableRef, ...] = ()
    lengths: int | None = None
    watermark: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        extra: dict[str, Any] = (
            {} if self.objects is None else {"objects": self.objects, "bytes": self.size})
        if self.tables:
            extra["tables"] = [t.to_json() for t in self.tables]
            extra["lengths"] = self.lengths
            extra["watermark"] = self.watermark
        return {
            "format": FORMAT_TABLES if self.tables else FORMAT,
            "generation": self.number,
            "created": self.created,
            "config": self.config,
            "index": self.index_key,
            "index_size": self.index_size,
            "packs": {str(p): [[s.key, s.length] for s in segs] for p, segs in self.packs.items()},
            "local": {str(p): v for p, v in self.local.items()},
            "rows_digest": self.rows_digest,
            **extra,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Generation:
        if data.get("format") not in (FORMAT, FORMAT_TABLES):
            raise RemoteError(f"unknown remote format {data.get('format')!r}")
        return cls(
            number=int(data["generation"]),
            config=data["config"],
            index_key=data["index"],
            index_size=int(data["index_size"]),
            packs={
                int(p): [Segment(k, int(n)) for k, n in segs] for p, segs in data["packs"].items()
            },
            local={int(p): v for p, v in data.get("local", {}).items()},
            created=float(data["created"]),
            rows_digest=str(data.get("rows_digest", "")),
            objects=None if data.get("objects") is None else int(data["objects"]),
            size=None if data.get("bytes") is None else int(data["bytes"]),
            tables=tuple(TableRef.from_json(t) for t in data.get("tables", [])),
            lengths=None if data.get("lengths") is None else int(data["lengths"]),
            watermark=data.get("watermark"),
        )

    def segment_keys(self) -> set[str]:
        return {s.key for segs in self.packs.values() for s in segs}

    def index_keys(self) -> set[str]:
        """The keys of its index: the tables, or the SQLite snapshot."""
        return {t.key for t in self.tables} if self.tables else {self.index_key}


def generation_key(n: int, ext: str, token: str = "") -> str:
    return f"generations/{n:012d}{'-' + token if token else ''}.{ext}"


def generation_number(path: str) -> int:
    """The generation a key under generations/ belongs to (`<N>.json`, `<N>[-token].idx`)."""
    return int(path.rsplit("/", 1)[1].split(".")[0].split("-")[0])


def is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, FileNotFoundError) or type(exc).__name__ == "NotFoundError"


def get_json(store: S3Store, url: RemoteURL, name: str) -> dict[str, Any] | None:
    try:
        data = bytes(obstore.get(store, url.key(name)).bytes())
    except Exception as exc:
        if is_not_found(exc) and "NoSuchBucket" not in str(exc):
            return None  # a missing bucket is said as such, the same in every command
        raise remote_error(exc, url) from exc
    result: dict[str, Any] = json.loads(data)
    return result


def read_head(
    store: S3Store, url: RemoteURL, newer_than: int | None = None
) -> Generation | None:
    """The current generation, None when nothing was published under `url` (or, with
    `newer_than`, when HEAD names no newer generation: one small GET per refresh)."""
    head = get_json(store, url, "HEAD")
    if head is None:
        return None
    if newer_than is not None and int(head["generation"]) <= newer_than:
        return None
    data = get_json(store, url, generation_key(int(head["generation"]), "json"))
    if data is None:
        raise RemoteError(f"{url}: HEAD names generation {head['generation']}, which is missing")
    return Generation.from_json(data)

