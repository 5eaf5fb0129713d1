"""Where node rows come from: an AiiDA profile's database, opened read-only.

SQLite (``core.sqlite_dos``) here, PostgreSQL (``core.psql_dos``) in sources_pg.py. SQLite:
opened with a ``file:...?mode=ro`` URI, one connection per worker thread, every query its own
short read transaction (autocommit), so the view never holds a lock that AiiDA's writers or
``verdi storage maintain`` would wait for, and WAL checkpoints are never held back for long.
Listings are keyset pages (by id, by uuid): memory stays flat for 10^6 nodes.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

from dosfs.views.rows import (
    MIN_PREFIX,
    REPOSITORY_UUID_KEY,
    Ambiguous,
    NodeRow,
    Source,
    valid_uuid_text,
)

#: the columns a view needs, in NodeRow's order
_COLUMNS = "id, uuid, node_type, label, repository_metadata"


class SqliteSource:
    """Read-only node rows of a ``core.sqlite_dos`` profile's database.sqlite."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no AiiDA database at {self.path}")
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._query("SELECT 1 FROM db_dbnode LIMIT 1")  # fails early on a wrong file

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            uri = f"file:{self.path}?mode=ro"
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False,
                                   timeout=5.0)
            conn.execute("PRAGMA query_only = ON")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def _query(self, sql: str, *args: object) -> list[tuple[object, ...]]:
        return self._conn().execute(sql, args).fetchall()  # autocommit: one short read txn

    def _row(self, sql: str, *args: object) -> NodeRow | None:
        rows = self._query(sql, *args)
        if not rows:
            return None
        pk, uuid, node_type, label, metadata = rows[0]
        return NodeRow(int(str(pk)), str(uuid), str(node_type), str(label or ""),
                       str(metadata or "{}"))

    def node(self, pk: int) -> NodeRow | None:
        return self._row(f"SELECT {_COLUMNS} FROM db_dbnode WHERE id = ?", pk)

    def by_uuid(self, uuid: str) -> NodeRow | None:
        return self._row(f"SELECT {_COLUMNS} FROM db_dbnode WHERE uuid = ?", uuid)

    def resolve_prefix(self, prefix: str) -> str | None:
        """The one UUID starting with ``prefix``; None if none; Ambiguous if several."""
        if len(prefix) < MIN_PREFIX or not valid_uuid_text(prefix):
            return None
        high = prefix + "\x7f"  # a range on the unique index, not LIKE (no wildcards)
        rows = self._query("SELECT uuid FROM db_dbnode WHERE uuid >= ? AND uuid < ? "
                           "ORDER BY uuid LIMIT 2", prefix, high)
        if len(rows) > 1:
            raise Ambiguous(prefix)
        return str(rows[0][0]) if rows else None

    def pks_after(self, after: int, limit: int) -> list[tuple[int, str]]:
        rows = self._query("SELECT id, uuid FROM db_dbnode WHERE id > ? ORDER BY id LIMIT ?",
                           after, limit)
        return [(int(str(pk)), str(uuid)) for pk, uuid in rows]

    def uuids_after(self, after: str, limit: int) -> list[tuple[int, str]]:
        rows = self._query("SELECT id, uuid FROM db_dbnode WHERE uuid > ? ORDER BY uuid "
                           "LIMIT ?", after, limit)
        return [(int(str(pk)), str(uuid)) for pk, uuid in rows]

    def repository_uuid(self) -> str | None:
        """The profile's repository uuid (its container's container_id), None if unrecorded."""
        try:
            rows = self._query("SELECT val FROM db_dbsetting WHERE key = ?", REPOSITORY_UUID_KEY)
        except sqlite3.OperationalError:  # no such table: an older or stripped database
            return None
        return _setting_text(rows[0][0]) if rows else None

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()


def _setting_text(value: object) -> str | None:
    """A db_dbsetting value (JSON text in SQLite) as a string."""
    if not isinstance(value, str):
        return None if value is None else str(value)
    try:
        loaded = json.loads(value)
    except ValueError:
        return value
    return str(loaded) if loaded is not None else None


def open_source(spec: str) -> Source:
    """A source from ``--aiida-db``: a path to an SQLite database.sqlite, or a PostgreSQL URL
    (``postgresql://user:password@host:port/database``, a core.psql_dos profile)."""
    if spec.startswith(("postgresql://", "postgres://")):
        from dosfs.views.sources_pg import PostgresSource

        return PostgresSource(spec)
    if "://" in spec:
        raise ValueError(f"unsupported AiiDA database {spec!r}: a path or a postgresql:// URL")
    return SqliteSource(Path(spec))
