"""Bulk reads and listing.

Bulk reads take keys in rounds, each key once however many rounds there are, and resolve each
round with `Resolver.resolve_many` (one short read transaction, rows grouped by pack in offset
order). Each pack is then read in large sequential windows (up to WINDOW bytes, bridging gaps up
to the source's `bulk_gap`) and the small objects are sliced out of the window; objects larger
than a window get their own pinned reader. The source is told every window first (a remote one
fetches them ahead of the reads). Then the loose ones, then whatever was packed meanwhile, then the
missing ones.

Listing merges, shard by shard, the loose names of the shard (listed first) with the packed keys
of the same hash range (read after the listing, in keyset pages): since a packer commits rows
before it removes loose files, an object is always in one of the two.
"""

from __future__ import annotations

import io
import os
from collections.abc import Generator, Iterable, Iterator
from itertools import islice
from typing import Any

from dosfs.container import loose as _loose
from dosfs.container.config import Layout
from dosfs.container.decoding import check_hash, decode
from dosfs.container.errors import CorruptObject
from dosfs.container.index import FullRow
from dosfs.container.index_contract import IndexAPI
from dosfs.container.index_sql import F_HASHKEY, F_LENGTH, F_OFFSET, L_HASHKEY, L_ID, L_SIZE
from dosfs.container.meta import ObjectMeta, ObjectType, missing_meta, new_meta
from dosfs.container.packstore import PackSource
from dosfs.container.readers import (
    ObjectReader,
    ObjectStream,
    loose_reader,
    reader_for,
)
from dosfs.container.resolve import Resolver

#: keys resolved per round (memory of one round is proportional to this)
KEYS_PER_ROUND = 100_000
#: largest single pread of a pack window
WINDOW = 8 * 1024 * 1024

Payload = bytes | ObjectReader | None
#: packed objects come with their raw index row (meta is built only if someone asks)
Info = ObjectMeta | FullRow
Item = tuple[str, Payload, Info]


def as_meta(info: Info) -> ObjectMeta:
    if isinstance(info, ObjectMeta):
        return info
    _h, compressed, size, offset, length, pack_id = info
    return new_meta(ObjectType.PACKED, size, pack_id, bool(compressed), offset, length)


def _rounds(items: Iterable[str], size: int) -> Iterator[list[str]]:
    """Distinct keys in rounds of at most `size` (a key repeated in a later round is dropped)."""
    it = iter(items)
    seen: set[str] = set()
    while True:
        chunk = list(islice(it, size))
        if not chunk:
            return
        fresh = [h for h in dict.fromkeys(chunk) if h not in seen]
        seen.update(fresh)
        if fresh:
            yield fresh


def iter_objects(
    resolver: Resolver,
    hashkeys: Iterable[str],
    skip_if_missing: bool,
    with_content: bool,
    verify: bool = False,
) -> Iterator[list[Item]]:
    """Batches of (hashkey, payload, info). info is an ObjectMeta or a packed row (as_meta);
    payload is bytes (small packed objects, sliced out of one window read), an ObjectReader
    (loose or large: always alone in its batch; the caller closes it), or None (missing, or
    meta only). Batches keep the per-object overhead of generators low. With `verify`, small
    pieces are hashed here (CorruptObject); readers are the caller's to verify."""
    layout = resolver.layout
    hash_type = resolver.hash_type if verify else ""
    for keys in _rounds(hashkeys, KEYS_PER_ROUND):
        invalid: list[str] = []
        if layout.all_valid_hashkeys(keys):
            valid = keys
        else:
            valid = [h for h in keys if layout.is_valid_hashkey(h)]
            invalid = [h for h in keys if not layout.is_valid_hashkey(h)]
        rounds = resolver.resolve_many(valid, with_content)
        while True:
            try:
                group, loose = next(rounds)
            except StopIteration as stop:
                missing: list[str] = stop.value
                break
            if group is not None:
                source, rows = group
                if source is None:
                    yield [(row[F_HASHKEY], None, row) for row in rows]
                else:
                    yield from _read_group(resolver, source, rows, hash_type)
            elif loose is not None:
                h, pinned, size = loose
                if pinned is None:
                    yield [(h, None, new_meta(ObjectType.LOOSE, size))]
                else:
                    reader = loose_reader(h, pinned, size)
                    yield [(h, reader, reader.meta)]  # one open descriptor at a time
        if not skip_if_missing and (missing or invalid):
            yield [(h, None, missing_meta()) for h in missing + invalid]


def _windows(group: list[FullRow], gap: int) -> list[tuple[int, int, int, int]]:
    """How a pack's objects (sorted by offset) are read: (i, j, start, end) reads group[i:j] as
    one window [start, end), reading through gaps up to `gap`; an object longer than WINDOW is
    a window of its own."""
    out = []
    i = 0
    n = len(group)
    while i < n:
        _h, _c, _s, offset, length, _p = group[i]
        start, end = offset, offset + length
        j = i + 1
        if length <= WINDOW:
            while j < n:
                r = group[j]
                o_end = r[F_OFFSET] + r[F_LENGTH]
                if r[F_LENGTH] > WINDOW or o_end - start > WINDOW or r[F_OFFSET] - end > gap:
                    break
                if o_end > end:
                    end = o_end
                j += 1
        out.append((i, j, start, end))
        i = j
    return out


def _read_group(
    resolver: Resolver, source: PackSource, group: list[FullRow], hash_type: str
) -> Iterator[list[Item]]:
    """Objects of one pack, sorted by offset, read in big windows: one batch per window. The
    source is told every window first (a remote one fetches them ahead of the reads)."""
    windows = _windows(group, source.bulk_gap)
    source.will_read([(s, e) for _i, _j, s, e in windows])
    try:
        yield from _read_windows(resolver, source, group, windows, hash_type)
    finally:
        source.will_read([])  # over (or abandoned): nothing more is fetched for it


def _read_windows(
    resolver: Resolver,
    source: PackSource,
    group: list[FullRow],
    windows: list[tuple[int, int, int, int]],
    hash_type: str,
) -> Iterator[list[Item]]:
    for i, j, start, end in windows:
        row = group[i]
        if row[F_LENGTH] > WINDOW:
            h = row[F_HASHKEY]
            yield [(h, reader_for(h, source, row[1:], resolver.restart_lookup(h, row[1:])), row)]
            continue
        buf = source.read_at(start, end - start)
        short = len(buf) != end - start
        batch: list[Item] = []
        append = batch.append
        for r in group[i:j]:
            hk, compressed, size, o, ln, pack_id = r
            rel = o - start
            if short and rel + ln > len(buf):
                raise CorruptObject(hk, f"pack {pack_id} ends before the object ({o}+{ln})")
            if compressed or ln != size:
                piece = decode(hk, compressed, size, ln, buf[rel : rel + ln])
            else:
                piece = buf[rel : rel + ln]
            if hash_type:
                check_hash(hk, hash_type, piece, f"pack {pack_id} offset {o}")
            append((hk, piece, r))
        yield batch


# -- listing ---------------------------------------------------------------------------------------
def iter_hashkeys(layout: Layout, index: IndexAPI, after: str | None = None) -> Iterator[str]:
    """Ascending keys of loose ∪ packed objects, each once, strictly greater than `after`."""
    if after is not None and not isinstance(after, str):
        raise TypeError("after must be a string or None")
    cursor = after
    if not layout.prefix_len:
        names = _loose.list_shard(layout, "")
        if cursor is not None:
            names = [x for x in names if x > cursor]
        yield from _merge(names, index.iter_hashkeys(after=cursor))
        return
    for shard in _loose.list_shards(layout):
        high = shard + "g"  # every key of this shard sorts below shard + "g"
        if cursor is not None and cursor >= high:
            continue
        # packed keys between the previous shard and this one
        yield from index.iter_hashkeys(after=cursor, below=shard)
        # this shard: list the loose names FIRST, then read the packed keys of the range
        names = _loose.list_shard(layout, shard)
        if cursor is not None:
            names = [x for x in names if x > cursor]
        low = shard if cursor is None or cursor < shard else cursor
        yield from _merge(names, index.iter_hashkeys(after=low, below=high))
        cursor = high
    yield from index.iter_hashkeys(after=cursor)


def _merge(loose_sorted: list[str], packed: Iterator[str]) -> Iterator[str]:
    """Union of two ascending sequences, without repeats."""
    i = 0
    n = len(loose_sorted)
    for p in packed:
        while i < n and loose_sorted[i] < p:
            yield loose_sorted[i]
            i += 1
        if i < n and loose_sorted[i] == p:
            i += 1
        yield p
    while i < n:
        yield loose_sorted[i]
        i += 1


# -- the bulk API shapes ---------------------------------------------------------------------------
def get_contents(
    resolver: Resolver, hashkeys: Iterable[str], skip_if_missing: bool, verify: bool
) -> dict[str, bytes | None]:
    """`get_objects_content`: one dict, packs read sequentially."""
    out: dict[str, bytes | None] = {}
    hash_type = resolver.hash_type
    for batch in iter_objects(resolver, hashkeys, skip_if_missing, True, verify):
        for h, payload, _info in batch:
            if payload is None:
                out[h] = None
            elif isinstance(payload, ObjectReader):
                try:
                    data = payload.pread(0, payload.size)
                    if verify:
                        check_hash(h, hash_type, data, payload.where())
                    out[h] = data
                finally:
                    payload.close()
            else:
                out[h] = bytes(payload)
    return out


def streams_and_meta(
    resolver: Resolver, hashkeys: Iterable[str], skip_if_missing: bool, verify: bool
) -> Generator[tuple[str, Any, ObjectMeta], None, None]:
    """`get_objects_stream_and_meta`: (hashkey, stream, meta) in pack/offset order; each stream
    is valid until the next item is requested."""
    verify_type = resolver.hash_type if verify else None
    for batch in iter_objects(resolver, hashkeys, skip_if_missing, True, verify):
        for h, payload, info in batch:
            if payload is None:
                yield h, None, as_meta(info)
            elif isinstance(payload, ObjectReader):
                stream = ObjectStream(payload, verify_type)
                try:
                    yield h, stream, payload.meta
                finally:
                    stream.close()
            else:
                small = io.BytesIO(payload)  # C-speed read/seek/tell (verified above)
                try:
                    yield h, small, as_meta(info)
                finally:
                    small.close()


def iter_entries(
    layout: Layout, index: IndexAPI, after: str | None = None
) -> Iterator[tuple[str, int, int | None]]:
    """(hashkey, size, index row id or None for loose) of every object once, ascending,
    strictly after `after`: the listing iter_hashkeys gives, with what `ls -l` needs."""
    if after is not None and not isinstance(after, str):
        raise TypeError("after must be a string or None")
    cursor = after
    shards = _loose.list_shards(layout) if layout.prefix_len else [""]
    for shard in shards:
        high = shard + "g" if shard else None
        if cursor is not None and high is not None and cursor >= high:
            continue
        if shard:
            yield from index.iter_sized(after=cursor, below=shard)
        names = _loose.list_shard(layout, shard)  # listed BEFORE the packed keys of its range
        if cursor is not None:
            names = [x for x in names if x > cursor]
        low = cursor if not shard or (cursor is not None and cursor >= shard) else shard
        yield from _merge_sized(layout, index, names, index.iter_sized(after=low, below=high))
        cursor = high
    if cursor is not None or not shards:
        yield from index.iter_sized(after=cursor)


def _merge_sized(
    layout: Layout,
    index: IndexAPI,
    loose_sorted: list[str],
    packed: Iterator[tuple[str, int, int]],
) -> Iterator[tuple[str, int, int | None]]:
    """Union of loose names (sized by stat; gone meanwhile: skipped) and packed rows."""
    i, n = 0, len(loose_sorted)

    def sized(h: str) -> tuple[str, int, int | None] | None:
        try:
            return h, os.stat(layout.loose_path(h)).st_size, None
        except FileNotFoundError:
            # packed and cleaned meanwhile, perhaps after the page of rows was read: the
            # packer committed the row before it removed the file, so it is in the index now
            row = index.lookup(h)
            return None if row is None else (h, row[L_SIZE], row[L_ID])

    for row in packed:
        while i < n and loose_sorted[i] < row[0]:
            item = sized(loose_sorted[i])
            if item is not None:
                yield item
            i += 1
        if i < n and loose_sorted[i] == row[0]:
            i += 1
        yield row
    for h in loose_sorted[i:]:
        item = sized(h)
        if item is not None:
            yield item


#: the shortest prefix resolve_prefix looks up (shorter ones name too many objects to be useful)
MIN_PREFIX = 8


def resolve_prefix(layout: Layout, index: IndexAPI, prefix: str) -> str | None:
    """The one key (loose or packed) that starts with `prefix`, or None (none, or ambiguous)."""
    found = keys_with_prefix(layout, index, prefix)
    return found[0] if len(found) == 1 else None


def keys_with_prefix(layout: Layout, index: IndexAPI, prefix: str) -> list[str]:
    """The keys (loose or packed) that start with `prefix` (at least MIN_PREFIX lowercase hex
    digits, shorter than a key), sorted; at most 2 of the packed ones (enough to tell one from
    several). Empty for a prefix that is not one."""
    if not MIN_PREFIX <= len(prefix) < layout.hash_length or prefix.strip("0123456789abcdef"):
        return []
    found = set(index.with_prefix(prefix))
    n = layout.prefix_len
    shard = prefix[:n] if n else ""
    if len(shard) == n:  # the prefix names one shard folder
        found.update(h for h in _loose.list_shard(layout, shard) if h.startswith(prefix))
    else:  # pragma: no cover - loose_prefix_len > 8: look in every shard it may be in
        for name in _loose.list_shards(layout):
            if name.startswith(prefix):
                found.update(_loose.list_shard(layout, name))
    return sorted(found)


def entry_by_id(index: IndexAPI, rowid: int) -> tuple[str, int] | None:
    """(hashkey, size) of the packed object with this index row id, or None."""
    row = index.by_id(rowid)
    return None if row is None else (row[L_HASHKEY], row[L_SIZE])
