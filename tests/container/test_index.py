"""packs.idx: schema as disk-objectstore expects it, WAL, short transactions, keyset scans."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from dosfs import Container
from dosfs.container.errors import NotExistent
from dosfs.container.index import IN_CHUNK


def _columns(path: Path) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return [(r[1], r[3], r[5]) for r in conn.execute("PRAGMA table_info(db_object)")]
    finally:
        conn.close()


def test_schema_matches_format(container: Container, folder: Path) -> None:
    cols = _columns(folder / "packs.idx")
    # (name, notnull, pk)
    assert cols == [
        ("id", 0, 1),
        ("hashkey", 1, 0),
        ("compressed", 1, 0),
        ("size", 1, 0),
        ("offset", 1, 0),
        ("length", 1, 0),
        ("pack_id", 1, 0),
    ]
    conn = sqlite3.connect(folder / "packs.idx")
    try:
        indexes = conn.execute("PRAGMA index_list(db_object)").fetchall()
        assert [(i[1], i[2]) for i in indexes] == [("ix_db_object_hashkey", 1)]
        info = conn.execute("PRAGMA index_info(ix_db_object_hashkey)").fetchall()
        assert [i[2] for i in info] == ["hashkey"]
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert tables == {"db_object"}
    finally:
        conn.close()


def test_missing_index_is_created(container: Container, folder: Path) -> None:
    container.close()
    for suffix in ("", "-wal", "-shm"):
        (folder / f"packs.idx{suffix}").unlink(missing_ok=True)
    c = Container(folder)
    assert c.count_objects().packed == 0
    assert (folder / "packs.idx").exists()


def test_lookup_many_crosses_chunks(container: Container) -> None:
    blobs = [i.to_bytes(4, "big") for i in range(IN_CHUNK * 2 + 17)]
    keys = container.add_objects_to_pack(blobs)
    rows, version = container.index.lookup_many(keys + ["f" * 64])
    assert len(rows) == len(keys)
    assert isinstance(version, int)
    # no transaction left open on the thread's connection
    assert not container.index.conn().in_transaction


def test_iter_hashkeys_pages(container: Container) -> None:
    keys = container.add_objects_to_pack([i.to_bytes(3, "big") for i in range(250)])
    assert list(container.index.iter_hashkeys(page=7)) == sorted(keys)
    middle = sorted(keys)[100]
    assert list(container.index.iter_hashkeys(after=middle, page=9)) == sorted(keys)[101:]
    assert not container.index.conn().in_transaction


def test_iter_pack_rows_in_offset_order(small_packs: Container) -> None:
    keys = small_packs.add_objects_to_pack([bytes([i]) * 1000 for i in range(40)])
    seen = []
    for pack_id in small_packs.index.pack_ids():
        offsets = [r[4] for r in small_packs.index.iter_pack_rows(pack_id, page=3)]
        assert offsets == sorted(offsets)
        seen += [r[1] for r in small_packs.index.iter_pack_rows(pack_id)]
    assert sorted(seen) == sorted(keys)


def test_stamp_moves_on_foreign_commit(container: Container) -> None:
    v0 = container.index.stamp()
    other = Container(container.folder)
    other.add_objects_to_pack([b"x"])
    assert container.index.stamp() != v0
    other.close()


def test_connections_of_finished_threads_are_closed(container: Container) -> None:
    import threading

    h = container.add_objects_to_pack([b"x"])[0]

    def read() -> None:
        assert container.get_object_content(h) == b"x"

    for _ in range(20):
        t = threading.Thread(target=read)
        t.start()
        t.join()
    read()  # the main thread opens its own connection and prunes the finished ones
    assert len(container.index._conns) <= 2


def test_index_cache_size_is_configurable(folder: Path) -> None:
    Container(folder).init_container()
    small = Container(folder, index_cache_kib=512)
    assert small.index.conn().execute("PRAGMA cache_size").fetchone()[0] == -512


def test_entry_recent_never_misses_a_new_object_and_releases(container: Container,
                                                             folder: Path) -> None:
    """Lookups from a held snapshot: hits may be up to 50 ms old, misses are asked fresh (a new
    object is found at once, packed straight or loose), and a released snapshot lets a
    checkpoint truncate the WAL."""
    first = container.add_objects_to_pack([b"before the snapshot"])[0]
    assert container.entry_recent(first)[1] == len(b"before the snapshot")
    other = Container(folder)  # another writer, while the snapshot is held
    packed = other.add_objects_to_pack([b"packed after the snapshot began"])[0]
    loose = other.add_object(b"loose after the snapshot began")
    rowid, size = container.entry_recent(packed)
    assert rowid is not None and size == len(b"packed after the snapshot began")
    assert container.entry_recent(loose) == (None, len(b"loose after the snapshot began"))
    with pytest.raises(NotExistent):
        container.entry_recent("0" * 64)

    def truncate() -> tuple[int, int, int]:
        conn = sqlite3.connect(folder / "packs.idx")
        try:
            return conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            conn.close()

    other.add_objects_to_pack([b"a commit for the WAL"])
    assert truncate()[0] == 1  # busy: our snapshot holds the WAL's frames
    container.release_snapshot()
    assert truncate()[0] == 0
    other.close()
