"""nodes/ over a database with AiiDA's db_dbnode table filled directly (no AiiDA needed): listings
page across many round trips without skipping or repeating, ambiguous prefixes are ENOENT, the
database is never locked against a writer, and the tree parser and its cache."""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import subprocess
import uuid as uuidlib
from pathlib import Path
from typing import Any

import pyfuse3
import pytest

from dosfs import Container
from dosfs.fs.nodes import PAGE
from dosfs.fs.operations import Operations
from dosfs.views.rows import Ambiguous
from dosfs.views.sources import SqliteSource
from dosfs.views.trees import TreeCache, parse_tree, walk
from tests.fs.fake_engine import FakeEngine
from tests.fs.test_operations import CTX, lookup_path, trio_test

SCHEMA = ("CREATE TABLE db_dbnode (id INTEGER PRIMARY KEY, uuid VARCHAR(32) NOT NULL UNIQUE, "
          "node_type VARCHAR(255) NOT NULL, label VARCHAR(255) NOT NULL, "
          "repository_metadata JSON NOT NULL)")


def make_db(path: Path, count: int, key: str, extra: tuple[str, ...] = ()) -> list[str]:
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(SCHEMA)
    meta = json.dumps({"o": {"f.txt": {"k": key}, "d": {"o": {}}}})
    uuids = [str(uuidlib.uuid4()) for _ in range(count)] + list(extra)
    db.executemany("INSERT INTO db_dbnode (uuid, node_type, label, repository_metadata) "
                   "VALUES (?, 'data.core.folder.FolderData.', '', ?)",
                   [(u, meta) for u in uuids])
    db.commit()
    db.close()
    return uuids


def test_listing_pages_and_prefixes(mount: Any, tmp_path: Path) -> None:
    folder = tmp_path / "container"
    container = Container(folder)
    container.init_container()
    key = container.add_object(b"same bytes\n")
    count = 2 * PAGE + 500
    twins = ("abcdef01-0000-4000-8000-000000000001", "abcdef01-0000-4000-8000-000000000002")
    uuids = make_db(tmp_path / "db.sqlite", count, key, twins)
    m = mount(folder, f"aiida_db={tmp_path / 'db.sqlite'}")
    by_pk = m.path / "nodes" / "by-pk"
    listed = subprocess.run(["ls", "-f", by_pk], check=True, capture_output=True,
                            text=True).stdout.split()
    pks = [int(n) for n in listed if n not in (".", "..")]
    assert pks == list(range(1, len(uuids) + 1))  # in pk order, none skipped or repeated
    by_uuid = sorted(n for n in os.listdir(m.path / "nodes" / "by-uuid"))
    assert by_uuid == sorted(uuids)
    assert (by_pk / "2000" / "f.txt").read_bytes() == b"same bytes\n"
    assert os.listdir(by_pk / "1" / "d") == []
    for ambiguous in ("abcdef01", twins[1][:-1]):
        with pytest.raises(OSError) as info:
            os.stat(m.path / "nodes" / "by-uuid" / ambiguous)
        assert info.value.errno == errno.ENOENT
    assert os.readlink(m.path / "nodes" / "by-uuid" / uuids[5][:12]) == uuids[5]


def test_source_never_locks_out_a_writer(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    uuids = make_db(tmp_path / "db.sqlite", 10, "00" * 32)
    source = SqliteSource(path)
    assert source.node(3) is not None and source.node(99) is None
    writer = sqlite3.connect(path, timeout=0)  # a writer that does not wait at all
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO db_dbnode (uuid, node_type, label, repository_metadata) "
                   "VALUES ('u', 't', 'l', '{}')")
    assert [pk for pk, _u in source.pks_after(0, 100)] == list(range(1, 11))  # reads go on
    writer.commit()
    assert len(source.pks_after(0, 100)) == 11  # and see the commit at once
    writer.execute("BEGIN EXCLUSIVE")  # nothing of ours is in the way
    writer.rollback()
    with pytest.raises(sqlite3.OperationalError):
        source._conn().execute("CREATE TABLE x (y)")  # read-only
    assert source.resolve_prefix(uuids[0][:8]) == uuids[0]
    assert source.resolve_prefix(uuids[0][:7]) is None
    assert source.resolve_prefix("%%%%%%%%") is None
    make_db_twins = sqlite3.connect(path)
    make_db_twins.executemany("INSERT INTO db_dbnode (uuid, node_type, label, "
                              "repository_metadata) VALUES (?, 't', 'l', '{}')",
                              [("12345678-a",), ("12345678-b",)])
    make_db_twins.commit()
    with pytest.raises(Ambiguous):
        source.resolve_prefix("12345678")
    source.close()


def test_tree_parser_and_cache() -> None:
    tree = parse_tree(json.dumps({"o": {"b": {"o": {"c": {"k": "h1"}}}, "a": {"k": "h2"},
                                        "empty": {}, "x/y": {"k": "h3"}, "..": {"k": "h4"}}}))
    assert list(tree) == ["a", "b", "empty"]  # sorted; names no filesystem can show dropped
    assert walk(tree, ("b", "c")) == "h1" and walk(tree, ("empty",)) == {}
    assert walk(tree, ("a", "x")) is None and walk(tree, ("nope",)) is None
    assert parse_tree("{}") == {}
    with pytest.raises(ValueError):
        parse_tree("[1]")
    cache = TreeCache(2)
    for pk in (1, 2, 3):
        cache.put(pk, f"u{pk}", {})
    assert len(cache) == 2 and cache.get(1) is None and cache.get(3) == ("u3", {})


def test_cli_views_help_and_a_wrong_database(tmp_path: Path, fuse: None) -> None:
    from tests.fs.conftest import DOSFS, FSNAME

    out = subprocess.run([*DOSFS, "views"], check=True, capture_output=True, text=True).stdout
    assert "nodes/by-pk/<pk>" in out and "postgresql://" in out
    assert "--aiida-db" in subprocess.run([*DOSFS, "mount", "--help"], check=True,
                                          capture_output=True, text=True).stdout
    folder = tmp_path / "container"
    Container(folder).init_container()
    (tmp_path / "mnt").mkdir()
    (tmp_path / "not-a-db").write_text("hello")
    for db in (tmp_path / "missing.sqlite", tmp_path / "not-a-db"):
        proc = subprocess.run([*DOSFS, "mount", "-o", f"fsname={FSNAME}", "--aiida-db", str(db),
                               str(folder), str(tmp_path / "mnt")], capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode != 0 and "cannot open the AiiDA database" in proc.stderr, proc
        assert not os.path.ismount(tmp_path / "mnt")


@trio_test
async def test_dotdot_lookups_are_counted_like_any_entry(tmp_path: Path) -> None:
    """A lookup reply is one kernel reference, `..` included: its later FORGET must not take
    a reference the daemon never counted (the folder would be dropped while still known)."""
    engine = FakeEngine(tmp_path)
    db = sqlite3.connect(tmp_path / "db.sqlite")
    db.execute(SCHEMA)
    db.execute("INSERT INTO db_dbnode (uuid, node_type, label, repository_metadata) VALUES "
               "(?, 'data.core.folder.FolderData.', '', ?)",
               (str(uuidlib.uuid4()), json.dumps({"o": {"d": {"o": {"e": {"o": {}}}}}})))
    db.commit()
    db.close()
    ops = Operations(engine, views=SqliteSource(tmp_path / "db.sqlite"))
    try:
        d = await lookup_path(ops, "nodes/by-pk/1/d")
        e = await ops.lookup(d.st_ino, b"e", CTX)
        assert ops.table.get(d.st_ino).lookups == 1
        up = await ops.lookup(e.st_ino, b"..", CTX)
        assert up.st_ino == d.st_ino and ops.table.get(d.st_ino).lookups == 2
        await ops.forget([(d.st_ino, 1)])  # the reference of the first lookup
        assert (await ops.getattr(d.st_ino, CTX)).st_ino == d.st_ino  # `..`'s still holds it
        await ops.forget([(e.st_ino, 1), (d.st_ino, 1)])
        with pytest.raises(pyfuse3.FUSEError):  # now nothing does
            await ops.getattr(d.st_ino, CTX)
    finally:
        ops.offload.close()
