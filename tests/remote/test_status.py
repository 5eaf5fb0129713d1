"""`dosfs status s3://BUCKET/PREFIX` against the real S3 gateway: what it reports after one and
two pushes, the object count of older generations (no `objects` field: counted from the index
snapshot), prune candidates, --json through the real CLI, and one clear error line."""

from __future__ import annotations

import calendar
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import obstore
import pytest

from dosfs.container import Container
from dosfs.remote.layout import generation_key
from dosfs.remote.push import push
from dosfs.remote.status import status
from dosfs.remote.url import RemoteError
from tests.remote.conftest import S3Server
from tests.remote.legacy import downgrade

DOSFS = [sys.executable, "-m", "dosfs.cli"]


@pytest.fixture
def aws_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    yield


def _container(folder: Path, n: int = 20) -> None:
    with Container(folder) as c:
        c.init_container()
        c.add_objects_to_pack([os.urandom(100 + i) for i in range(n)])
        c.add_objects_to_pack([os.urandom(300_000)], compress=True)
        c.add_object(b"loose one")
        c.add_object(os.urandom(5000))


def _total(folder: Path) -> tuple[int, str]:
    with Container(folder) as c:
        count = c.count_objects()
        return count.packed + count.loose, c.container_id


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DOSFS, *args], env=env, capture_output=True, text=True, timeout=120)


def test_status_after_one_and_two_pushes(tmp_path: Path, bucket: str, aws_env: None) -> None:
    folder = tmp_path / "c"
    _container(folder)
    target = f"s3://{bucket}/group/repo"
    before = time.time()
    push(folder, target)
    total, cid = _total(folder)
    st = status(target)
    assert (st.generation, st.objects, st.objects_from) == (1, total, "generation")
    assert st.url == target and st.container_id == cid and st.hash_type == "sha256"
    assert st.generations == [1] and st.prune_candidates == []
    assert st.packs == 2 and st.segments == 2  # one pack + the loose segment
    assert st.segments_bytes > 300_000 and st.index_size > 0 and st.objects_size
    created = calendar.timegm(time.strptime(st.created, "%Y-%m-%dT%H:%M:%SZ"))
    assert before - 2 <= created <= time.time() + 2  # UTC, to the second

    with Container(folder) as c:
        c.add_objects_to_pack([os.urandom(777)])  # the pack grows: one more segment
    push(folder, target)
    total2, _ = _total(folder)
    st2 = status(target)
    assert (st2.generation, st2.objects) == (2, total2) and total2 == total + 1
    assert st2.generations == [1, 2] and st2.prune_candidates == []
    assert st2.segments == 3 and st2.segments_bytes > st.segments_bytes

    with Container(folder) as c:
        c.add_objects_to_pack([os.urandom(778)])
    push(folder, target)
    assert status(target).prune_candidates == []  # younger than the 24 h grace
    st3 = status(target, grace=0)
    assert st3.generations == [1, 2, 3] and st3.prune_candidates == [1]  # never 2 (previous)


def test_older_generation_without_counts(
    tmp_path: Path, bucket: str, aws_env: None, s3_server: S3Server
) -> None:
    """Generations written before `objects`/`bytes` existed (format 1, a SQLite snapshot as the
    index): the snapshot's rows are counted."""
    folder = tmp_path / "c"
    _container(folder, n=50)
    with Container(folder) as c:
        c.pack_all_loose()
        c.clean_storage()
    target = f"s3://{bucket}/old"
    push(folder, target)
    store = s3_server.store(bucket)
    downgrade(store, "old", folder, 1)
    key = f"old/{generation_key(1, 'json')}"
    data = json.loads(bytes(obstore.get(store, key).bytes()))
    counted = status(target)
    del data["objects"], data["bytes"]
    obstore.put(store, key, json.dumps(data).encode())
    st = status(target)
    assert st.objects_from == "index"
    assert (st.objects, st.objects_size) == (counted.objects, counted.objects_size)
    assert st.objects == _total(folder)[0]


def test_cli_status_json_and_text(tmp_path: Path, bucket: str, s3_server: S3Server) -> None:
    folder = tmp_path / "c"
    _container(folder)
    env = {**os.environ, **s3_server.env}
    target = f"s3://{bucket}/cli"
    assert _cli(env, "push", str(folder), target).returncode == 0
    r = _cli(env, "status", target, "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["generation"] == 1 and info["objects"] == _total(folder)[0]
    for field in ("url", "created", "container_id", "hash_type", "packs", "segments",
                  "segments_bytes", "index_size", "generations", "prune_candidates"):
        assert field in info
    text = _cli(env, "status", target)
    assert text.returncode == 0 and "generation  1, created " in text.stdout
    local = _cli(env, "status", str(folder), "--json")  # the local form still works
    assert local.returncode == 0 and json.loads(local.stdout)["count_packed"] > 0
    assert "s3://BUCKET/PREFIX" in _cli(env, "status", "--help").stdout


def _one_line(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 1, r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dosfs: error: "), r.stderr
    return lines[0]


def test_cli_errors_are_one_line(tmp_path: Path, bucket: str, s3_server: S3Server) -> None:
    env = {**os.environ, **s3_server.env}
    assert "does not exist" in _one_line(_cli(env, "status", "s3://missing-bucket/x"))
    assert "nothing published" in _one_line(_cli(env, "status", f"s3://{bucket}/empty"))
    bad = {**env, "AWS_SECRET_ACCESS_KEY": "wrong-secret"}
    assert "access denied" in _one_line(_cli(bad, "status", f"s3://{bucket}/x"))
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = {**env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    start = time.monotonic()
    assert f"s3://{bucket}/x" in _one_line(_cli(down, "status", f"s3://{bucket}/x", "--timeout",
                                                "2"))
    assert time.monotonic() - start < 30


def test_status_errors_are_remote_errors(bucket: str, aws_env: None) -> None:
    with pytest.raises(RemoteError, match="does not exist"):
        status("s3://dosfs-no-such-bucket-here/x")
    with pytest.raises(RemoteError, match="nothing published"):
        status(f"s3://{bucket}/empty")


def test_grace_counts_from_when_a_generation_was_replaced(
    tmp_path: Path, bucket: str, aws_env: None, s3_server: S3Server
) -> None:
    """A generation created long ago but replaced a moment ago must outlive the grace period
    counted from its replacement: a mount may have opened it just before."""
    from dosfs.remote.layout import read_head
    from dosfs.remote.prune import plan
    from dosfs.remote.url import make_store, parse_url

    folder = tmp_path / "c"
    with Container(folder) as c:
        c.init_container()
    target = f"s3://{bucket}/repo"
    for i in range(3):
        with Container(folder) as c:
            c.add_object(f"object {i}".encode())
        push(folder, target)
    store = s3_server.store(bucket)
    now = time.time()
    for n, created in ((1, now - 10 * 86400), (2, now - 10)):  # 1: old, replaced 10 s ago
        key = f"repo/{generation_key(n, 'json')}"
        data = json.loads(bytes(obstore.get(store, key).bytes()))
        data["created"] = created
        obstore.put(store, key, json.dumps(data).encode())
    url = parse_url(target)
    current = read_head(make_store(url), url)
    assert current is not None and current.number == 3
    assert plan(make_store(url), url, current, grace=3600, now=now).doomed == []
    assert plan(make_store(url), url, current, grace=5, now=now).doomed == [1]
