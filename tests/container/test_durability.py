"""The order of system calls that makes every write durable, watched with strace.

A crash (power loss) between two steps must leave a container that validates and has lost
nothing it reported stored. That holds only if each step is on disk before the next one makes
it reachable: data fsynced before the rename that publishes it, the folder fsynced after the
rename, pack bytes fsynced before the index commit (whose WAL is fsynced: synchronous=FULL),
and loose copies unlinked only after that commit. These tests run each operation in a child
under `strace -f -y` and check the order; deleting any of those fsyncs fails one of them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from dosfs import Container

pytestmark = pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")

_CALL = re.compile(r"^(?:\[pid\s+)?\d+\]?\s+(\w+)\((.*)\)\s+=\s+(-?\d+)")
_FD_PATH = re.compile(r"^\d+<([^>]*)>")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


@dataclass
class Call:
    n: int
    name: str
    paths: list[str]
    offset: int = -1  # of a pwrite64


def trace(folder: Path, code: str, tmp_path: Path) -> list[Call]:
    """Run `code` (with `c = Container(folder)`) under strace; the successful calls."""
    script = tmp_path / "op.py"
    script.write_text(
        f"from dosfs import Container\nc = Container({str(folder)!r})\n"
        + textwrap.dedent(code)
        + "\nc.close()\n"
    )
    out = tmp_path / "strace.txt"
    subprocess.run(
        [
            "strace", "-f", "-y", "-qq", "-o", str(out),
            "-e", "trace=fsync,fdatasync,rename,renameat,renameat2,unlink,unlinkat,link,"
            "linkat,mkdir,mkdirat,pwrite64,write",
            sys.executable, str(script),
        ],
        check=True,
        timeout=120,
    )
    calls = []
    for line in out.read_text().splitlines():
        m = _CALL.match(line.strip())
        if not m or int(m.group(3)) < 0:
            continue
        name, args = m.group(1), m.group(2)
        fd = _FD_PATH.match(args)
        paths = [fd.group(1)] if fd else []
        paths += _QUOTED.findall(args)
        offset = int(args.rsplit(",", 1)[1]) if name == "pwrite64" else -1
        calls.append(Call(len(calls), name, paths, offset))
    return calls


def find(calls: list[Call], names: tuple[str, ...], needle: str) -> list[int]:
    """Positions of calls named one of `names` whose first path ends with / contains `needle`."""
    return [c.n for c in calls if c.name in names and c.paths and needle in c.paths[0]]


SYNC = ("fsync", "fdatasync")
RENAME = ("rename", "renameat", "renameat2")
UNLINK = ("unlink", "unlinkat")
WRITE = ("pwrite64", "write")


def wal_commits(calls: list[Call]) -> list[int]:
    """fsyncs of packs.idx-wal that follow a write of frames to it (past its 32-byte header,
    which a writer restarting the WAL syncs on its own): the durable index commits."""
    commits = []
    wrote = False
    for c in calls:
        if c.paths and c.paths[0].endswith("packs.idx-wal"):
            if c.name in WRITE and c.offset > 0:
                wrote = True
            elif c.name in SYNC and wrote:
                commits.append(c.n)
                wrote = False
    return commits


def test_loose_commit_order(container: Container, tmp_path: Path) -> None:
    folder = container.folder
    calls = trace(folder, "print(c.add_object(b'durable loose object'))", tmp_path)
    h = __import__("hashlib").sha256(b"durable loose object").hexdigest()
    staged_sync = find(calls, SYNC, "/sandbox/")
    renames = [c.n for c in calls if c.name in RENAME and c.paths[-1].endswith(h[2:])]
    mkdirs = [c.n for c in calls if c.name.startswith("mkdir") and c.paths[0].endswith(h[:2])]
    shard_sync = find(calls, SYNC, f"/loose/{h[:2]}")
    loose_sync = [c.n for c in calls if c.name in SYNC and c.paths[0].endswith("/loose")]
    assert staged_sync and renames and shard_sync and mkdirs and loose_sync, calls
    assert staged_sync[-1] < renames[0] < shard_sync[-1]  # data, publish, the folder entry
    assert mkdirs[0] < loose_sync[0] < renames[0]  # a new shard folder is durable first


def test_pack_all_loose_order(container: Container, tmp_path: Path) -> None:
    for i in range(20):
        container.add_object(b"to be packed %d" % i)
    calls = trace(container.folder, "c.pack_all_loose(clean_loose_per_pack=True)", tmp_path)
    pack_sync = find(calls, SYNC, "/packs/0")
    packs_dir_sync = [c.n for c in calls if c.name in SYNC and c.paths[0].endswith("/packs")]
    commits = wal_commits(calls)
    unlinks = find(calls, UNLINK, "/loose/")
    assert pack_sync and packs_dir_sync and commits and len(unlinks) == 20, calls
    assert pack_sync[0] < commits[0] and packs_dir_sync[0] < commits[0]
    assert commits[0] < unlinks[0]  # loose copies go only after the rows are on disk


def test_repack_order(container: Container, tmp_path: Path) -> None:
    keys = container.add_objects_to_pack([b"repack me %d " % i * 30 for i in range(40)])
    container.delete_objects(keys[:20])
    calls = trace(container.folder, "c.repack()", tmp_path)
    new_sync = find(calls, SYNC, "/packs/-1")
    commits = wal_commits(calls)
    links = [c.n for c in calls if c.name in ("link", "linkat") and c.paths[0].endswith("/-1")]
    replace = [c.n for c in calls if c.name in RENAME and c.paths[-1].endswith("/packs/0")]
    dir_syncs = [c.n for c in calls if c.name in SYNC and c.paths[0].endswith("/packs")]
    drop = [c.n for c in calls if c.name in UNLINK and c.paths[0].endswith("/packs/-1")]
    assert new_sync and len(commits) >= 2 and links and replace and drop, calls
    assert new_sync[-1] < commits[0] < links[0] < replace[0]  # new bytes, rows to -1, swap
    after_replace = [n for n in dir_syncs if n > replace[0]]
    assert after_replace and after_replace[0] < commits[1]  # the swap is durable, rows back
    assert commits[1] < drop[0]
    assert [n for n in dir_syncs if n > drop[0]], "removal of -1 not made durable"


def test_clean_storage_order(container: Container, tmp_path: Path) -> None:
    data = b"restored from duplicates"
    h = __import__("hashlib").sha256(data).hexdigest()
    (container.folder / "duplicates" / f"{h}.x").write_bytes(data)
    calls = trace(container.folder, "c.clean_storage()", tmp_path)
    renames = [c.n for c in calls if c.name in RENAME and c.paths[-1].endswith(h[2:])]
    shard_sync = find(calls, SYNC, f"/loose/{h[:2]}")
    assert renames and shard_sync and renames[0] < shard_sync[-1], calls
    assert Container(container.folder).get_object_content(h) == data


def test_write_connections_commit_with_a_wal_fsync(container: Container, tmp_path: Path) -> None:
    """synchronous=FULL: every index commit fsyncs the WAL (NORMAL would not, before loose
    copies are removed)."""
    calls = trace(container.folder, "c.add_objects_to_pack([b'one'])\nc.add_objects_to_pack"
                  "([b'two'])", tmp_path)
    assert len(wal_commits(calls)) >= 2
