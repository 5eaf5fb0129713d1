"""Scans of packs.idx: keyset-paginated (`WHERE hashkey > ? ORDER BY hashkey LIMIT n`), one
short read transaction per page, so memory stays flat and no scan pins an old snapshot.
Mixed into index.Index, whose connections they use."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

from dosfs.container.index_sql import PackRow

#: rows per page of a keyset-paginated scan
PAGE = 2000


class IndexScans:
    """The scanning half of Index (see index.py for connections and lookups)."""

    path: str

    def conn(self) -> sqlite3.Connection:  # pragma: no cover - provided by Index
        raise NotImplementedError

    def _ensure(self) -> None:  # pragma: no cover - provided by Index
        raise NotImplementedError

    def _read_connect(
        self, cache_kib: int
    ) -> tuple[sqlite3.Connection, bool]:  # pragma: no cover - provided by Index
        raise NotImplementedError

    def iter_hashkeys(
        self, after: str | None = None, below: str | None = None, page: int = PAGE
    ) -> Iterator[str]:
        """Packed keys in ascending order with after < key < below."""
        cursor = after if after is not None else ""
        while True:
            conn = self.conn()
            if below is None:
                rows = conn.execute(
                    "SELECT hashkey FROM db_object WHERE hashkey > ? ORDER BY hashkey LIMIT ?",
                    (cursor, page),
                ).fetchall()
            else:
                rows = conn.execute(
                    "SELECT hashkey FROM db_object WHERE hashkey > ? AND hashkey < ? "
                    "ORDER BY hashkey LIMIT ?",
                    (cursor, below, page),
                ).fetchall()
            for (h,) in rows:
                yield h
            if len(rows) < page:
                return
            cursor = rows[-1][0]

    def iter_sized(
        self, after: str | None = None, below: str | None = None, page: int = PAGE
    ) -> Iterator[tuple[str, int, int]]:
        """(hashkey, size, id) of packed objects in key order with after < key < below: a
        listing with what `ls -l` needs, one keyset page per short read transaction."""
        cursor = after if after is not None else ""
        sql = "SELECT hashkey, size, id FROM db_object WHERE hashkey > ? "
        if below is not None:
            sql += "AND hashkey < ? "
        sql += "ORDER BY hashkey LIMIT ?"
        while True:
            params = (cursor, page) if below is None else (cursor, below, page)
            rows: list[tuple[str, int, int]] = self.conn().execute(sql, params).fetchall()
            yield from rows
            if len(rows) < page:
                return
            cursor = rows[-1][0]

    def with_prefix(self, prefix: str, limit: int = 2) -> list[str]:
        """Up to `limit` packed keys that start with `prefix` (lowercase hex)."""
        rows = self.conn().execute(
            "SELECT hashkey FROM db_object WHERE hashkey >= ? AND hashkey < ? "
            "ORDER BY hashkey LIMIT ?",
            (prefix, prefix + "g", limit),
        ).fetchall()
        return [r[0] for r in rows]

    def iter_pack_rows(self, pack_id: int, page: int = PAGE) -> Iterator[PackRow]:
        """(id, hashkey, compressed, size, offset, length) of one pack in offset order.

        There is no index on (pack_id, offset), so the rows are first copied (one statement,
        sorted by SQLite's external sorter) into a TEMP table of this connection; the main
        database is then no longer read, so no long read transaction pins the WAL."""
        conn = self._scan_conn()
        try:
            conn.execute("DROP TABLE IF EXISTS temp.scan")
            conn.execute(
                "CREATE TEMP TABLE scan AS SELECT id, hashkey, compressed, size, offset, length "
                "FROM main.db_object WHERE pack_id = ? ORDER BY offset, id",
                (pack_id,),
            )
            last = 0
            while True:
                rows = conn.execute(
                    "SELECT rowid, id, hashkey, compressed, size, offset, length FROM temp.scan "
                    "WHERE rowid > ? ORDER BY rowid LIMIT ?",
                    (last, page),
                ).fetchall()
                for row in rows:
                    yield row[1:]
                if len(rows) < page:
                    return
                last = rows[-1][0]
        finally:
            try:
                conn.execute("DROP TABLE IF EXISTS temp.scan")
            finally:
                conn.close()

    def _scan_conn(self) -> sqlite3.Connection:
        self._ensure()
        conn, _degraded = self._read_connect(8192)
        conn.execute("PRAGMA temp_store = FILE")
        return conn

    def pack_in_use(self, pack_id: int) -> bool:
        sql = "SELECT 1 FROM db_object WHERE pack_id = ? LIMIT 1"
        return self.conn().execute(sql, (pack_id,)).fetchone() is not None
