"""Node rows of a ``core.psql_dos`` profile: the same queries as SqliteSource, on PostgreSQL.

One connection per worker thread, autocommit and ``read_only`` (every query its own short read
transaction: nothing held that AiiDA's writers or VACUUM would wait for). The uuid column is a
real UUID there: prefixes become a range of UUID values (the unique index answers it).
"""

from __future__ import annotations

import threading
from typing import Any

from dosfs.views.rows import (
    MIN_PREFIX,
    REPOSITORY_UUID_KEY,
    Ambiguous,
    NodeRow,
    valid_uuid_text,
)

_COLUMNS = "id, uuid::text, node_type, label, repository_metadata::text"


def _bound(prefix: str, fill: str) -> str:
    """The smallest (fill "0") or largest (fill "f") uuid that starts with ``prefix``."""
    digits = (prefix.replace("-", "") + fill * 32)[:32]
    return "-".join((digits[:8], digits[8:12], digits[12:16], digits[16:20], digits[20:]))


#: seconds before a connection to a server that does not answer gives up (unless the URL's
#: connect_timeout says otherwise): a silent server is one line at mount time, not a hang
CONNECT_TIMEOUT = 5

class PostgresSource:
    """Read-only node rows from a PostgreSQL database URL (``postgresql://user@host:port/db``)."""

    def __init__(self, url: str) -> None:
        import psycopg  # optional: dosfs[views]

        self._psycopg = psycopg
        self.url = url
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()
        self._query("SELECT 1 FROM db_dbnode LIMIT 1")  # fails early on a wrong database

    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            extra: dict[str, Any] = (
                {} if "connect_timeout" in self.url else {"connect_timeout": CONNECT_TIMEOUT}
            )
            conn = self._psycopg.connect(self.url, autocommit=True, **extra)
            conn.read_only = True
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def _query(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        with self._conn().cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())

    def _row(self, sql: str, *args: object) -> NodeRow | None:
        rows = self._query(sql, *args)
        if not rows:
            return None
        pk, uuid, node_type, label, metadata = rows[0]
        return NodeRow(int(pk), str(uuid), str(node_type), str(label or ""),
                       str(metadata or "{}"))

    def node(self, pk: int) -> NodeRow | None:
        return self._row(f"SELECT {_COLUMNS} FROM db_dbnode WHERE id = %s", pk)

    def by_uuid(self, uuid: str) -> NodeRow | None:
        if len(uuid.replace("-", "")) != 32:
            return None
        return self._row(f"SELECT {_COLUMNS} FROM db_dbnode WHERE uuid = %s::uuid", uuid)

    def resolve_prefix(self, prefix: str) -> str | None:
        if len(prefix) < MIN_PREFIX or not valid_uuid_text(prefix):
            return None
        rows = self._query("SELECT uuid::text FROM db_dbnode WHERE uuid BETWEEN %s::uuid AND "
                           "%s::uuid ORDER BY uuid LIMIT 3", _bound(prefix, "0"),
                           _bound(prefix, "f"))
        found = [str(r[0]) for r in rows if str(r[0]).startswith(prefix)]
        if len(found) > 1:
            raise Ambiguous(prefix)
        return found[0] if found else None

    def pks_after(self, after: int, limit: int) -> list[tuple[int, str]]:
        rows = self._query("SELECT id, uuid::text FROM db_dbnode WHERE id > %s ORDER BY id "
                           "LIMIT %s", after, limit)
        return [(int(pk), str(uuid)) for pk, uuid in rows]

    def uuids_after(self, after: str, limit: int) -> list[tuple[int, str]]:
        low = _bound(after, "0") if after else "00000000-0000-0000-0000-000000000000"
        rows = self._query("SELECT id, uuid::text FROM db_dbnode WHERE uuid > %s::uuid OR "
                           "(%s AND uuid = %s::uuid) ORDER BY uuid LIMIT %s",
                           low, not after, low, limit)
        return [(int(pk), str(uuid)) for pk, uuid in rows]

    def repository_uuid(self) -> str | None:
        """The profile's repository uuid (its container's container_id), None if unrecorded."""
        rows = self._query("SELECT val #>> '{}' FROM db_dbsetting WHERE key = %s",
                           REPOSITORY_UUID_KEY)
        return str(rows[0][0]) if rows and rows[0][0] is not None else None

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
