"""nodes/ through a real mount of a real AiiDA profile: names, bytes and xattrs equal what
AiiDA returns; a node stored after mounting appears; packing while mounted changes nothing a
reader sees; writes and unknown names get their errno."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dosfs import Container
from tests.fs.conftest import FSNAME, fsname_mounts
from tests.views.conftest import Profile


def walk(folder: Path) -> dict[str, Any]:
    """The tree under `folder` as the mount shows it: names -> sub-tree or content (hex)."""
    out: dict[str, Any] = {}
    for name in os.listdir(folder):
        path = folder / name
        out[name] = walk(path) if path.is_dir() else path.read_bytes().hex()
    return out


def files(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for name, entry in tree.items():
        if isinstance(entry, dict):
            out.update(files(entry, f"{prefix}{name}/"))
        else:
            out[prefix + name] = entry
    return out


def test_nodes_equal_aiida(mount: Any, make_profile: Any) -> None:
    profile: Profile = make_profile()
    m = mount(profile.container, f"aiida_db={profile.database}")
    nodes = m.path / "nodes"
    assert sorted(os.listdir(m.path)) == ["by-hash", "incoming", "nodes"]
    assert sorted(os.listdir(nodes)) == ["by-pk", "by-uuid"]
    listed = subprocess.run(["ls", nodes / "by-pk"], check=True, capture_output=True,
                            text=True).stdout.split()
    assert sorted(int(pk) for pk in listed) == sorted(n["pk"] for n in profile.nodes)
    assert sorted(os.listdir(nodes / "by-uuid")) == sorted(n["uuid"] for n in profile.nodes)
    kinds = {n["node_type"] for n in profile.nodes}
    assert any("SinglefileData" in k for k in kinds) and any("CalcJobNode" in k for k in kinds)
    for node in profile.nodes:
        by_pk = nodes / "by-pk" / str(node["pk"])
        assert walk(by_pk) == node["tree"], node["label"]
        assert walk(nodes / "by-uuid" / node["uuid"]) == node["tree"]
        short = nodes / "by-uuid" / node["uuid"][:8]
        assert os.readlink(short) == node["uuid"]
        assert walk(short) == node["tree"]
        out = subprocess.run(["getfattr", "-d", by_pk], check=True, capture_output=True,
                             text=True).stdout
        assert f'user.dosfs.uuid="{node["uuid"]}"' in out
        assert f'user.dosfs.node_type="{node["node_type"]}"' in out
        assert f'user.dosfs.label="{node["label"]}"' in out
        for rel, content in files(node["tree"]).items():
            data = bytes.fromhex(content)
            cat = subprocess.run(["cat", by_pk / rel], check=True, capture_output=True).stdout
            assert cat == data
            key = hashlib.sha256(data).hexdigest()
            assert os.getxattr(by_pk / rel, "user.dosfs.hash") == key.encode()
            assert os.stat(by_pk / rel).st_size == len(data)
            # the same file as by-hash/: one inode, one page cache
            assert os.stat(by_pk / rel).st_ino == os.stat(m.by_hash / key).st_ino
    retrieved = next(n for n in profile.nodes if n["label"] == "retrieved")
    assert (nodes / "by-pk" / str(retrieved["pk"]) / "aiida.out").read_bytes().startswith(b"result")


def test_errnos(mount: Any, make_profile: Any) -> None:
    profile: Profile = make_profile()
    m = mount(profile.container, f"aiida_db={profile.database}")
    nodes = m.path / "nodes"
    node = next(n for n in profile.nodes if n["label"] == "folder")
    folder = nodes / "by-pk" / str(node["pk"])
    for missing in (nodes / "by-pk" / "999999", nodes / "by-pk" / f"0{node['pk']}",
                    nodes / "by-pk" / "x", nodes / "by-uuid" / node["uuid"][:7],
                    nodes / "by-uuid" / ("0" * 8), nodes / "by-uuid" / node["uuid"].upper(),
                    folder / "nope", folder / "a.txt" / "x", nodes / "other"):
        with pytest.raises(OSError) as info:
            os.stat(missing)
        assert info.value.errno in (errno.ENOENT, errno.ENOTDIR), missing
    actions = (
        lambda: os.open(folder / "a.txt", os.O_WRONLY),
        lambda: os.open(folder / "new", os.O_CREAT | os.O_WRONLY),
        lambda: os.mkdir(folder / "d"),
        lambda: os.unlink(folder / "a.txt"),
        lambda: os.rename(folder / "a.txt", folder / "b"),
        lambda: os.mkdir(nodes / "by-pk" / "5555"),
    )
    for action in actions:
        with pytest.raises(OSError) as info:
            action()
        assert info.value.errno in (errno.EROFS, errno.EACCES)


def test_live_new_nodes_and_packing(mount: Any, make_profile: Any) -> None:
    profile: Profile = make_profile()
    m = mount(profile.container, f"aiida_db={profile.database}")
    nodes = m.path / "nodes"
    before = {n["pk"]: walk(nodes / "by-pk" / str(n["pk"])) for n in profile.nodes}
    big = next(n for n in profile.nodes if n["label"] == "folder")
    handle = open(nodes / "by-pk" / str(big["pk"]) / "big.bin", "rb")  # noqa: SIM115
    try:
        first = handle.read(1000)
        late = profile.run("add")["nodes"][0]
        # no remount, no waiting: the lookup asks the database
        assert walk(nodes / "by-pk" / str(late["pk"])) == late["tree"]
        assert str(late["pk"]) in os.listdir(nodes / "by-pk")
        assert late["uuid"] in os.listdir(nodes / "by-uuid")
        # AiiDA packs (verdi storage maintain --full) while the view is mounted and a file open
        profile.run("maintain")
        assert not any((profile.container / "loose").rglob("*/*")), "maintain packed nothing"
        rest = handle.read()
    finally:
        handle.close()
    assert first + rest == bytes.fromhex(big["tree"]["big.bin"])
    for node in profile.nodes:
        assert walk(nodes / "by-pk" / str(node["pk"])) == before[node["pk"]]
    hello = next(n for n in profile.nodes if n["label"] == "single")
    path = nodes / "by-pk" / str(hello["pk"]) / "hello.txt"
    assert os.getxattr(path, "user.dosfs.type") == b"packed"


def test_a_container_that_is_not_the_profiles_is_refused(
    mount: Any, make_profile: Any, tmp_path: Path
) -> None:
    """Issue 22: --aiida-db with another container showed empty node folders."""
    profile: Profile = make_profile()
    other = tmp_path / "other"
    Container(other).init_container()
    mnt = tmp_path / "refused"
    mnt.mkdir()
    for form in (["--aiida-db", str(profile.database)], ["-o", f"aiida_db={profile.database}"]):
        done = subprocess.run(
            [sys.executable, "-m", "dosfs.cli", "mount", "-o", f"fsname={FSNAME}", *form,
             str(other), str(mnt)], capture_output=True, text=True, timeout=60,
        )
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and len(lines) == 1, done.stderr
        assert lines[0].startswith("dosfs: error: ") and "repository" in lines[0], lines[0]
        assert Container(profile.container).container_id in lines[0]
        assert str(mnt) not in fsname_mounts()
    # a database that does not record its repository is not refused (nothing to compare)
    bare = tmp_path / "bare.sqlite"
    shutil.copy(profile.database, bare)
    with sqlite3.connect(bare) as conn:
        conn.execute("DELETE FROM db_dbsetting WHERE key = 'repository|uuid'")
    m = mount(profile.container, f"aiida_db={bare}")
    node = profile.nodes[0]
    assert walk(m.path / "nodes" / "by-pk" / str(node["pk"])) == node["tree"]


def _copy_node(conn: sqlite3.Connection, pk: int, new_pk: int, uuid: str,
               metadata: str | None = None) -> None:
    """A copy of row `pk` as `new_pk` with another uuid (and repository_metadata)."""
    cols = [r[1] for r in conn.execute("PRAGMA table_info(db_dbnode)")]
    values = dict(zip(cols, conn.execute("SELECT * FROM db_dbnode WHERE id = ?",
                                         (pk,)).fetchone(), strict=True))
    values.update(id=new_pk, uuid=uuid)
    if metadata is not None:
        values["repository_metadata"] = metadata
    conn.execute(f"INSERT INTO db_dbnode ({', '.join(cols)}) VALUES "
                 f"({', '.join('?' * len(cols))})", [values[c] for c in cols])


def test_a_damaged_database_serves_the_rest(mount: Any, make_profile: Any) -> None:
    """Issue 22: one bad uuid made every listing EIO; one bad name or entry a whole node EIO;
    a short key showed as a link to an object the node does not reference."""
    import json

    profile: Profile = make_profile()
    single = next(n for n in profile.nodes if n["label"] == "single")
    key = hashlib.sha256(b"hello from aiida\n").hexdigest()
    hostile = {"o": {
        "good.txt": {"k": key},
        "sub": {"o": {"inner.txt": {"k": key}, "bad\u0000nul": {"k": key}}},
        "x" * 300: {"k": key},                      # over 255 bytes
        "\udc80broken": {"k": key},                  # not valid Unicode
        "not-an-object": 5,
        "short-key": {"k": key[:8]},                 # would resolve as a short hash
        "number-key": {"k": 7},
        "..": {"k": key},
    }}
    with sqlite3.connect(profile.database) as conn:
        _copy_node(conn, single["pk"], 9001, "zzzzzzzz-not-a-uuid")       # sorts last
        _copy_node(conn, single["pk"], 9002, "0000000g-0000-0000-0000-000000000000")  # first
        _copy_node(conn, single["pk"], 9003, "7ee1e7ee-0000-4000-8000-000000000003",
                   json.dumps(hostile))
        _copy_node(conn, single["pk"], 9004, "7ee1e7ee-0000-4000-8000-000000000004", "[1, 2]")
    m = mount(profile.container, f"aiida_db={profile.database}")
    nodes = m.path / "nodes"
    for _ in range(2):  # a second pass logs nothing new
        pks = set(os.listdir(nodes / "by-pk"))
        assert {str(n["pk"]) for n in profile.nodes} | {"9003", "9004"} == pks
        uuids = set(os.listdir(nodes / "by-uuid"))
        assert {n["uuid"] for n in profile.nodes} < uuids
        assert not any("z" in u or "g" in u for u in uuids)
        for pk in ("9001", "9002"):
            with pytest.raises(FileNotFoundError):
                os.listdir(nodes / "by-pk" / pk)
        crafted = nodes / "by-pk" / "9003"
        assert walk(crafted) == {"good.txt": b"hello from aiida\n".hex(),
                                 "sub": {"inner.txt": b"hello from aiida\n".hex()}}
        with pytest.raises(FileNotFoundError):
            os.lstat(crafted / "short-key")
        assert os.listdir(nodes / "by-pk" / "9004") == []  # not AiiDA's format: empty
        assert walk(nodes / "by-pk" / str(single["pk"])) == single["tree"]
    warnings = [line for line in m.log_text().splitlines() if " WARNING " in line]
    assert len(warnings) == 10, "\n".join(warnings)
    for words in ("node 9001: its uuid", "node 9002: its uuid", "over 255", "not valid Unicode",
                  "NUL", "not-an-object: the entry is not an object", "short-key", "number-key",
                  "the name '..'", "node 9004: repository_metadata is not an object"):
        assert sum(words in line for line in warnings) == 1, (words, warnings)
