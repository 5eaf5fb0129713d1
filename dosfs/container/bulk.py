"""Bulk reads and listing.

Bulk reads take keys in chunks, resolve each chunk with one short read transaction (IN queries of
900 keys), group the packed rows by pack and sort them by offset, then read each pack in large
sequential windows (up to WINDOW bytes, bridging gaps up to GAP) and slice the small objects out
of the window; objects larger than a window get their own pinned reader. Then the loose ones,
then (index again) whatever was packed meanwhile, then the missing ones.

Listing merges, shard by shard, the loose names of the shard (listed first) with the packed keys
of the same hash range (read after the listing, in keyset pages): since a packer commits rows
before it removes loose files, an object is always in one of the two.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Generator, Iterable, Iterator
from itertools import islice
from typing import TYPE_CHECKING

from dosfs.container import loose as _loose
from dosfs.container.errors import CorruptObject
from dosfs.container.meta import MISSING_META, ObjectMeta, ObjectType
from dosfs.container.packs import PackFd
from dosfs.container.streams import ObjectReader, RawReader, pread_exact

if TYPE_CHECKING:
    from dosfs.container.container import Container
    from dosfs.container.index import FullRow

#: keys resolved per round (memory of one round is proportional to this)
KEYS_PER_ROUND = 100_000
#: largest single pread of a pack window
WINDOW = 8 * 1024 * 1024
#: unreferenced bytes between two objects that are still read through rather than skipped
GAP = 256 * 1024
_MAX_ROUNDS = 50

Payload = bytes | memoryview | ObjectReader | None
#: packed objects come with their raw index row (meta is built only if someone asks)
Info = ObjectMeta | tuple[str, int, int, int, int, int]


def as_meta(info: Info) -> ObjectMeta:
    if isinstance(info, ObjectMeta):
        return info
    _h, compressed, size, offset, length, pack_id = info
    return ObjectMeta(ObjectType.PACKED, size, pack_id, bool(compressed), offset, length)


def _chunks(items: Iterable[str], size: int) -> Iterator[list[str]]:
    it = iter(items)
    while True:
        chunk = list(islice(it, size))
        if not chunk:
            return
        yield chunk


Item = tuple[str, Payload, Info]


def iter_objects(
    container: Container, hashkeys: Iterable[str], skip_if_missing: bool, with_content: bool
) -> Iterator[list[Item]]:
    """Batches of (hashkey, payload, info). info is an ObjectMeta or a packed row (as_meta);
    payload is bytes/memoryview (small packed objects, sliced out of one window read), an
    ObjectReader (loose or large: always alone in its batch; the caller closes it), or None
    (missing, or meta only). Batches keep the per-object overhead of generators low."""
    layout = container.layout
    for chunk in _chunks(hashkeys, KEYS_PER_ROUND):
        distinct = list(dict.fromkeys(chunk)) if len(chunk) > 1 else chunk
        invalid: list[str] = []
        if layout.all_valid_hashkeys(distinct):
            valid = distinct
        else:
            valid = [h for h in distinct if layout.is_valid_hashkey(h)]
            invalid = [h for h in distinct if not layout.is_valid_hashkey(h)]
        missing = yield from _resolve_round(container, valid, with_content)
        if not skip_if_missing and (missing or invalid):
            yield [(h, None, MISSING_META) for h in missing + invalid]


def _resolve_round(
    container: Container, keys: list[str], with_content: bool
) -> Generator[list[Item], None, list[str]]:
    """Yield every key of `keys` that exists; return the missing ones."""
    index = container.index
    layout = container.layout
    todo = keys
    loose_done = False
    missing: list[str] = []
    for _ in range(_MAX_ROUNDS):
        if not todo:
            break
        rows, version = index.lookup_many(todo)
        retry: list[str] = []
        by_pack: dict[int, list[FullRow]] = {}
        for row in rows:
            group = by_pack.get(row[5])
            if group is None:
                by_pack[row[5]] = [row]
            else:
                group.append(row)
        for pack_id in sorted(by_pack):
            group = by_pack[pack_id]
            group.sort(key=_offset_of)
            if not with_content:
                yield [(row[0], None, row) for row in group]
                continue
            try:
                pfd = container.pack_files.get(pack_id, version, index.data_version)
            except FileNotFoundError:
                if index.data_version() != version:
                    retry.extend(row[0] for row in group)
                    continue
                raise CorruptObject(group[0][0], f"pack file {pack_id} is missing") from None
            if pfd is None:
                retry.extend(row[0] for row in group)
                continue
            yield from _read_group(pfd, group)
        if len(rows) == len(todo):
            absent: list[str] = []
        else:
            found = {row[0] for row in rows}
            absent = [h for h in todo if h not in found]
        if not loose_done:
            recheck: list[str] = []
            metas: list[Item] = []
            for h in absent:
                item = _open_loose(layout.loose_path(h), h, with_content)
                if item is None:
                    recheck.append(h)
                elif with_content:
                    yield [item]  # one open descriptor at a time
                else:
                    metas.append(item)
            if metas:
                yield metas
            loose_done = True
            # not loose either: packed meanwhile? (rows are committed before loose removal)
            if recheck:
                again = {row[0] for row in index.lookup_many(recheck)[0]}
                missing = [h for h in recheck if h not in again]
                retry.extend(h for h in recheck if h in again)
        else:
            missing.extend(absent)
        todo = retry
    else:
        raise CorruptObject(todo[0], "objects kept moving while being read")
    return missing


def _open_loose(path: str, h: str, with_content: bool) -> Item | None:
    if not with_content:
        try:
            return h, None, ObjectMeta(ObjectType.LOOSE, os.stat(path).st_size)
        except FileNotFoundError:
            return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    st = os.fstat(fd)
    meta = ObjectMeta(ObjectType.LOOSE, st.st_size)
    return h, RawReader(h, PackFd(fd, st.st_dev, st.st_ino, None), 0, st.st_size, meta), meta


def _offset_of(row: FullRow) -> int:
    return row[3]


def _read_group(pfd: PackFd, group: list[FullRow]) -> Iterator[list[Item]]:
    """Objects of one pack, sorted by offset, read in big windows: one batch per window."""
    from dosfs.container.container import Container

    i = 0
    n = len(group)
    decompress = zlib.decompress
    while i < n:
        row = group[i]
        h, _c, _s, offset, length, _p = row
        if length > WINDOW:
            yield [(h, Container._reader_for(h, pfd, row[1:]), row)]
            i += 1
            continue
        start, end = offset, offset + length
        j = i + 1
        while j < n:
            r = group[j]
            o_end = r[3] + r[4]
            if r[4] > WINDOW or o_end - start > WINDOW or r[3] - end > GAP:
                break
            if o_end > end:
                end = o_end
            j += 1
        buf = pread_exact(pfd.fd, end - start, start)
        short = len(buf) != end - start
        batch: list[Item] = []
        append = batch.append
        for r in group[i:j]:
            hk, compressed, size, o, ln, _p = r
            rel = o - start
            if short and rel + ln > len(buf):
                raise CorruptObject(hk, f"pack {r[5]} ends before the object ({o}+{ln})")
            if compressed:
                try:
                    piece = decompress(buf[rel : rel + ln])
                except zlib.error as exc:
                    raise CorruptObject(hk, f"zlib error: {exc}") from None
                if len(piece) != size:
                    raise CorruptObject(hk, f"read {len(piece)} bytes, index says {size}")
            elif ln == size:
                piece = buf[rel : rel + ln]
            else:
                raise CorruptObject(hk, f"uncompressed but length {ln} != size {size}")
            append((hk, piece, r))
        yield batch
        i = j


def iter_hashkeys(container: Container, after: str | None = None) -> Iterator[str]:
    """Ascending keys of loose ∪ packed objects, each once, strictly greater than `after`."""
    layout = container.layout
    index = container.index
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
