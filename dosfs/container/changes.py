"""What changed in a container's index since a watermark, read in O(change): push publishes
only this when nothing was removed or moved (docs/format.md, "Index tables").

Why a watermark works: rows get ids above every existing one (SQLite's rowid of
`id INTEGER PRIMARY KEY`), packing and adding only insert, and every operation that removes or
moves rows (delete, repack, a packer's vacuum) either lowers the row count or replaces a pack file
(a new inode). So with the row count equal to the old count plus the rows above the old highest
id, the row at that id unchanged (a delete of the newest row and an insert would reuse its id)
and the pack files the old rows name still the same files, the rows above the old id are exactly
what changed. Otherwise `added` is None and the caller reads everything (a snapshot).

Consistency is a snapshot's: packs are pinned first, the rows are read in one read transaction,
then the pinned files are checked to be still in place.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from dosfs.container.config import Layout
from dosfs.container.index import IN_CHUNK
from dosfs.container.index_sql import FullRow
from dosfs.container.packstore import PinnedFile
from dosfs.container.snapshot import ATTEMPTS

_COLS = "hashkey, compressed, size, offset, length, pack_id"


@dataclass(frozen=True, slots=True)
class Watermark:
    """The index at one moment: its highest row id and that row, its row count and the sums
    of sizes and lengths (what a publisher needs to tell and to count what came after)."""

    max_id: int
    max_row: FullRow | None
    rows: int
    size: int
    lengths: int

    def to_json(self) -> dict[str, Any]:
        return {"max_id": self.max_id, "max_row": self.max_row, "rows": self.rows,
                "size": self.size, "lengths": self.lengths}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Watermark:
        row = data.get("max_row")
        return cls(int(data["max_id"]), None if row is None else tuple(row),
                   int(data["rows"]), int(data["size"]), int(data["lengths"]))


@dataclass
class Changes:
    """Pinned pack files, the watermark now, and the rows added since the given one (None:
    rows were removed or moved, read everything); `packed` are the given keys that have rows."""

    watermark: Watermark
    added: list[FullRow] | None
    ends: dict[int, int]  # pack id -> end of its last added row
    packed: set[str]
    packs: dict[int, PinnedFile] = field(default_factory=dict)

    def close(self) -> None:
        self.packs.clear()

    def __enter__(self) -> Changes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read(
    db: sqlite3.Connection, since: Watermark | None, keys: list[str]
) -> tuple[Watermark, list[FullRow] | None, dict[int, int], set[str]]:
    max_id = int(db.execute("SELECT coalesce(max(id), 0) FROM db_object").fetchone()[0])
    rows = int(db.execute("SELECT count(*) FROM db_object").fetchone()[0])
    at_max = db.execute(f"SELECT {_COLS} FROM db_object WHERE id = ?", (max_id,)).fetchone()
    packed: set[str] = set()
    for start in range(0, len(keys), IN_CHUNK):
        chunk = keys[start : start + IN_CHUNK]
        sql = f"SELECT hashkey FROM db_object WHERE hashkey IN ({','.join('?' * len(chunk))})"
        packed.update(r[0] for r in db.execute(sql, chunk))
    added: list[FullRow] | None = None
    ends: dict[int, int] = {}
    size = lengths = 0
    if since is not None and max_id >= since.max_id:
        old = db.execute(f"SELECT {_COLS} FROM db_object WHERE id = ?", (since.max_id,)).fetchone()
        new = db.execute(
            f"SELECT {_COLS} FROM db_object WHERE id > ? ORDER BY hashkey", (since.max_id,)
        ).fetchall()
        if (None if old is None else tuple(old)) == since.max_row and rows == since.rows + len(new):
            added = new
            size = since.size + sum(r[2] for r in new)
            lengths = since.lengths + sum(r[4] for r in new)
            for r in new:
                ends[r[5]] = max(ends.get(r[5], 0), r[3] + r[4])
    if added is None:
        size, lengths = db.execute(
            "SELECT coalesce(sum(size), 0), coalesce(sum(length), 0) FROM db_object").fetchone()
    mark = Watermark(max_id, None if at_max is None else tuple(at_max), rows, int(size),
                     int(lengths))
    return mark, added, ends, packed


def take_changes(
    layout: Layout,
    pack_ids: Callable[[], list[int]],
    since: Watermark | None,
    keys: Iterable[str] = (),
) -> Changes:
    """See the module docstring; `keys` (e.g. the loose ones) are checked for rows in the same
    read transaction."""
    wanted = list(dict.fromkeys(keys))
    for _attempt in range(ATTEMPTS):
        packs = {pid: PinnedFile.open(layout.pack_path(pid)) for pid in pack_ids()}
        db = sqlite3.connect(f"file:{layout.index}?mode=ro", uri=True, isolation_level=None)
        try:
            db.execute("BEGIN")
            mark, added, ends, packed = _read(db, since, wanted)
            db.execute("COMMIT")
        finally:
            db.close()
        stable = True
        for pid, pinned in packs.items():
            try:
                st = os.stat(layout.pack_path(pid))
                stable &= (st.st_dev, st.st_ino) == pinned.identity
            except FileNotFoundError:
                stable = False
        if stable:
            return Changes(mark, added, ends, packed, packs)
        packs.clear()
    raise OSError("packs kept changing while reading the index; try again")


def read_copy(path: str, keys: Iterable[str] = ()) -> tuple[Watermark, set[str]]:
    """The watermark of a standalone index copy (snapshot.IndexCopy), and which of `keys`
    have rows in it."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    try:
        mark, _added, _ends, packed = _read(db, None, list(dict.fromkeys(keys)))
    finally:
        db.close()
    return mark, packed
