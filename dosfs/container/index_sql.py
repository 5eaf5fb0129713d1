"""The statements and row shapes of packs.idx that the index runs (index.py runs them)."""

from __future__ import annotations

from typing import Final

_ROW_COLS = "compressed, size, offset, length, pack_id"
SQL_LOOKUP = (
    f"SELECT {_ROW_COLS}, (SELECT data_version FROM pragma_data_version) + ?, id "
    "FROM db_object WHERE hashkey = ?"
)
SQL_BY_ID = (
    f"SELECT {_ROW_COLS}, (SELECT data_version FROM pragma_data_version) + ?, id, hashkey "
    "FROM db_object WHERE id = ?"
)
SQL_STAMP = "SELECT data_version + ? FROM pragma_data_version"
#: what a lookup of the mount needs: no stamp (nothing is read), so no pragma subquery (3 µs)
SQL_ENTRY = "SELECT id, size FROM db_object WHERE hashkey = ?"
SQL_INSERT = (
    "INSERT OR IGNORE INTO db_object (hashkey, compressed, size, offset, length, pack_id) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)

#: (compressed, size, offset, length, pack_id, stamp, id) as `lookup` returns it
LookupRow = tuple[int, int, int, int, int, int, int]
#: a LookupRow and the hashkey, as `by_id` returns it
IdRow = tuple[int, int, int, int, int, int, int, str]
#: (hashkey, compressed, size, offset, length, pack_id)
FullRow = tuple[str, int, int, int, int, int]
#: (id, hashkey, compressed, size, offset, length) of one pack, as `iter_pack_rows` yields it
PackRow = tuple[int, str, int, int, int, int]

# Named positions in the rows above: rows stay plain tuples (SQLite makes them; a NamedTuple
# would cost ~0.5 µs per row, 10% of a bulk read), and code says which column it means.
# (Final: mypy then knows each column's type.)
#: in a LookupRow (and the first seven of an IdRow; IdRow adds the hashkey)
L_COMPRESSED: Final = 0
L_SIZE: Final = 1
L_OFFSET: Final = 2
L_LENGTH: Final = 3
L_PACK: Final = 4
L_STAMP: Final = 5
L_ID: Final = 6
L_HASHKEY: Final = 7
#: in a FullRow
F_HASHKEY: Final = 0
F_COMPRESSED: Final = 1
F_SIZE: Final = 2
F_OFFSET: Final = 3
F_LENGTH: Final = 4
F_PACK: Final = 5
