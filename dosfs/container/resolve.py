"""The read protocol, in one place: where an object's bytes are, as one consistent answer.

The concurrency contract (docs/format.md): look in the index; if absent, try the loose file; if
that is gone too, look in the index again (a packer commits rows before it removes loose files,
so the object was packed in between). A packed row is only used with a pack source checked at
the row's stamp (packstore.PackCache); when the index moved meanwhile, start again.

`Resolver.resolve` answers for one key, `resolve_many` for a batch (one short read transaction
per round, rows grouped by pack in offset order); every single, stream and bulk read, meta
query, validate and the mount go through them. Keys are validated by the caller, once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Sequence
from itertools import groupby
from operator import itemgetter
from typing import TypeVar

from dosfs.container.config import Layout
from dosfs.container.decoding import check_hash, decode
from dosfs.container.errors import CorruptObject, NotExistent
from dosfs.container.index import FullRow, LookupRow
from dosfs.container.index_contract import IndexAPI
from dosfs.container.index_sql import (
    F_HASHKEY,
    F_OFFSET,
    F_PACK,
    L_COMPRESSED,
    L_HASHKEY,
    L_LENGTH,
    L_OFFSET,
    L_PACK,
    L_SIZE,
    L_STAMP,
)
from dosfs.container.meta import ObjectMeta, ObjectType, new_meta
from dosfs.container.packstore import PackCache, PackSource, PinnedFile
from dosfs.container.readers import (
    ObjectReader,
    loose_reader,
    packed_meta,
    reader_for,
)
from dosfs.container.restarts import Lookup, RestartIndex

#: how often a read re-resolves an object that moved under it before giving up
RETRIES = 20
#: rounds of resolve_many before objects that keep moving are an error
MAX_ROUNDS = 50

T = TypeVar("T")

#: what resolve_many yields: a pack's rows (sorted by offset) with their source (None when
#: only meta was asked for), or a loose object with its pinned file (or just its size)
PackedGroup = tuple[PackSource | None, list[FullRow]]
LooseItem = tuple[str, PinnedFile | None, int]
Resolved = tuple[PackedGroup | None, LooseItem | None]


def _read_whole(path: str) -> bytes:
    with open(path, "rb", buffering=0) as handle:
        return handle.readall()


def _stat_size(path: str) -> int:
    return os.stat(path).st_size


#: how old a lookup snapshot may get before it is renewed (entry_recent)
SNAPSHOT_AGE = 0.05


class Resolver:
    """Answers "where are the bytes of this key" for one container."""

    __slots__ = ("layout", "index", "packs", "hash_type", "_loose_path", "restarts")

    def __init__(
        self, layout: Layout, index: IndexAPI, packs: PackCache, restarts: RestartIndex
    ) -> None:
        self.layout = layout
        self.index = index
        self.packs = packs
        self.restarts = restarts
        self.hash_type = layout.config.hash_type
        self._loose_path = layout.loose_path

    # -- one key -------------------------------------------------------------------------------
    def _source(self, hashkey: str, row: LookupRow) -> PackSource | None:
        """The pinned pack source for a row, or None if the row must be read again."""
        pack_id, stamp = row[L_PACK], row[L_STAMP]
        try:
            return self.packs.get(pack_id, stamp, self.index.stamp)
        except FileNotFoundError:
            if self.index.stamp() != stamp:
                return None
            raise CorruptObject(hashkey, f"pack file {pack_id} is missing") from None

    def resolve(
        self, hashkey: str, loose: Callable[[str], T], with_source: bool = True
    ) -> tuple[T | None, LookupRow | None, PackSource | None]:
        """`(loose(path), None, None)` for a loose object, `(None, row, source)` for a packed
        one (source None without `with_source`); NotExistent when it is neither.
        `loose` opens, stats or reads the loose file (FileNotFoundError when absent)."""
        lookup = self.index.lookup
        for _ in range(RETRIES):
            row = lookup(hashkey)
            if row is None:
                try:
                    return loose(self._loose_path(hashkey)), None, None
                except FileNotFoundError:
                    pass
                row = lookup(hashkey)
                if row is None:
                    raise NotExistent(f"no object with hash key {hashkey}")
            if not with_source:
                return None, row, None
            source = self._source(hashkey, row)
            if source is not None:
                return None, row, source
        raise CorruptObject(hashkey, "the object kept moving while being read")

    def content(self, hashkey: str, verify: bool = False) -> bytes:
        """The whole object, read in one piece. The usual case, a packed object whose pack is
        open and was checked at the stamp of its row, takes a short path (a single read costs
        ~10 µs, so each layer skipped shows); anything else goes the whole read protocol."""
        if not verify:
            row = self.index.lookup(hashkey)
            if row is not None:
                source = self.packs.cached(row[L_PACK], row[L_STAMP])
                if source is not None:
                    length = row[L_LENGTH]
                    raw = source.read_at(row[L_OFFSET], length)
                    if len(raw) == length:
                        if not row[L_COMPRESSED] and length == row[L_SIZE]:
                            return raw
                        return decode(hashkey, row[L_COMPRESSED], row[L_SIZE], length, raw)
        return self._content(hashkey, verify)

    def _content(self, hashkey: str, verify: bool) -> bytes:
        for _ in range(RETRIES):
            data, row, source = self.resolve(hashkey, _read_whole)
            if data is not None:
                if verify:
                    check_hash(hashkey, self.hash_type, data, "loose file")
                return data
            if row is None or source is None:  # pragma: no cover - resolve never does this
                raise CorruptObject(hashkey, "resolved to nothing")
            compressed, size, offset = row[L_COMPRESSED], row[L_SIZE], row[L_OFFSET]
            length = row[L_LENGTH]
            raw = source.read_at(offset, length)
            if len(raw) != length:
                self.packs.forget(row[L_PACK])
                if self.index.stamp() != row[L_STAMP]:
                    continue  # the pack was replaced under the row: read again
                raise CorruptObject(
                    hashkey, f"pack {row[L_PACK]} ends before the object ({offset}+{length})"
                )
            data = decode(hashkey, compressed, size, length, raw)
            if verify:
                check_hash(hashkey, self.hash_type, data, f"pack {row[L_PACK]} offset {offset}")
            return data
        raise CorruptObject(hashkey, "the object kept moving while being read")

    def reader(self, hashkey: str) -> ObjectReader:
        """A reader pinned to the object's bytes as they are now."""
        pinned, row, source = self.resolve(hashkey, PinnedFile.open)
        if pinned is not None:
            return loose_reader(hashkey, pinned, pinned.opened_size)
        if row is None or source is None:  # pragma: no cover - resolve never does this
            raise CorruptObject(hashkey, "resolved to nothing")
        return reader_for(hashkey, source, row, self.restart_lookup(hashkey, row))

    def restart_lookup(self, hashkey: str, row: Sequence[int]) -> Lookup | None:
        """How a reader of a compressed row finds its restart points (asked only if needed)."""
        if not row[L_COMPRESSED]:
            return None
        offset, length, pack_id = row[L_OFFSET], row[L_LENGTH], row[L_PACK]
        return lambda: self.restarts.lookup(hashkey, pack_id, offset, length)

    def entry(self, hashkey: str) -> tuple[int | None, int]:
        """(index row id, or None for a loose object; size): what a listing or a lookup of the
        mount needs, in one index round trip."""
        return self._entry(hashkey, self.index.entry(hashkey))

    def entry_recent(self, hashkey: str) -> tuple[int | None, int]:
        """entry(), answering hits from a read snapshot at most SNAPSHOT_AGE old (misses are
        asked fresh, so a new object is never missed). For a server's lookups; see
        Index.entry_recent for the cost saved and `release_snapshot`."""
        return self._entry(hashkey, self.index.entry_recent(hashkey, SNAPSHOT_AGE))

    def _entry(self, hashkey: str, row: tuple[int, int] | None) -> tuple[int | None, int]:
        """The read protocol: index, loose file, index again as it is now. The first look may
        be at an old snapshot: a packer commits rows before it removes loose files, so if the
        loose file is gone the second look finds the row."""
        if row is not None:
            return row[0], row[1]
        try:
            return None, os.stat(self._loose_path(hashkey)).st_size
        except FileNotFoundError:
            pass
        row = self.index.entry(hashkey)
        if row is None:
            raise NotExistent(f"no object with hash key {hashkey}")
        return row[0], row[1]

    def reader_by_id(self, rowid: int) -> ObjectReader:
        """A reader of the packed object whose index row has this id (NotExistent if none):
        opening what a lookup named by its row, without a second lookup by key."""
        for _ in range(RETRIES):
            row = self.index.by_id(rowid)
            if row is None:
                raise NotExistent(f"no object with index row {rowid}")
            hashkey, looked_up = row[L_HASHKEY], row[:L_HASHKEY]
            source = self._source(hashkey, looked_up)
            if source is not None:
                return reader_for(hashkey, source, looked_up,
                                  self.restart_lookup(hashkey, looked_up))
        raise CorruptObject(f"row {rowid}", "the object kept moving while being opened")

    def meta(self, hashkey: str) -> ObjectMeta:
        size, row, _source = self.resolve(hashkey, _stat_size, with_source=False)
        if size is not None:
            return new_meta(ObjectType.LOOSE, size)
        if row is None:  # pragma: no cover - resolve never does this
            raise CorruptObject(hashkey, "resolved to nothing")
        return packed_meta(row)

    # -- many keys ---------------------------------------------------------------------------
    def resolve_many(
        self, keys: Sequence[str], with_content: bool
    ) -> Generator[Resolved, None, list[str]]:
        """Yield (group, None) per pack with rows in offset order, then (None, loose item) per
        loose object, then groups of objects packed meanwhile; return the missing keys.
        Loose items come one open file at a time (the consumer reads it before asking on)."""
        index = self.index
        todo: Sequence[str] = keys
        loose_done = False
        missing: list[str] = []
        for _ in range(MAX_ROUNDS):
            if not todo:
                return missing
            rows, stamp = index.lookup_many(todo)
            retry: list[str] = []
            # by pack, then offset (two stable sorts with C keys: rows mostly come in that
            # order already, so each is one pass)
            rows.sort(key=_offset_of)
            rows.sort(key=_pack_of)
            for pack_id, grouped in groupby(rows, _pack_of):
                group = list(grouped)
                if not with_content:
                    yield (None, group), None
                    continue
                try:
                    source = self.packs.get(pack_id, stamp, index.stamp)
                except FileNotFoundError:
                    if index.stamp() != stamp:
                        retry.extend(row[F_HASHKEY] for row in group)
                        continue
                    raise CorruptObject(group[0][0], f"pack file {pack_id} is missing") from None
                if source is None:
                    retry.extend(row[F_HASHKEY] for row in group)
                    continue
                yield (source, group), None
            if len(rows) == len(todo):
                absent: list[str] = []
            else:
                found = {row[F_HASHKEY] for row in rows}
                absent = [h for h in todo if h not in found]
            if loose_done:
                missing.extend(absent)
            else:
                loose_done = True
                recheck: list[str] = []
                for h in absent:
                    item = self._loose_item(h, with_content)
                    if item is None:
                        recheck.append(h)
                    else:
                        yield None, item
                # not loose either: packed meanwhile? (rows are committed before loose removal)
                if recheck:
                    again = {row[F_HASHKEY] for row in index.lookup_many(recheck)[0]}
                    missing = [h for h in recheck if h not in again]
                    retry.extend(h for h in recheck if h in again)
            todo = retry
        raise CorruptObject(todo[0], "objects kept moving while being read")

    def _loose_item(self, hashkey: str, with_content: bool) -> LooseItem | None:
        path = self._loose_path(hashkey)
        try:
            if not with_content:
                return hashkey, None, os.stat(path).st_size
            pinned = PinnedFile.open(path)
        except FileNotFoundError:
            return None
        return hashkey, pinned, pinned.opened_size


_offset_of = itemgetter(F_OFFSET)
_pack_of = itemgetter(F_PACK)


def describe(meta: ObjectMeta, layout: Layout, hashkey: str) -> str:
    """Where an object's bytes live, in words (for log lines about corrupt objects)."""
    if meta.type is ObjectType.LOOSE or meta.pack_id is None:
        return f"loose file {layout.loose_path(hashkey)}"
    kind = "zlib stream" if meta.pack_compressed else "raw"
    return (
        f"pack {layout.pack_path(meta.pack_id)} offset {meta.pack_offset} "
        f"length {meta.pack_length} ({kind})"
    )
