"""Checksums of an object's content in fixed blocks, so a read of part of an object is verified
without hashing the whole object first.

Why: the mount must never hand out bytes that did not hash to their name, and sha256 runs at
~1 GB/s here, half the speed the mount serves a 1 GiB object at: hashing on every first read
halved it. When dosfs has hashed an object (it writes it, or a mount verified it whole), it also
knows the xxh3-64 of every BLOCK bytes of the content and records them. A later read, in any
process, checks each block it serves against them (xxh3 runs at ~9 GB/s): a flipped byte is
refused where it is read, the 4 KiB reader of a 1 GiB object is verified too, and nothing is
read twice.

The sums describe the content, not where it lies: they stay right when the object is packed,
compressed or repacked, by dosfs or by disk-objectstore. They live in a side file dosfs owns,
`dosfs-blocksums.sqlite` beside `packs.idx` (never in `packs.idx`). It is advisory: absent,
unreadable or wrong, a reader falls back to hashing the whole object with sha256, and sums that
disagree with bytes which do hash to their name are replaced. They say the bytes are those that
hashed to the name when the sums were taken: protection against corruption, not against someone
who may rewrite both the pack and the side file (who could rewrite anything).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence

import xxhash

from dosfs.container.db import sqlite_uri
from dosfs.container.errors import CorruptObject

log = logging.getLogger("dosfs.container")

#: content bytes per checksum: a read is widened to whole blocks (the mount's reads are
#: 128 KiB-1 MiB and aligned, so sequential reads read nothing twice)
BLOCK = 128 * 1024
#: objects up to this size get no sums: they are hashed whole before their first byte is
#: served (verify.SMALL_VERIFY), which costs less than a side-file lookup
MIN_SIZE = 1 << 20
FILE_NAME = "dosfs-blocksums.sqlite"
#: bytes per block in the blob: xxh3-64, big-endian
DIGEST = 8
ALGORITHM = "xxh3_64"

#: side files this process could not write (warned about once)
_WARNED: set[str] = set()

_SCHEMA = """CREATE TABLE IF NOT EXISTS blocksums (
    hashkey TEXT PRIMARY KEY, size INTEGER NOT NULL, block INTEGER NOT NULL,
    algorithm TEXT NOT NULL, sums BLOB NOT NULL) WITHOUT ROWID"""


def blocks_of(size: int) -> int:
    return -(-size // BLOCK)


class BlockSummer:
    """Sums of a byte stream fed in order (beside the sha256 of a writer or a verifier)."""

    __slots__ = ("_digests", "_fill", "_state", "size")

    def __init__(self) -> None:
        self._digests: list[bytes] = []
        self._state = xxhash.xxh3_64()
        self._fill = 0  # bytes of the current block in _state
        self.size = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        total = view.nbytes
        self.size += total
        pos = 0
        if self._fill:  # finish the current block first
            take = min(BLOCK - self._fill, total)
            self._state.update(view[:take])
            self._fill += take
            pos = take
            if self._fill == BLOCK:
                self._digests.append(self._state.digest())
                self._state.reset()
                self._fill = 0
        while total - pos >= BLOCK:  # whole blocks: one call each, no state
            self._digests.append(xxhash.xxh3_64_digest(view[pos : pos + BLOCK]))
            pos += BLOCK
        if pos < total:
            self._state.update(view[pos:])
            self._fill += total - pos

    def sums(self) -> bytes:
        """The blob of the bytes fed so far (the last block may be partial)."""
        tail = [self._state.digest()] if self._fill else []
        return b"".join(self._digests + tail)


class BlockSums:
    """The sums of one object, and the check of block-aligned bytes against them."""

    __slots__ = ("hashkey", "size", "sums")

    def __init__(self, hashkey: str, size: int, sums: bytes) -> None:
        self.hashkey = hashkey
        self.size = size
        self.sums = sums

    def span(self, offset: int, size: int) -> tuple[int, int]:
        """The whole blocks around [offset, offset+size), clipped to the object."""
        start = offset - offset % BLOCK
        end = min(self.size, -(-(offset + size) // BLOCK) * BLOCK)
        return start, max(start, end)

    def check(self, start: int, data: bytes, where: str) -> None:
        """CorruptObject (BlockMismatch) unless `data`, read at block boundary `start`, has the
        recorded sums, block by block."""
        view = memoryview(data)
        first = start // BLOCK
        if start % BLOCK or start + len(view) > self.size:
            raise BlockMismatch(self.hashkey, f"unaligned check at {start} ({where})")
        for i in range(blocks_of(len(view)) if len(view) else 0):
            piece = view[i * BLOCK : (i + 1) * BLOCK]
            at = (first + i) * DIGEST
            if xxhash.xxh3_64_digest(piece) != self.sums[at : at + DIGEST]:
                raise BlockMismatch(
                    self.hashkey,
                    f"block at offset {(first + i) * BLOCK} does not match its recorded "
                    f"checksum ({where})",
                )


class BlockMismatch(CorruptObject):
    """Bytes disagree with the recorded sums: the bytes or the sums are wrong (a full sha256
    says which)."""


class BlockSumIndex:
    """The side file of one container: written by writers and verifiers, read by readers."""

    def __init__(self, folder: str) -> None:
        self.path = os.path.join(folder, FILE_NAME)
        self._local = threading.local()

    def lookup(self, hashkey: str, size: int) -> BlockSums | None:
        """The recorded sums of `hashkey`, or None (none, or not for this size and block)."""
        conn = self._conn()
        if conn is None:
            return None
        try:
            row = conn.execute(
                "SELECT size, block, algorithm, sums FROM blocksums WHERE hashkey = ?",
                (hashkey,)).fetchone()
        except sqlite3.Error:
            return None
        if row is None or tuple(row[:3]) != (size, BLOCK, ALGORITHM):
            return None
        sums = bytes(row[3])
        if len(sums) != blocks_of(size) * DIGEST:
            return None
        return BlockSums(hashkey, size, sums)

    def record(self, rows: Iterable[tuple[str, int, bytes]]) -> None:
        """Store (hashkey, size, sums) of objects that just hashed to their key. A failure is
        logged and forgotten: the sums only spare a full hash later."""
        batch = [(h, n, BLOCK, ALGORITHM, s) for h, n, s in rows
                 if n > MIN_SIZE and len(s) == blocks_of(n) * DIGEST]
        if batch:
            self._write("INSERT OR REPLACE INTO blocksums VALUES (?, ?, ?, ?, ?)", batch)

    def forget(self, hashkey: str) -> None:
        """Drop the sums of an object whose bytes disagreed with them."""
        self._write("DELETE FROM blocksums WHERE hashkey = ?", [(hashkey,)])

    def _write(self, sql: str, batch: Sequence[tuple[object, ...]]) -> None:
        try:
            conn = sqlite3.connect(self.path, timeout=30)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")  # advisory: no fsync per object
                with conn:
                    conn.execute(_SCHEMA)
                    conn.executemany(sql, batch)
            finally:
                conn.close()
        except (sqlite3.Error, OSError) as exc:
            # once per file and process: a read-only or full disk would say it for every object
            if self.path not in _WARNED:
                _WARNED.add(self.path)
                log.warning("could not update block checksums in %s: %s (reads still verify "
                            "objects whole)", self.path, exc)

    def prune(self, index_path: str, is_loose: Callable[[str], bool]) -> int:
        """Forget sums of objects the container no longer has (they only take room); returns
        how many went. An object added again later gets new ones when it is hashed again."""
        if not os.path.exists(self.path):
            return 0
        try:
            conn = sqlite3.connect(sqlite_uri(self.path, ""), uri=True, timeout=30)
        except sqlite3.Error:
            return 0
        try:
            conn.execute("ATTACH DATABASE ? AS idx", (sqlite_uri(index_path, "mode=ro"),))
            rows = conn.execute(
                "SELECT hashkey FROM blocksums b WHERE NOT EXISTS "
                "(SELECT 1 FROM idx.db_object o WHERE o.hashkey = b.hashkey)").fetchall()
            gone = [(h,) for (h,) in rows if not is_loose(h)]
            with conn:
                conn.executemany("DELETE FROM blocksums WHERE hashkey = ?", gone)
            return len(gone)
        except sqlite3.Error as exc:
            log.warning("could not prune block checksums in %s: %s", self.path, exc)
            return 0
        finally:
            conn.close()

    def _conn(self) -> sqlite3.Connection | None:
        """A read-only connection of this thread, or None while the file does not exist."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():  # never across a fork
            return conn
        if not os.path.exists(self.path):
            return None
        try:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True,
                                   check_same_thread=False)
        except sqlite3.Error:
            return None
        self._local.conn = conn
        self._local.pid = os.getpid()
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            conn.close()
        self._local.conn = None
