"""SQLite plumbing of packs.idx: the schema (as disk-objectstore expects it), connections,
write transactions and passive checkpoints. The reading side is index.Index."""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("dosfs.container")

BUSY_TIMEOUT_MS = 60_000


def sqlite_uri(path: str, query: str = "") -> str:
    """A SQLite URI of a path (any characters quoted), with a query such as mode=ro."""
    from urllib.parse import quote

    return f"file:{quote(os.path.abspath(path))}" + (f"?{query}" if query else "")


def create_schema(path: str) -> None:
    """Create packs.idx (if missing) with the disk-objectstore schema, in WAL mode.
    (sqlite-utils is imported here: only init needs it, and it costs every process 80 ms.)"""
    import sqlite_utils

    db = sqlite_utils.Database(path)
    try:
        db.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if "db_object" not in db.table_names():
            table = db.table("db_object")
            table.create(
                {
                    "id": int,
                    "hashkey": str,
                    "compressed": bool,
                    "size": int,
                    "offset": int,
                    "length": int,
                    "pack_id": int,
                },
                pk="id",
                not_null={"hashkey", "compressed", "size", "offset", "length", "pack_id"},
                if_not_exists=True,
            )
            table.create_index(
                ["hashkey"], index_name="ix_db_object_hashkey", unique=True, if_not_exists=True
            )
        db.enable_wal()
    finally:
        db.close()


def connect(
    path: str, cache_kib: int = 8192, *, uri: bool = False, mmap_kib: int = 0
) -> sqlite3.Connection:
    """`mmap_kib`: map up to that much of the file instead of copying pages into the cache
    (a random lookup then costs ~2 µs less; the mapped pages count in the process's RSS)."""
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, cached_statements=512, uri=uri
    )
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute(f"PRAGMA cache_size = -{cache_kib}")
    if mmap_kib:
        conn.execute(f"PRAGMA mmap_size = {mmap_kib * 1024}")
    return conn


def checkpoint(conn: sqlite3.Connection) -> None:
    """Copy committed WAL frames into the main file, as far as readers allow; never waits."""
    try:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    except sqlite3.OperationalError as exc:  # busy or full: the next commit tries again
        log.debug("passive checkpoint skipped: %s", exc)


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on any exception), then a passive checkpoint."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    checkpoint(conn)
