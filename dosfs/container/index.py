"""packs.idx: the SQLite index of packed objects (schema in docs/format.md).

Why it looks like this:
- The schema is created with sqlite-utils (column names, NOT NULL, the unique index
  `ix_db_object_hashkey` exactly as disk-objectstore expects); everything after that runs on raw
  `sqlite3` connections, because the hot path (one lookup) must cost a few microseconds.
- One read connection per thread, in autocommit mode (no implicit BEGIN), so every SELECT is its
  own short read transaction: a reader never pins an old snapshot and the WAL can checkpoint.
  The one exception is `entry_recent` (a server's lookups): a second connection holds a read
  transaction for at most a given age (half the cost per lookup), ended by `release_snapshot`.
  Scans are keyset-paginated (`WHERE hashkey > ? ORDER BY hashkey LIMIT n`) for the same reason.
- Lookups return a *stamp*: `data_version` of the same snapshot + (connection serial << 32);
  a `data_version` means something only on its own connection (a fresh one restarts the
  counter), so the pack cache compares stamps, never bare versions (packstore.PackCache).
- Writers use their own connection (never the thread's read connection), `synchronous=FULL`
  (loose copies are deleted right after a commit: the commit must be on disk first), and
  checkpoint passively after committing, so the main file holds what was committed even while
  long-lived readers (the mount) keep the WAL open. No checkpoint ever waits for a reader.
- Opening (index_opening.py): a full disk, a read-only container and a damaged index; the
  mount calls `keepalive()` at start, so that `-shm` exists and reads keep working when the
  disk fills up later.
"""

from __future__ import annotations

import itertools
import logging
import operator
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

from dosfs.container.db import checkpoint, connect, write_transaction
from dosfs.container.errors import InvalidContainer, ModificationNotAllowed
from dosfs.container.index_opening import IndexOpening
from dosfs.container.index_scans import IndexScans
from dosfs.container.index_sql import (
    _ROW_COLS,
    SQL_BY_ID,
    SQL_ENTRY,
    SQL_INSERT,
    SQL_LOOKUP,
    SQL_STAMP,
    FullRow,
    IdRow,
    LookupRow,
    PackRow,
)

log = logging.getLogger("dosfs.container")

#: SQLite's historical default limit of bound parameters is 999; stay below it
IN_CHUNK = 900
#: bulk lookups scan the whole table instead of probing when keys * SCAN_RATIO >= rows
SCAN_RATIO = 3
SCAN_MIN_KEYS = 2000
SCAN_MAX_ROWS = 2_000_000
_SERIALS = itertools.count(1)
_key_of = operator.itemgetter(0)
compress = itertools.compress
#: connections inherited across a fork: never used again, and never closed either (closing a
#: parent's SQLite connection in the child can disturb the parent's locks and WAL)
_FORK_ORPHANS: list[sqlite3.Connection] = []


class _ThreadState(threading.local):
    gen: int = -1
    conn: sqlite3.Connection | None = None
    base: int = 0  # serial << 32 of conn: added to data_version to make a stamp
    degraded: bool = False  # an immutable fallback connection (full disk, see module doc)
    snap: sqlite3.Connection | None = None  # the held-snapshot connection (entry_recent)
    snap_gen: int = -1
    snap_since: float = 0.0  # monotonic start of its open read transaction (0: none)


_ALL_INDEXES: weakref.WeakSet[Index] = weakref.WeakSet()


def _after_fork() -> None:
    # SQLite connections must never cross a fork: every thread opens new ones in the child.
    for index in list(_ALL_INDEXES):
        index._gen += 1
        _FORK_ORPHANS.extend(conn for _thread, conn in index._conns)
        if index._local.conn is not None:
            _FORK_ORPHANS.append(index._local.conn)
        if index._keepalive is not None:
            _FORK_ORPHANS.append(index._keepalive)
            index._keepalive = None
        index._conns = []
        index._lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork)


class Index(IndexOpening, IndexScans):
    """Thread-safe access to packs.idx; cheap per-thread read connections, short transactions."""

    def __init__(self, path: str, cache_kib: int = 8192, mmap_kib: int = 0) -> None:
        """`cache_kib`: SQLite page cache per reading thread. `mmap_kib`: how much of the file
        read connections map (SQLite's mmap_size): lookups skip copying pages into the cache,
        but the pages touched count in the process's RSS, so a server that must stay small
        leaves it 0."""
        self.path = path
        self.cache_kib = cache_kib
        self.mmap_kib = mmap_kib
        self._local = _ThreadState()
        self._gen = 0
        self._lock = threading.Lock()
        # (owning thread, its connection): connections of finished threads are closed when the
        # next one is opened, so short-lived threads do not leak a connection (and its cache) each
        self._conns: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._checked = False
        self._read_only: bool | None = None
        self._keepalive: sqlite3.Connection | None = None
        _ALL_INDEXES.add(self)

    # -- connections -------------------------------------------------------------------------
    def _open_reader(self, local: _ThreadState) -> sqlite3.Connection:
        conn, local.degraded = self._read_connect(self.cache_kib)
        return conn

    def conn(self) -> sqlite3.Connection:
        """This thread's read connection (autocommit; statements cached by sqlite3)."""
        local = self._local
        if local.gen == self._gen and local.conn is not None:
            if not local.degraded or self._usable_immutably():
                return local.conn
            local.conn.close()  # a usable -shm appeared: reconnect normally
            local.conn = None
        self._ensure()
        conn = self._open_reader(local)
        with self._lock:
            finished = [c for t, c in self._conns if not t.is_alive()]
            self._conns = [(t, c) for t, c in self._conns if t.is_alive()]
            self._conns.append((threading.current_thread(), conn))
        for old in finished:
            old.close()
        local.conn = conn
        local.base = next(_SERIALS) << 32
        local.gen = self._gen
        return conn

    def write_conn(self) -> sqlite3.Connection:
        """A new connection for one write operation; the caller closes it."""
        if self.read_only:
            folder = os.path.dirname(os.path.abspath(self.path))
            raise ModificationNotAllowed(f"the container folder {folder} is read-only here")
        self._ensure()
        conn = connect(self.path, cache_kib=65536)
        conn.execute("PRAGMA synchronous = FULL")
        return conn

    def keepalive(self) -> None:
        """Hold one connection for the life of this object, so that -shm and -wal exist and
        reads keep working when the disk fills up later (a long-running daemon calls this)."""
        if self._keepalive is None:
            self._ensure()
            self._keepalive, _degraded = self._read_connect(64)

    def checkpoint(self) -> None:
        """A passive checkpoint on this thread's connection (never waits for readers)."""
        checkpoint(self.conn())

    def close(self) -> None:
        """Close every connection this object opened (all threads)."""
        with self._lock:
            conns, self._conns = self._conns, []
            self._gen += 1
            keep, self._keepalive = self._keepalive, None
        for conn in [c for _t, c in conns] + ([keep] if keep is not None else []):
            try:
                conn.close()
            except sqlite3.Error:
                pass

    # -- single lookups ----------------------------------------------------------------------
    def lookup(self, hashkey: str) -> LookupRow | None:
        """(compressed, size, offset, length, pack_id, stamp) or None."""
        conn = self.conn()
        row: LookupRow | None = conn.execute(SQL_LOOKUP, (self._local.base, hashkey)).fetchone()
        return row

    def entry(self, hashkey: str) -> tuple[int, int] | None:
        """(row id, size) of a packed object, or None."""
        row: tuple[int, int] | None = self.conn().execute(SQL_ENTRY, (hashkey,)).fetchone()
        return row

    def entry_recent(self, hashkey: str, max_age: float) -> tuple[int, int] | None:
        """(row id, size) from this thread's held read snapshot, begun at most `max_age`
        seconds ago: 3-4 µs instead of 8-10, because a statement in an open read transaction
        skips the WAL read-lock handshake (two fcntl and an fstat). None means "not in the
        snapshot": ask `entry` (fresh) before concluding anything, objects may have arrived.
        Whoever calls this calls `release_snapshot` when idle (a held snapshot holds back the
        WAL's reset)."""
        local = self._local
        conn = local.snap
        if conn is None or local.snap_gen != self._gen:
            conn = self._open_snapshot(local)
            if conn is None:
                return self.entry(hashkey)
        now = time.monotonic()
        if now - local.snap_since > max_age:
            if local.snap_since:
                conn.execute("COMMIT")
            conn.execute("BEGIN")
            local.snap_since = now
        row: tuple[int, int] | None = conn.execute(SQL_ENTRY, (hashkey,)).fetchone()
        return row

    def release_snapshot(self) -> None:
        """End this thread's held read snapshot, if any."""
        local = self._local
        if local.snap is not None and local.snap_since and local.snap_gen == self._gen:
            local.snap_since = 0.0
            try:
                local.snap.execute("COMMIT")
            except sqlite3.Error:
                pass

    def _open_snapshot(self, local: _ThreadState) -> sqlite3.Connection | None:
        self._ensure()
        try:
            conn, degraded = self._read_connect(self.cache_kib)
        except (sqlite3.Error, InvalidContainer):
            return None  # e.g. a full disk: the fresh path copes (see conn)
        if degraded:
            conn.close()
            return None
        with self._lock:
            self._conns.append((threading.current_thread(), conn))
        local.snap, local.snap_gen, local.snap_since = conn, self._gen, 0.0
        return conn

    def by_id(self, rowid: int) -> IdRow | None:
        """The row with this id, as `lookup` would give it, plus its hashkey."""
        conn = self.conn()
        row: IdRow | None = conn.execute(SQL_BY_ID, (self._local.base, rowid)).fetchone()
        return row

    def stamp(self) -> int:
        """The current stamp of this thread's connection (see the module docstring)."""
        conn = self.conn()
        return int(conn.execute(SQL_STAMP, (self._local.base,)).fetchone()[0])

    # -- bulk lookups ------------------------------------------------------------------------
    def lookup_many(self, hashkeys: Sequence[str]) -> tuple[list[FullRow], int]:
        """Rows (hashkey, compressed, size, offset, length, pack_id) of the given (valid,
        distinct) keys from ONE short read transaction, plus its stamp, so every row and the
        stamp belong to the same snapshot.

        Keys are probed with IN queries of 900; when they are a large part of a not-too-big
        table, one sequential scan of the table is cheaper (a probe costs ~3 µs, a scanned
        row ~1.5 µs) and still a short transaction."""
        conn = self.conn()
        found: list[FullRow] = []
        conn.execute("BEGIN")
        try:
            rows_estimate = conn.execute("SELECT max(id) FROM db_object").fetchone()[0] or 0
            if len(hashkeys) >= SCAN_MIN_KEYS and (
                rows_estimate <= SCAN_MAX_ROWS and len(hashkeys) * SCAN_RATIO >= rows_estimate
            ):
                keep = set(hashkeys).__contains__
                cursor = conn.execute(f"SELECT hashkey, {_ROW_COLS} FROM db_object")
                while rows := cursor.fetchmany(4096):
                    found += compress(rows, map(keep, map(_key_of, rows)))
                hashkeys = ()
            for start in range(0, len(hashkeys), IN_CHUNK):
                chunk = hashkeys[start : start + IN_CHUNK]
                sql = (
                    f"SELECT hashkey, {_ROW_COLS} FROM db_object WHERE hashkey IN "
                    f"({','.join('?' * len(chunk))})"
                )
                found += conn.execute(sql, chunk).fetchall()
            stamp = int(conn.execute(SQL_STAMP, (self._local.base,)).fetchone()[0])
        finally:
            conn.execute("COMMIT")
        return found, stamp

    def existing(self, hashkeys: Iterable[str], conn: sqlite3.Connection | None = None) -> set[str]:
        """The subset of keys present in the index (chunked IN queries, or one scan of the
        hashkey index when the keys are a large part of the table)."""
        conn = conn or self.conn()
        present: set[str] = set()
        rows_estimate = conn.execute("SELECT max(id) FROM db_object").fetchone()[0] or 0
        if rows_estimate == 0:
            return present  # (an empty index: not even the keys need a look)
        keys = list(dict.fromkeys(hashkeys))
        if len(keys) >= SCAN_MIN_KEYS and (
            rows_estimate <= SCAN_MAX_ROWS and len(keys) * SCAN_RATIO >= rows_estimate
        ):
            wanted = set(keys)
            cursor = conn.execute("SELECT hashkey FROM db_object")
            while rows := cursor.fetchmany(8192):
                present.update(r[0] for r in rows if r[0] in wanted)
            return present
        for start in range(0, len(keys), IN_CHUNK):
            chunk = keys[start : start + IN_CHUNK]
            sql = f"SELECT hashkey FROM db_object WHERE hashkey IN ({','.join('?' * len(chunk))})"
            present.update(r[0] for r in conn.execute(sql, chunk))
        return present

    # -- aggregates --------------------------------------------------------------------------
    def count(self) -> int:
        return int(self.conn().execute("SELECT count(*) FROM db_object").fetchone()[0])

    def sizes(self) -> tuple[int, int]:
        """(sum of uncompressed sizes, sum of on-disk lengths) of packed objects."""
        row = (
            self.conn()
            .execute("SELECT coalesce(sum(size), 0), coalesce(sum(length), 0) FROM db_object")
            .fetchone()
        )
        return int(row[0]), int(row[1])

    def pack_ids(self) -> list[int]:
        """Distinct pack ids referenced by the index (a few, so one query is fine)."""
        return [
            int(r[0])
            for r in self.conn().execute("SELECT DISTINCT pack_id FROM db_object ORDER BY pack_id")
        ]

    def pack_stats(self) -> dict[int, tuple[int, int, int, int]]:
        """pack_id -> (object count, sum of lengths, max(offset + length), sum of sizes)."""
        return {
            int(p): (int(n), int(total), int(end), int(size))
            for p, n, total, end, size in self.conn().execute(
                "SELECT pack_id, count(*), coalesce(sum(length), 0), "
                "coalesce(max(offset + length), 0), coalesce(sum(size), 0) FROM db_object "
                "GROUP BY pack_id"
            )
        }

    # -- writes ------------------------------------------------------------------------------
    def insert_rows(self, rows: Sequence[FullRow], conn: sqlite3.Connection) -> None:
        """Insert (hashkey, compressed, size, offset, length, pack_id) rows in one transaction;
        keys already present are ignored (the unique index decides)."""
        with write_transaction(conn):
            conn.executemany(SQL_INSERT, rows)

    def delete_hashkeys(self, hashkeys: Sequence[str], conn: sqlite3.Connection) -> set[str]:
        """Remove rows for these keys in one transaction; returns the keys that had rows."""
        deleted: set[str] = set()
        with write_transaction(conn):
            for start in range(0, len(hashkeys), IN_CHUNK):
                chunk = list(hashkeys[start : start + IN_CHUNK])
                marks = ",".join("?" * len(chunk))
                deleted.update(
                    r[0]
                    for r in conn.execute(
                        f"SELECT hashkey FROM db_object WHERE hashkey IN ({marks})", chunk
                    )
                )
                conn.execute(f"DELETE FROM db_object WHERE hashkey IN ({marks})", chunk)
        return deleted

    def execute_write(self, sql: str, params: Sequence[Any] = ()) -> None:
        """One statement in its own write transaction, on a connection of its own."""
        conn = self.write_conn()
        try:
            with write_transaction(conn):
                conn.execute(sql, params)
        finally:
            conn.close()

    def vacuum(self) -> None:
        """VACUUM, then a passive checkpoint (a truncating one would wait for every reader)."""
        conn = self.write_conn()
        try:
            conn.execute("VACUUM")
            checkpoint(conn)
        finally:
            conn.close()


__all__ = ["FullRow", "IdRow", "Index", "LookupRow", "PackRow"]
