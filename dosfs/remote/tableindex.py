"""TableIndex: the container's index contract (container/index_contract.py) over a published
generation's index tables (remote/table.py), read on demand.

Why layers: a generation names its tables oldest first (a base, then small runs); a key's row is
the one in the newest table that holds it, and a tombstone there means "gone". Small tables are
fetched whole when the generation opens (verified by their names) and merged into one in-memory
layer; big ones are read page by page: a cold lookup costs one fan-out page and one bucket, each a
ranged GET of a few KiB through the extent cache (bounded, on disk for a mount) and verified by
its crc before any of its rows is used. Row ids are positions (a layer's records numbered after
the layers below it) from FIRST_ID on: above any id the mount turns into an inode number, so an
s3 mount numbers objects by their names, and an inode stays the same object when the mount
switches to a newer generation (where positions differ).

Reads may wait on the network, and follow the pack store's rules: inside `local_only()` (the FUSE
loop) only cached bytes are used and anything else is WouldBlock (the fetch started first).
"""

from __future__ import annotations

import heapq
import sqlite3
import threading
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from dosfs.container.errors import ModificationNotAllowed
from dosfs.container.index_sql import FullRow, IdRow, LookupRow, PackRow
from dosfs.remote import table as tb
from dosfs.remote.layout import Generation, Segment
from dosfs.remote.packstore import RemotePackStore

#: tables up to this size are fetched whole when a generation opens (runs are, bases are not)
WHOLE = 1024 * 1024
#: parsed fan-out pages and buckets kept in memory (per paged table; the bytes stay in the
#: extent cache): ~6 KiB and ~4 KiB each
FAN_PAGES = 256
BUCKETS = 2048
#: buckets read by one GET while scanning (a listing): ~256 KiB
SCAN_BUCKETS = 64
#: keys whose buckets are fetched together by lookup_many (stays within BUCKETS)
MANY_CHUNK = 1024
#: the stamp of every row: a generation never changes
STAMP = 0
#: the row id of the first record (see the module docstring)
FIRST_ID = 1 << 40

Found = tuple[tb.Row | None, int]  # a row (None: a tombstone) and its position in its layer


class _Overlay:
    """Small tables, merged in memory (newest wins; tombstones kept for the layers below)."""

    def __init__(self) -> None:
        self.rows: dict[str, tb.Row | None] = {}
        self.keys: list[str] = []
        self.pos: dict[str, int] = {}

    def add(self, data: bytes) -> None:
        for hashkey, row in tb.records(data):
            self.rows[hashkey] = row

    def seal(self) -> None:
        self.keys = sorted(self.rows)
        self.pos = {h: i for i, h in enumerate(self.keys)}

    @property
    def size(self) -> int:
        return len(self.keys)

    def get(self, hashkey: str) -> Found | None:
        if hashkey not in self.rows:
            return None
        return self.rows[hashkey], self.pos[hashkey]

    def key_at(self, position: int) -> str | None:
        return self.keys[position] if 0 <= position < len(self.keys) else None

    def scan(self, after: str) -> Iterator[tuple[str, tb.Row | None, int]]:
        for i in range(bisect_right(self.keys, after), len(self.keys)):
            h = self.keys[i]
            yield h, self.rows[h], i


class _Paged:
    """One big table read by pages (see the module docstring)."""

    def __init__(self, ref: tb.TableRef, read: Callable[[tb.TableRef, int, int], bytes]) -> None:
        self.ref = ref
        self._read = read
        self.head = tb.parse_head(ref, read(ref, 0, ref.head_size))
        self._pages: dict[int, Any] = {}
        self._buckets: dict[int, bytes] = {}
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return self.ref.records

    def _page(self, page: int) -> Any:
        fan = self._pages.get(page)
        if fan is None:
            lo, hi = self.ref.page_range(page)
            fan = tb.parse_fan_page(self.head, page, self._read(self.ref, lo, hi))
            with self._lock:
                if len(self._pages) >= FAN_PAGES:
                    self._pages.pop(next(iter(self._pages)))
                self._pages[page] = fan
        return fan

    def fan(self, bucket: int) -> tuple[int, int, int]:
        fan = self._page(bucket // tb.FAN_PER_PAGE)
        i = 3 * (bucket % tb.FAN_PER_PAGE)
        return fan[i], fan[i + 1], fan[i + 2]

    def _bucket(self, bucket: int) -> tuple[int, bytes]:
        start, count, crc = self.fan(bucket)
        data = self._buckets.get(bucket)
        if data is None:
            lo = self.ref.records_offset + start * tb.RECORD
            data = self._read(self.ref, lo, lo + count * tb.RECORD) if count else b""
            tb.check_bucket(self.ref, bucket, crc, data)
            with self._lock:
                if len(self._buckets) >= BUCKETS:
                    self._buckets.pop(next(iter(self._buckets)))
                self._buckets[bucket] = data
        return start, data

    def get(self, hashkey: str) -> Found | None:
        key = bytes.fromhex(hashkey)
        start, data = self._bucket(self.ref.bucket_of(key))
        i = tb.find(data, key)
        if i < 0:
            return None
        _h, row = tb.decode(data[i * tb.RECORD : (i + 1) * tb.RECORD])
        return row, start + i

    def key_at(self, position: int) -> str | None:
        """The key recorded at `position` (unverified: callers look it up again)."""
        if not 0 <= position < self.ref.records:
            return None
        lo = self.ref.records_offset + position * tb.RECORD
        return self._read(self.ref, lo, lo + 32).hex()

    def prefetch(self, keys: Iterable[str], plan: Callable[[tb.TableRef, int, int], None]) -> None:
        """Start the GETs of the fan-out pages, then the buckets, that `keys` need."""
        buckets = sorted({self.ref.bucket_of(bytes.fromhex(h)) for h in keys})
        for page in sorted({b // tb.FAN_PER_PAGE for b in buckets} - set(self._pages)):
            plan(self.ref, *self.ref.page_range(page))
        ranges: list[list[int]] = []
        for b in buckets:
            if b in self._buckets:
                continue
            start, count, _crc = self.fan(b)
            lo = self.ref.records_offset + start * tb.RECORD
            hi = lo + count * tb.RECORD
            if ranges and lo - ranges[-1][1] < 64 * 1024:
                ranges[-1][1] = hi
            elif count:
                ranges.append([lo, hi])
        for lo, hi in ranges:
            plan(self.ref, lo, hi)

    def scan(self, after: str) -> Iterator[tuple[str, tb.Row | None, int]]:
        key = bytes.fromhex(after) if after else b""
        bucket = self.ref.bucket_of(key) if key else 0
        while bucket < self.ref.buckets:
            last = min(self.ref.buckets, bucket + SCAN_BUCKETS)
            fans = [self.fan(b) for b in range(bucket, last)]
            lo = self.ref.records_offset + fans[0][0] * tb.RECORD
            hi = self.ref.records_offset + (fans[-1][0] + fans[-1][1]) * tb.RECORD
            data = self._read(self.ref, lo, hi) if hi > lo else b""
            for b, (start, count, crc) in zip(range(bucket, last), fans, strict=True):
                piece = data[(start - fans[0][0]) * tb.RECORD :][: count * tb.RECORD]
                tb.check_bucket(self.ref, b, crc, piece)
                first = tb.first_after(piece, key) if key else 0
                for i in range(first, count):
                    h, row = tb.decode(piece[i * tb.RECORD : (i + 1) * tb.RECORD])
                    yield h, row, start + i
            bucket = last


Layer = _Overlay | _Paged


class TableIndex:
    """The index of one generation (see the module docstring); read-only."""

    def __init__(self, generation: Generation, packs: RemotePackStore) -> None:
        self.generation = generation
        self._packs = packs
        self.layers: list[Layer] = []
        overlay: _Overlay | None = None
        for ref in generation.tables:
            if ref.size <= WHOLE:
                if overlay is None:
                    overlay = _Overlay()
                    self.layers.append(overlay)
                overlay.add(tb.parse_whole(ref, self._read(ref, 0, ref.size)))
            else:
                overlay = None
                self.layers.append(_Paged(ref, self._read))
        for layer in self.layers:
            if isinstance(layer, _Overlay):
                layer.seal()
        self._first_id = [FIRST_ID]  # row id of each layer's first record
        for layer in self.layers:
            self._first_id.append(self._first_id[-1] + layer.size)

    def _read(self, ref: tb.TableRef, lo: int, hi: int) -> bytes:
        seg = Segment(ref.key, ref.size)
        return self._packs.collect(self._packs.plan(seg, lo, hi))

    def _plan(self, ref: tb.TableRef, lo: int, hi: int) -> None:
        self._packs.plan(Segment(ref.key, ref.size), lo, hi)

    # -- lookups -------------------------------------------------------------------------------
    def _find(self, hashkey: str) -> tuple[tb.Row, int] | None:
        for n in range(len(self.layers) - 1, -1, -1):
            found = self.layers[n].get(hashkey)
            if found is not None:
                row, position = found
                return None if row is None else (row, self._first_id[n] + position)
        return None

    def lookup(self, hashkey: str) -> LookupRow | None:
        found = self._find(hashkey)
        if found is None:
            return None
        (_h, compressed, size, offset, length, pack_id), rowid = found
        return compressed, size, offset, length, pack_id, STAMP, rowid

    def entry(self, hashkey: str) -> tuple[int, int] | None:
        found = self._find(hashkey)
        return None if found is None else (found[1], found[0][2])

    def entry_recent(self, hashkey: str, max_age: float) -> tuple[int, int] | None:
        return self.entry(hashkey)

    def release_snapshot(self) -> None:
        """Nothing is held: a generation never changes."""

    def by_id(self, rowid: int) -> IdRow | None:
        n = bisect_right(self._first_id, rowid) - 1
        if not 0 <= n < len(self.layers):
            return None
        hashkey = self.layers[n].key_at(rowid - self._first_id[n])
        row = None if hashkey is None else self.lookup(hashkey)
        if hashkey is None or row is None or row[6] != rowid:
            return None  # shadowed by a newer table, or not a record
        return (*row, hashkey)

    def stamp(self) -> int:
        return STAMP

    def prefetch(self, hashkeys: Sequence[str]) -> None:
        """Start every GET the lookups of `hashkeys` need, so they run concurrently."""
        pending = [h for h in hashkeys if not any(
            isinstance(layer, _Overlay) and h in layer.rows for layer in self.layers)]
        for layer in self.layers:
            if isinstance(layer, _Paged):
                layer.prefetch(pending, self._plan)

    def lookup_many(self, hashkeys: Sequence[str]) -> tuple[list[FullRow], int]:
        found: list[FullRow] = []
        ordered = sorted(hashkeys)
        for start in range(0, len(ordered), MANY_CHUNK):
            chunk = ordered[start : start + MANY_CHUNK]
            self.prefetch(chunk)
            for h in chunk:
                hit = self._find(h)
                if hit is not None:
                    found.append(hit[0])
        return found, STAMP

    def existing(
        self, hashkeys: Iterable[str], conn: sqlite3.Connection | None = None
    ) -> set[str]:
        rows, _stamp = self.lookup_many(list(dict.fromkeys(hashkeys)))
        return {r[0] for r in rows}

    # -- scans ---------------------------------------------------------------------------------
    def iter_sized(
        self, after: str | None = None, below: str | None = None, page: int = 0
    ) -> Iterator[tuple[str, int, int]]:
        """(hashkey, size, row id) in key order, after < key < below: the layers merged, the
        newest row of a key wins, tombstones hide it."""
        streams = [
            ((h, -n, row, self._first_id[n] + pos) for h, row, pos in layer.scan(after or ""))
            for n, layer in enumerate(self.layers)
        ]
        last = None
        for h, _n, row, rowid in heapq.merge(*streams, key=lambda item: (item[0], item[1])):
            if below is not None and h >= below:
                return
            if h == last:
                continue  # an older layer's row of a key already decided
            last = h
            if row is not None:
                yield h, row[2], rowid

    def iter_rows(self, after: str | None = None) -> Iterator[FullRow]:
        """Every live row in key order (push's merges, validate)."""
        for h, _size, _rowid in self.iter_sized(after):
            found = self._find(h)
            if found is not None:
                yield found[0]

    def iter_hashkeys(
        self, after: str | None = None, below: str | None = None, page: int = 0
    ) -> Iterator[str]:
        for h, _size, _rowid in self.iter_sized(after, below):
            yield h

    def with_prefix(self, prefix: str, limit: int = 2) -> list[str]:
        out: list[str] = []
        for h in self.iter_hashkeys(after=prefix, below=prefix + "g"):  # keys are longer
            if h.startswith(prefix):
                out.append(h)
                if len(out) >= limit:
                    break
        return out

    def iter_pack_rows(self, pack_id: int, page: int = 0) -> Iterator[PackRow]:
        rows = [r for r in self.iter_rows() if r[5] == pack_id]
        rows.sort(key=lambda r: r[3])
        for r in rows:
            found = self._find(r[0])
            rowid = found[1] if found else 0
            yield rowid, r[0], r[1], r[2], r[3], r[4]

    def pack_in_use(self, pack_id: int) -> bool:
        return pack_id in self.generation.packs

    def count(self) -> int:
        if self.generation.objects is not None:
            return self.generation.objects
        return sum(1 for _ in self.iter_sized())

    def sizes(self) -> tuple[int, int]:
        if self.generation.size is not None and self.generation.lengths is not None:
            return self.generation.size, self.generation.lengths
        size = length = 0
        for row in self.iter_rows():
            size += row[2]
            length += row[4]
        return size, length

    def pack_ids(self) -> list[int]:
        return sorted(self.generation.packs)

    def pack_stats(self) -> dict[int, tuple[int, int, int, int]]:
        stats: dict[int, list[int]] = {}
        for _h, _c, size, offset, length, pack_id in self.iter_rows():
            s = stats.setdefault(pack_id, [0, 0, 0, 0])
            s[0] += 1
            s[1] += length
            s[2] = max(s[2], offset + length)
            s[3] += size
        return {p: (s[0], s[1], s[2], s[3]) for p, s in stats.items()}

    # -- upkeep (nothing to do) and writes (never) ---------------------------------------------
    def check(self) -> None:
        """Every page is verified when it is read."""

    def checkpoint(self) -> None:
        """Nothing to checkpoint: the tables are immutable."""

    def keepalive(self) -> None:
        """Nothing to keep open."""

    def close(self) -> None:
        """The bytes live in the extent cache; nothing to release."""

    def _read_only(self) -> ModificationNotAllowed:
        return ModificationNotAllowed("a published generation is read-only")

    def write_conn(self) -> sqlite3.Connection:
        raise self._read_only()

    def insert_rows(self, rows: Sequence[FullRow], conn: sqlite3.Connection) -> None:
        raise self._read_only()

    def delete_hashkeys(self, hashkeys: Sequence[str], conn: sqlite3.Connection) -> set[str]:
        raise self._read_only()

    def execute_write(self, sql: str, params: Sequence[Any] = ()) -> None:
        raise self._read_only()

    def vacuum(self) -> None:
        raise self._read_only()
