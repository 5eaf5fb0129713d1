"""A container's storage at one moment, for those that publish or inspect it whole (push,
status): pack files pinned open plus a standalone copy of the index that only names bytes those
files hold.

Why here: the index schema has one owner, this package. A push needs a copy of packs.idx that is
consistent with the pack files it uploads (a repack may replace a pack meanwhile), and status
counts the rows of a downloaded copy; both get these answers from IndexCopy instead of their
own SQL.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from dosfs.container.config import Layout
from dosfs.container.packstore import PinnedFile

#: how often the pack files may change under a snapshot before it gives up
ATTEMPTS = 10


class IndexCopy:
    """A standalone packs.idx file (not a container's live index): read it, add rows to it."""

    def __init__(self, path: str) -> None:
        self.path = path

    @classmethod
    def backup_of(cls, index: str, path: str) -> IndexCopy:
        """A consistent copy of the live index `index` (SQLite's online backup: one snapshot,
        whatever writers do meanwhile), as one plain file (no WAL)."""
        source = sqlite3.connect(f"file:{index}?mode=ro", uri=True)
        try:
            target = sqlite3.connect(path)
            try:
                source.backup(target)
                target.execute("PRAGMA journal_mode=DELETE")
            finally:
                target.close()
        finally:
            source.close()
        return cls(path)

    def _connect(self, read_only: bool = True) -> sqlite3.Connection:
        if read_only:
            return sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        return sqlite3.connect(self.path)

    def pack_ends(self) -> dict[int, int]:
        """Per pack id, where its last indexed object ends (what a copy of the pack needs)."""
        db = self._connect()
        try:
            sql = "SELECT pack_id, MAX(offset + length) FROM db_object GROUP BY pack_id"
            return {int(p): int(end) for p, end in db.execute(sql)}
        finally:
            db.close()

    def iter_rows(self) -> Iterator[tuple[str, int, int, int, int, int]]:
        """Every row (hashkey, compressed, size, offset, length, pack_id) in key order."""
        db = self._connect()
        try:
            yield from db.execute(
                "SELECT hashkey, compressed, size, offset, length, pack_id FROM db_object "
                "ORDER BY hashkey")
        finally:
            db.close()

    def hashkeys(self) -> set[str]:
        db = self._connect()
        try:
            return {h for (h,) in db.execute("SELECT hashkey FROM db_object")}
        finally:
            db.close()

    def add_rows(self, rows: Iterable[tuple[str, bool, int, int, int, int]]) -> None:
        """Rows (hashkey, compressed, size, offset, length, pack_id), committed."""
        db = self._connect(read_only=False)
        try:
            with db:
                db.executemany(
                    "INSERT INTO db_object (hashkey, compressed, size, offset, length, pack_id)"
                    " VALUES (?, ?, ?, ?, ?, ?)", rows)
        finally:
            db.close()

    def rows_digest(self) -> tuple[str, int, int]:
        """A digest of every row in key order, the row count and the sum of sizes: equal
        digests, equal indexes (push compares generations by it)."""
        db = self._connect()
        try:
            h = hashlib.sha256()
            count = size = 0
            for row in db.execute(
                "SELECT hashkey, compressed, size, offset, length, pack_id FROM db_object "
                "ORDER BY hashkey"
            ):
                h.update(repr(row).encode())
                count += 1
                size += row[2]
            return h.hexdigest(), count, size
        finally:
            db.close()

    def count_and_size(self) -> tuple[int, int]:
        """(rows, sum of sizes)."""
        db = self._connect()
        try:
            rows, size = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM db_object").fetchone()
            return int(rows), int(size)
        finally:
            db.close()


@dataclass
class Snapshot:
    """Pinned pack files and an index copy that names only bytes they hold. Close it (or use
    it as a context manager) to release the descriptors; the copy's file is the caller's."""

    index: IndexCopy
    packs: dict[int, PinnedFile] = field(default_factory=dict)

    def close(self) -> None:
        self.packs.clear()  # PinnedFile closes its descriptor when the last reference goes

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def take_snapshot(
    layout: Layout, pack_ids: Callable[[], list[int]], index_path: str
) -> Snapshot:
    """Open the packs first, then copy the index, then check that no pack file was replaced
    meanwhile (a repack renames a new file over it): if one was, try again. So every row of the
    copy points into a file that is held open here."""
    for _attempt in range(ATTEMPTS):
        packs = {pid: PinnedFile.open(layout.pack_path(pid)) for pid in pack_ids()}
        index = IndexCopy.backup_of(layout.index, index_path)
        stable = True
        for pid, pinned in packs.items():
            try:
                st = os.stat(layout.pack_path(pid))
                stable &= (st.st_dev, st.st_ino) == pinned.identity
            except FileNotFoundError:
                stable = False
        if stable:
            return Snapshot(index, packs)
        packs.clear()
    raise OSError("packs kept changing during the snapshot; try again")
