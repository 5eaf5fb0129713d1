"""Index tables: the published index as immutable, sorted, fixed-width records that a reader
fetches a few KiB at a time (docs/format.md, "Index tables").

Why this shape: a host must not download the whole index to find one object (at 10^7 objects
the SQLite snapshot is ~1 GB). Records are sorted by key and bucketed by the key's first `bits`
bits; a fan-out entry per bucket says where its records start, how many there are and their
crc32. So a cold lookup is one ranged GET of a fan-out page (which verifies by the page table in
the head) and one of a bucket (~64 records, which verifies by its fan-out entry). The head is
verified by the sha256 the generation names, and the table's key is the sha256 of its bytes, so
generations share the tables that did not change and a flipped byte anywhere is detected.

    [0, 64)                 header: magic, records, bits, version (little endian)
    [64, 64 + 4·P)          crc32 of each fan-out page (P pages of FAN_PER_PAGE entries)
    [.., + 12·2^bits)       fan-out: per bucket (start, count, crc32 of its records)
    [.., + 64·records)      records: key (32 B), pack id, flags, offset, length, size
"""

from __future__ import annotations

import hashlib
import os
import struct
import sys
import zlib
from array import array
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from dosfs.container.errors import InvalidContainer
from dosfs.remote.url import RemoteError

MAGIC = b"DOSFSTB1"
VERSION = 1
HEADER = 64
RECORD = 64
FAN = struct.Struct("<III")  # start, count, crc32 of the bucket's records
FAN_PER_PAGE = 512
FAN_PAGE = FAN.size * FAN_PER_PAGE
_HEAD = struct.Struct("<8sQBB")
_REC = struct.Struct("<32sIB3xQQQ")  # key, pack id, flags, offset, length, size
COMPRESSED = 1
TOMBSTONE = 2
#: records per bucket a table aims at (64 records: a 4 KiB GET per cold lookup)
BUCKET_TARGET = 64
#: the most bits of fan-out (2^24 buckets: 10^9 records at the target)
MAX_BITS = 24

#: (hashkey, compressed, size, offset, length, pack_id): a live row, as the container's index
Row = tuple[str, int, int, int, int, int]


class TableCorrupt(RemoteError, InvalidContainer):
    """Bytes of an index table that do not match their checksum (never used as rows): a
    RemoteError for RemoteContainer's callers, a damaged index (EIO and an error line) for
    the mount."""


@dataclass(frozen=True, slots=True)
class TableRef:
    """What a generation says about one of its tables."""

    key: str  # relative to the prefix: index/<sha256>.tbl
    records: int
    bits: int
    size: int
    head: str  # sha256 of [0, head_size): the header and the fan-out page table

    @property
    def buckets(self) -> int:
        return 1 << self.bits

    @property
    def pages(self) -> int:
        return -(-self.buckets // FAN_PER_PAGE)

    @property
    def head_size(self) -> int:
        return HEADER + 4 * self.pages

    @property
    def fan_offset(self) -> int:
        return self.head_size

    @property
    def records_offset(self) -> int:
        return self.fan_offset + FAN.size * self.buckets

    def page_range(self, page: int) -> tuple[int, int]:
        lo = self.fan_offset + page * FAN_PAGE
        return lo, min(lo + FAN_PAGE, self.records_offset)

    def bucket_of(self, key: bytes) -> int:
        return int.from_bytes(key[:4], "big") >> (32 - self.bits) if self.bits else 0

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "records": self.records, "bits": self.bits, "size": self.size,
                "head": self.head}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TableRef:
        return cls(str(data["key"]), int(data["records"]), int(data["bits"]), int(data["size"]),
                   str(data["head"]))


def bits_for(records: int) -> int:
    """Fan-out bits so that buckets hold about BUCKET_TARGET records."""
    bits = 0
    while (records >> bits) > BUCKET_TARGET and bits < MAX_BITS:
        bits += 1
    return bits


def encode(hashkey: str, row: Row | None) -> bytes:
    """One record: a live row, or a tombstone (None: the key is gone in this generation)."""
    key = bytes.fromhex(hashkey)
    if row is None:
        return _REC.pack(key, 0, TOMBSTONE, 0, 0, 0)
    _h, compressed, size, offset, length, pack_id = row
    return _REC.pack(key, pack_id, COMPRESSED if compressed else 0, offset, length, size)


def decode(record: bytes | memoryview) -> tuple[str, Row | None]:
    key, pack_id, flags, offset, length, size = _REC.unpack(record)
    hashkey = key.hex()
    if flags & TOMBSTONE:
        return hashkey, None
    return hashkey, (hashkey, flags & COMPRESSED, size, offset, length, pack_id)


class TableWriter:
    """Writes a table from records given in ascending key order (streamed: memory holds the
    fan-out only, 12 B per bucket), then names it by its sha256."""

    def __init__(self, path: str, expected: int) -> None:
        self.path = path
        self.bits = bits_for(expected)
        self.fan = array("I", bytes(FAN.size * (1 << self.bits)))
        self._records = open(path + ".records", "wb")  # noqa: SIM115 - closed in finish()
        self.count = 0
        self._last = b""
        self._bucket = -1
        self._crc = 0
        self._start = 0

    def add(self, hashkey: str, row: Row | None) -> None:
        record = encode(hashkey, row)
        key = record[:32]
        if key <= self._last:
            raise ValueError(f"index table records out of order at {hashkey}")
        self._last = key
        bucket = int.from_bytes(key[:4], "big") >> (32 - self.bits) if self.bits else 0
        if bucket != self._bucket:
            self._close_bucket()
            self._bucket, self._crc, self._start = bucket, 0, self.count
        self._crc = zlib.crc32(record, self._crc)
        self._records.write(record)
        self.count += 1

    def _close_bucket(self) -> None:
        if self._bucket >= 0:
            i = 3 * self._bucket
            self.fan[i : i + 3] = array("I", [self._start, self.count - self._start, self._crc])

    def finish(self, name_prefix: str = "index/") -> TableRef:
        self._close_bucket()
        self._records.close()
        start = 0
        for b in range(1 << self.bits):  # empty buckets start where the next records do
            i = 3 * b
            if self.fan[i + 1] == 0:
                self.fan[i] = start
            start = self.fan[i] + self.fan[i + 1]
        fan = self.fan.tobytes() if sys.byteorder == "little" else _swapped(self.fan)
        crcs = array("I", [zlib.crc32(fan[p : p + FAN_PAGE]) for p in range(0, len(fan), FAN_PAGE)])
        header = _HEAD.pack(MAGIC, self.count, self.bits, VERSION).ljust(HEADER, b"\0")
        head = header + (crcs.tobytes() if sys.byteorder == "little" else _swapped(crcs))
        digest = hashlib.sha256()
        with open(self.path, "wb") as out, open(self.path + ".records", "rb") as records:
            for piece in (head, fan):
                digest.update(piece)
                out.write(piece)
            while piece := records.read(1 << 20):
                digest.update(piece)
                out.write(piece)
            size = out.tell()
        os.unlink(self.path + ".records")
        return TableRef(f"{name_prefix}{digest.hexdigest()}.tbl", self.count, self.bits, size,
                        hashlib.sha256(head).hexdigest())


def _swapped(values: array[int]) -> bytes:  # pragma: no cover - big-endian hosts only
    copy = array("I", values)
    copy.byteswap()
    return copy.tobytes()


def _words(data: bytes) -> array[int]:
    words = array("I", data)
    if sys.byteorder != "little":  # pragma: no cover - big-endian hosts only
        words.byteswap()
    return words


@dataclass(frozen=True, slots=True)
class Head:
    """A verified head: record count, bits and the crc32 of every fan-out page."""

    ref: TableRef
    page_crcs: array[int]


def parse_head(ref: TableRef, data: bytes) -> Head:
    if hashlib.sha256(data).hexdigest() != ref.head or len(data) != ref.head_size:
        raise TableCorrupt(f"index table {ref.key}: its head does not match the generation")
    magic, records, bits, version = _HEAD.unpack_from(data)
    if magic != MAGIC or version != VERSION or records != ref.records or bits != ref.bits:
        raise TableCorrupt(f"index table {ref.key}: unknown or inconsistent header")
    return Head(ref, _words(data[HEADER:]))


def parse_fan_page(head: Head, page: int, data: bytes) -> array[int]:
    """(start, count, crc) triples of one verified fan-out page."""
    if zlib.crc32(data) != head.page_crcs[page]:
        raise TableCorrupt(f"index table {head.ref.key}: fan-out page {page} is corrupt")
    return _words(data)


def check_bucket(ref: TableRef, bucket: int, crc: int, data: bytes) -> None:
    if zlib.crc32(data) != crc:
        raise TableCorrupt(f"index table {ref.key}: bucket {bucket} is corrupt")


class _Keys:
    """The keys of a run of records, as a sequence bisect can search."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data) // RECORD

    def __getitem__(self, i: int) -> bytes:
        return self.data[i * RECORD : i * RECORD + 32]


def find(data: bytes, key: bytes) -> int:
    """Position of `key` among the records in `data`, or -1."""
    keys = _Keys(data)
    i = bisect_left(keys, key)
    return i if i < len(keys) and keys[i] == key else -1


def first_after(data: bytes, key: bytes) -> int:
    """Position of the first record whose key is greater than `key`."""
    keys = _Keys(data)
    i = bisect_left(keys, key)
    return i + 1 if i < len(keys) and keys[i] == key else i


def records(data: bytes) -> Iterator[tuple[str, Row | None]]:
    view = memoryview(data)
    for pos in range(0, len(data) - len(data) % RECORD, RECORD):
        yield decode(view[pos : pos + RECORD])


def parse_whole(ref: TableRef, data: bytes) -> bytes:
    """The records of a table fetched whole, verified by its name (the sha256 of its bytes)."""
    expected = ref.key.rsplit("/", 1)[-1].split(".")[0]
    if len(data) != ref.size or hashlib.sha256(data).hexdigest() != expected:
        raise TableCorrupt(f"index table {ref.key}: its bytes do not match its name")
    return data[ref.records_offset :]
