"""The index tables a push publishes: a new base (everything, key order) or one more run (what
changed since the last generation), and when to fold runs together (docs/format.md, "Index
tables").

Why this policy: readers fetch runs whole when a generation opens and read the base by pages,
so a cold lookup costs two ranged GETs only while runs stay small. Runs therefore stay below
RUN_RECORDS records in all (about 1 MiB) and MAX_RUNS in number: past MAX_RUNS they are merged
into one run (a few hundred KiB fetched and put again); past RUN_RECORDS the push writes a new
base from the local index (a full ordered read, as a repack or delete would need anyway). A
push that changed nothing writes nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import obstore
from obstore.store import S3Store

from dosfs.remote import table as tb
from dosfs.remote.layout import remote_error
from dosfs.remote.url import RemoteURL

#: records all runs of a generation may hold before the next push writes a new base
RUN_RECORDS = 16384
#: runs a generation may name before they are merged into one
MAX_RUNS = 8
CHUNK = 8 * 1024 * 1024
CONCURRENCY = 8

Record = tuple[str, tb.Row | None]  # a key and its row, or None: removed (a tombstone)


@dataclass
class Written:
    """A table written to a local file, to be put under its content name."""

    ref: tb.TableRef
    path: str


def write_table(folder: str, name: str, records: Iterable[Record], expected: int) -> Written:
    """A table of `records` (ascending keys) in `folder`."""
    path = os.path.join(folder, name)
    writer = tb.TableWriter(path, expected)
    for hashkey, row in records:
        writer.add(hashkey, row)
    return Written(writer.finish(), path)


def merge_sorted(*streams: Iterable[Record]) -> Iterator[Record]:
    """Several key-ordered record streams as one (a key is in at most one of them)."""
    import heapq

    return heapq.merge(*streams, key=lambda r: r[0])


def fetch_records(store: S3Store, url: RemoteURL, ref: tb.TableRef) -> list[Record]:
    """The records of a (small) published table, verified by its name."""
    try:
        data = bytes(obstore.get(store, url.key(ref.key)).bytes())
    except Exception as exc:
        raise remote_error(exc, url) from exc
    return list(tb.records(tb.parse_whole(ref, data)))


def next_runs(
    store: S3Store,
    url: RemoteURL,
    runs: list[tb.TableRef],
    delta: list[Record],
    folder: str,
) -> tuple[list[tb.TableRef], list[Written]] | None:
    """The runs of the next generation (the old ones kept, plus `delta`; or all merged into
    one), and the tables to put; None when they would grow past RUN_RECORDS (write a base)."""
    if sum(r.records for r in runs) + len(delta) > RUN_RECORDS:
        return None
    if len(runs) + 1 <= MAX_RUNS:
        written = write_table(folder, "run.tbl", delta, len(delta))
        return [*runs, written.ref], [written]
    merged: dict[str, tb.Row | None] = {}
    for ref in runs:  # oldest first: newer rows replace older ones
        merged.update(fetch_records(store, url, ref))
    merged.update(delta)
    records = sorted(merged.items())
    written = write_table(folder, "runs.tbl", records, len(records))
    return [written.ref], [written]


def put_tables(store: S3Store, url: RemoteURL, tables: list[Written]) -> int:
    """Put each table under its name (a content name: one already there is the same bytes);
    returns the bytes sent."""
    sent = 0
    for written in tables:
        def content(path: str = written.path) -> Iterator[bytes]:
            with open(path, "rb") as f:
                while piece := f.read(CHUNK):
                    yield piece

        try:
            obstore.put(store, url.key(written.ref.key), content(), chunk_size=CHUNK,
                        max_concurrency=CONCURRENCY)
        except Exception as exc:
            raise remote_error(exc, url) from exc
        sent += written.ref.size
    return sent
