"""Opening packs.idx (mixed into index.Index): the first use's checks, read connections in
every situation (normal, a read-only folder, a full disk), and the damaged-index check.

- A read-only container (a folder this process cannot write: another user's, a read-only
  mount): readers open `?mode=ro` (SQLite reads a `-shm` it cannot write, or keeps the
  wal-index in memory), falling back to `immutable=1` when there is no `-shm` and the WAL is
  empty; nothing is created or converted (writers get ModificationNotAllowed, index.py).
- A full disk: a reader needs `packs.idx-shm`, which SQLite cannot create or size on a full
  disk; a read falls back to an immutable connection, valid exactly while no usable `-shm`
  exists (nobody can commit without one) and the WAL is empty.
- A damaged packs.idx (truncated, garbled) is InvalidContainer at the first use; `check()`
  (the mount at start, `clean_storage`, the CLI's whole-index commands) also runs SQLite's
  quick_check when the file is at most QUICK_CHECK_MAX bytes, else reads the last pages of the
  table and of the key index.
"""

from __future__ import annotations

import logging
import os
import sqlite3

from dosfs.container.db import connect, create_schema, sqlite_uri
from dosfs.container.errors import InvalidContainer

log = logging.getLogger("dosfs.container")

#: the smallest usable wal-index (-shm) file
SHM_MIN_SIZE = 32 * 1024
#: `check()` runs SQLite's quick_check on an index up to this size (about 1.5 million objects;
#: 0.05 s per 32 MiB measured warm); a bigger one gets probes of its B-trees' last pages only
QUICK_CHECK_MAX = 256 << 20
_PROBES = (
    "SELECT id, hashkey FROM db_object ORDER BY id DESC LIMIT 1",
    "SELECT hashkey FROM db_object ORDER BY hashkey DESC LIMIT 1",
)



class IndexOpening:
    """The opening half of Index (see index.py for lookups and writes)."""

    path: str
    _checked: bool
    _read_only: bool | None
    #: how much of packs.idx read connections map (0: none; see Index)
    mmap_kib: int = 0

    @property
    def read_only(self) -> bool:
        """True when this process cannot write the container folder (checked once)."""
        if self._read_only is None:
            folder = os.path.dirname(os.path.abspath(self.path))
            self._read_only = not os.access(folder, os.W_OK)
        return self._read_only

    def _ensure(self) -> None:
        if self._checked:
            return
        if self.read_only:
            self._ensure_read_only()
            return
        if not os.path.exists(self.path):
            create_schema(self.path)
        else:
            conn: sqlite3.Connection | None = None
            try:
                conn = connect(self.path)
                names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
                if "db_object" not in names:
                    create_schema(self.path)
                elif conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    conn.execute("PRAGMA journal_mode = wal")
            except sqlite3.OperationalError as exc:
                if not self._usable_immutably():
                    raise self._unusable(exc) from exc
                return  # full disk: readers fall back (see conn), nothing to check now
            except sqlite3.DatabaseError as exc:
                raise self._unusable(exc) from exc
            finally:
                if conn is not None:
                    conn.close()
        self._checked = True

    def _ensure_read_only(self) -> None:
        """The same checks without creating or converting anything."""
        if not os.path.exists(self.path):
            raise InvalidContainer(
                f"{self.path} is missing and its folder is read-only (it cannot be created)"
            )
        conn, _degraded = self._read_connect(64)
        try:
            names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        except sqlite3.DatabaseError as exc:
            raise self._unusable(exc) from exc
        finally:
            conn.close()
        if "db_object" not in names:
            raise InvalidContainer(f"{self.path}: no db_object table (not a container index)")
        self._checked = True

    def _unusable(self, exc: sqlite3.Error) -> InvalidContainer:
        return InvalidContainer(f"{self.path}: not a usable SQLite index: {exc}")

    def check(self) -> None:
        """InvalidContainer unless packs.idx reads back whole: SQLite's quick_check up to
        QUICK_CHECK_MAX bytes, else the last pages of the table and of the key index."""
        self._ensure()
        conn, _degraded = self._read_connect(1024)
        try:
            if os.path.getsize(self.path) <= QUICK_CHECK_MAX:
                rows = conn.execute("PRAGMA quick_check(1)").fetchall()
                verdict = " ".join(str(rows[0][0]).split()) if rows else "ok"
                if verdict != "ok":
                    raise InvalidContainer(f"{self.path}: the SQLite index is damaged: {verdict}")
            else:
                for sql in _PROBES:
                    conn.execute(sql).fetchall()
        except sqlite3.DatabaseError as exc:
            raise self._unusable(exc) from exc
        finally:
            conn.close()

    def _usable_immutably(self) -> bool:
        """True when nobody can have committed past the main file: no usable -shm (every
        connection needs one) and no WAL frames."""
        try:
            if os.stat(self.path + "-shm").st_size >= SHM_MIN_SIZE:
                return False
        except FileNotFoundError:
            pass
        try:
            return os.stat(self.path + "-wal").st_size == 0
        except FileNotFoundError:
            return True

    def _read_connect(self, cache_kib: int) -> tuple[sqlite3.Connection, bool]:
        """A read connection and whether it is immutable (see the module docstring): the
        normal one, `?mode=ro` in a read-only folder, immutable when no -shm can be had and
        nothing can have been committed past the main file."""
        conn: sqlite3.Connection | None = None
        try:
            if self.read_only:
                conn = connect(sqlite_uri(self.path, "mode=ro"), cache_kib, uri=True,
                               mmap_kib=self.mmap_kib)
            else:
                conn = connect(self.path, cache_kib, mmap_kib=self.mmap_kib)
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # maps the -shm
            return conn, False
        except sqlite3.OperationalError as exc:
            if conn is not None:
                conn.close()
            if not self._usable_immutably():
                if self.read_only:
                    raise InvalidContainer(
                        f"{self.path}: cannot be read from a read-only folder ({exc}): its -wal "
                        "holds changes not yet in the main file; run any dosfs command on it "
                        "once as a user who can write the folder"
                    ) from exc
                raise
            if self.read_only:
                log.debug("%s: %s; read-only folder: reading the index as immutable", self.path,
                          exc)
            else:
                log.warning("%s: %s; reading the index without its -shm (full disk?)", self.path,
                            exc)
            conn = sqlite3.connect(
                sqlite_uri(self.path, "immutable=1"),
                uri=True,
                isolation_level=None,
                check_same_thread=False,
            )
            return conn, True
