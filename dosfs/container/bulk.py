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
from bisect import bisect_right
from collections.abc import Generator, Iterable, Iterator, Sequence
from itertools import compress, islice, repeat
from operator import add, itemgetter, le, sub
from typing import Any, NamedTuple, cast

from dosfs.container import loose as _loose
from dosfs.container.config import Layout
from dosfs.container.decoding import check_hash, decode
from dosfs.container.errors import CorruptObject
from dosfs.container.index import FullRow
from dosfs.container.index_contract import IndexAPI
from dosfs.container.index_sql import (
    F_COMPRESSED,
    F_HASHKEY,
    F_LENGTH,
    F_OFFSET,
    F_PACK,
    F_SIZE,
    L_HASHKEY,
    L_ID,
    L_SIZE,
)
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


class Batch(NamedTuple):
    """Objects of one step, as parallel sequences: all bytes (a window's pieces), all None
    (missing, or meta only), or one ObjectReader. Columns, not a tuple per object: 10^5
    tuples that live a little kept the garbage collector busy for a tenth of a bulk read."""

    keys: Sequence[str]
    payloads: Sequence[Payload]
    infos: Sequence[Info]


_first = itemgetter(F_HASHKEY)
_flag = itemgetter(F_COMPRESSED)
_size = itemgetter(F_SIZE)
_offset = itemgetter(F_OFFSET)
_length = itemgetter(F_LENGTH)


def as_meta(info: Info) -> ObjectMeta:
    if isinstance(info, ObjectMeta):
        return info
    _h, compressed, size, offset, length, pack_id = info
    return new_meta(ObjectType.PACKED, size, pack_id, bool(compressed), offset, length)


def _rounds(items: Iterable[str], size: int) -> Iterator[list[str]]:
    """Distinct keys in rounds of at most `size` (a key repeated in a later round is dropped).
    Keys are remembered across rounds only when there is a next round (most calls have one)."""
    it = iter(items)
    seen: set[str] = set()
    chunk = list(islice(it, size))
    while chunk:
        following = list(islice(it, size))
        fresh = list(dict.fromkeys(chunk))
        if seen:
            fresh = [h for h in fresh if h not in seen]
        if following:
            seen.update(fresh)
        if fresh:
            yield fresh
        chunk = following


def iter_objects(
    resolver: Resolver,
    hashkeys: Iterable[str],
    skip_if_missing: bool,
    with_content: bool,
    verify: bool = False,
) -> Iterator[Batch]:
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
                    yield Batch(list(map(_first, rows)), [None] * len(rows), rows)
                else:
                    yield from _read_group(resolver, source, rows, hash_type)
            elif loose is not None:
                h, pinned, size = loose
                if pinned is None:
                    yield Batch([h], [None], [new_meta(ObjectType.LOOSE, size)])
                else:
                    reader = loose_reader(h, pinned, size)
                    yield Batch([h], [reader], [reader.meta])  # one open descriptor at a time
        if not skip_if_missing and (missing or invalid):
            absent = missing + invalid
            yield Batch(absent, [None] * len(absent), [missing_meta()] * len(absent))


def _windows(
    offsets: Sequence[int], ends: list[int], gap: int
) -> list[tuple[int, int, int, int]]:
    """How a pack's objects (sorted by offset; `ends` = offset + length) are read: (i, j,
    start, end) reads objects i..j-1 as one window [start, end) of at most WINDOW bytes,
    bridging gaps of at most `gap` (the source's bulk_gap); an object longer than WINDOW is
    a window of its own.

    Computed per window, not per object (bisect over the ends, the big gaps listed by C
    loops): a bulk read of 10^5 small objects has a few windows and spent ~10% of its time
    here when this walked the rows. Ends that go backwards (overlapping rows: a damaged
    index) take the walk."""
    n = len(offsets)
    if n > 1 and not all(map(le, ends, islice(ends, 1, None))):
        return _windows_walk(offsets, ends, gap)
    window = WINDOW
    # k such that the gap before object k is too big to read through
    breaks = list(compress(range(1, n), map(gap.__lt__, map(sub, islice(offsets, 1, None),
                                                                   ends))))
    out = []
    i = 0
    while i < n:
        start = offsets[i]
        if ends[i] - start > window:
            j = i + 1
        else:
            j = bisect_right(ends, start + window, i + 1)
            b = bisect_right(breaks, i)
            if b < len(breaks) and breaks[b] < j:
                j = breaks[b]
        out.append((i, j, start, ends[j - 1]))
        i = j
    return out


def _windows_walk(
    offsets: Sequence[int], ends: list[int], gap: int
) -> list[tuple[int, int, int, int]]:
    """_windows one object at a time (for rows whose ends are not in order)."""
    out = []
    i = 0
    n = len(offsets)
    while i < n:
        start, end = offsets[i], ends[i]
        j = i + 1
        if end - start <= WINDOW:
            while j < n:
                o_end = ends[j]
                if o_end - offsets[j] > WINDOW or o_end - start > WINDOW or offsets[j] - end > gap:
                    break
                end = max(end, o_end)
                j += 1
        out.append((i, j, start, end))
        i = j
    return out


def _read_group(
    resolver: Resolver, source: PackSource, group: list[FullRow], hash_type: str
) -> Iterator[Batch]:
    """Objects of one pack, sorted by offset, read in big windows: one batch per window. The
    source is told every window first (a remote one fetches them ahead of the reads, paced by
    them). A window of plain objects is cut by C loops (slices mapped over the buffer, nothing
    kept per object but its bytes)."""
    keys = list(map(_first, group))
    offsets = list(map(_offset, group))
    lengths = list(map(_length, group))
    ends = list(map(add, offsets, lengths))
    plain = not any(map(_flag, group)) and list(map(_size, group)) == lengths
    windows = _windows(offsets, ends, source.bulk_gap)
    source.will_read([(s, e) for _i, _j, s, e in windows])
    try:
        yield from _read_windows(resolver, source, group, windows, hash_type,
                                 (keys, offsets, lengths, plain))
    finally:
        source.will_read([])  # over (or abandoned): nothing more is fetched for it


def _read_windows(
    resolver: Resolver,
    source: PackSource,
    group: list[FullRow],
    windows: list[tuple[int, int, int, int]],
    hash_type: str,
    columns: tuple[list[str], list[int], list[int], bool],
) -> Iterator[Batch]:
    keys, offsets, lengths, plain = columns
    for i, j, start, end in windows:
        if lengths[i] > WINDOW:
            row = group[i]
            h = row[F_HASHKEY]
            reader = reader_for(h, source, row[1:], resolver.restart_lookup(h, row[1:]))
            yield Batch([h], [reader], [row])
            continue
        buf = source.read_at(start, end - start)
        if not plain or len(buf) != end - start:
            yield _cut_window(group[i:j], buf, start, end, hash_type)
            continue
        rel = list(map(sub, offsets[i:j], repeat(start)))
        pieces = list(map(buf.__getitem__, map(slice, rel, map(add, rel, lengths[i:j]))))
        if hash_type:
            for h, piece, o in zip(keys[i:j], pieces, offsets[i:j], strict=True):
                check_hash(h, hash_type, piece, f"pack {group[i][F_PACK]} offset {o}")
        yield Batch(keys[i:j], pieces, group[i:j])


def _cut_window(
    rows: list[FullRow], buf: bytes, start: int, end: int, hash_type: str
) -> Batch:
    """The pieces of one window one by one: compressed objects, short reads, odd rows."""
    pieces: list[Payload] = []
    short = len(buf) != end - start
    for hk, compressed, size, o, ln, pack_id in rows:
        rel = o - start
        if short and rel + ln > len(buf):
            raise CorruptObject(hk, f"pack {pack_id} ends before the object ({o}+{ln})")
        if compressed or ln != size:
            piece = decode(hk, compressed, size, ln, buf[rel : rel + ln])
        else:
            piece = buf[rel : rel + ln]
        if hash_type:
            check_hash(hk, hash_type, piece, f"pack {pack_id} offset {o}")
        pieces.append(piece)
    return Batch(list(map(_first, rows)), pieces, rows)


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
        first = batch.payloads[0]
        if first is None or type(first) is bytes:  # all bytes (verified), or all None
            out.update(zip(batch.keys, cast("Sequence[bytes | None]", batch.payloads),
                           strict=True))
            continue
        for h, payload in zip(batch.keys, batch.payloads, strict=True):
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
        for h, payload, info in zip(*batch, strict=True):
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
