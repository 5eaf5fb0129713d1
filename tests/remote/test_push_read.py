"""push a local container to the real S3 gateway, read it back with RemoteContainer.

A generation is published whole, a second push sends nothing new, every object (packed and
loose) reads back verified, a corrupted remote byte is an error, never data, and pull makes a
container disk-objectstore validates. The s3 mount is tested in test_mount_s3.py."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import obstore
import pytest

from dosfs import RemoteContainer
from dosfs.container import Container, CorruptObject
from dosfs.remote.pull import pull
from dosfs.remote.push import push
from dosfs.remote.url import RemoteError
from tests.remote.conftest import S3Server


def _container(folder: Path) -> dict[str, bytes]:
    objects: dict[str, bytes] = {}
    with Container(folder) as c:
        c.init_container()
        for data in [os.urandom(n) for n in (0, 1, 1000, 300_000)]:
            objects[c.add_objects_to_pack([data])[0]] = data
        big = os.urandom(5 * 1024 * 1024)
        objects[c.add_objects_to_pack([big], compress=True)[0]] = big
        for data in [b"loose one", os.urandom(70_000)]:
            objects[c.add_object(data)] = data
    return objects


def test_push_then_read_everything(tmp_path: Path, bucket: str, aws_env: None) -> None:
    objects = _container(tmp_path / "c")
    target = f"s3://{bucket}/group/repo"
    first = push(tmp_path / "c", target)
    assert first.generation == 1 and first.uploaded_bytes > 5_000_000
    with RemoteContainer(target) as rc:
        assert sorted(rc.list_all_objects()) == sorted(objects)
        for h, data in objects.items():
            assert rc.get_object_content(h) == data
        got = rc.get_objects_content(list(objects))
        assert got == objects
        seen = {}
        with rc.get_objects_stream_and_meta(list(objects)) as triplets:
            for h, stream, meta in triplets:
                assert meta["type"] != "missing"
                seen[h] = stream.read()
        assert seen == objects
        big = max(objects, key=lambda h: len(objects[h]))
        with rc.get_object_stream(big) as stream:
            stream.seek(4_000_000)
            assert stream.read(1000) == objects[big][4_000_000:4_001_000]
    again = push(tmp_path / "c", target)
    assert again.uploaded_bytes == 0  # nothing new: nothing sent


def test_new_objects_make_a_new_generation(tmp_path: Path, bucket: str, aws_env: None) -> None:
    objects = _container(tmp_path / "c")
    target = f"s3://{bucket}/repo"
    push(tmp_path / "c", target)
    with Container(tmp_path / "c") as c:
        extra = os.urandom(2000)
        objects[c.add_objects_to_pack([extra])[0]] = extra
    report = push(tmp_path / "c", target)
    assert report.generation == 2
    with RemoteContainer(target) as rc:
        assert rc.get_objects_content(list(objects)) == objects


def test_corrupt_remote_bytes_are_never_served(
    tmp_path: Path, bucket: str, aws_env: None, s3_server: S3Server
) -> None:
    objects = _container(tmp_path / "c")
    target = f"s3://{bucket}/repo"
    push(tmp_path / "c", target)
    store = s3_server.store(bucket)
    keys = [m["path"] for batch in obstore.list(store, prefix="repo/segments/") for m in batch]
    pack_key = next(k for k in keys if "/0-" in k)
    data = bytearray(obstore.get(store, pack_key).bytes())
    data[1] ^= 0xFF  # inside the 1-byte or 1000-byte object: a flipped byte
    obstore.put(store, pack_key, bytes(data))
    with RemoteContainer(target) as rc:
        bad = 0
        for h in objects:
            try:
                assert rc.get_object_content(h) == objects[h]
            except CorruptObject:
                bad += 1
        assert bad == 1


def test_missing_bucket_and_bad_credentials_are_one_clear_line(
    bucket: str, aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(RemoteError, match="nothing published"):
        RemoteContainer(f"s3://{bucket}/empty")
    with pytest.raises(RemoteError, match="does not exist|nothing published"):
        RemoteContainer("s3://dosfs-no-such-bucket-here/x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    with pytest.raises(RemoteError, match="access denied"):
        RemoteContainer(f"s3://{bucket}/x")


def test_server_down_fails_within_the_timeout(
    bucket: str, aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    start = time.monotonic()
    with pytest.raises(RemoteError):
        RemoteContainer(f"s3://{bucket}/x", timeout=2.0)
    assert time.monotonic() - start < 30  # bounded: never hangs


def test_pull_makes_a_container_disk_objectstore_validates(
    tmp_path: Path, bucket: str, aws_env: None
) -> None:
    import disk_objectstore

    objects = _container(tmp_path / "c")
    target = f"s3://{bucket}/repo"
    push(tmp_path / "c", target)
    first = pull(target, tmp_path / "copy")
    assert first.fetched == len(objects) and first.already_here == 0
    dos = disk_objectstore.Container(str(tmp_path / "copy"))
    try:
        assert dos.validate().is_valid()
        assert dos.get_objects_content(list(objects)) == objects
    finally:
        dos.close()
    with Container(tmp_path / "c") as c:
        extra = os.urandom(3000)
        objects[c.add_objects_to_pack([extra])[0]] = extra
    push(tmp_path / "c", target)
    second = pull(target, tmp_path / "copy")
    assert (second.fetched, second.already_here) == (1, len(objects) - 1)  # incremental


def test_cli_push_and_pull(tmp_path: Path, bucket: str, s3_server: S3Server) -> None:
    import json
    import subprocess
    import sys

    objects = _container(tmp_path / "c")
    env = {**os.environ, **s3_server.env}
    dosfs = [sys.executable, "-m", "dosfs.cli"]
    target = f"s3://{bucket}/cli"
    out = subprocess.run([*dosfs, "push", str(tmp_path / "c"), target, "--json"], env=env,
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out)["generation"] == 1
    again = subprocess.run([*dosfs, "push", str(tmp_path / "c"), target], env=env,
                           capture_output=True, text=True, check=True).stdout
    assert "up to date" in again or "sent 0 B" in again
    subprocess.run([*dosfs, "pull", target, str(tmp_path / "copy")], env=env, check=True,
                   capture_output=True)
    with Container(tmp_path / "copy") as c:
        assert c.get_objects_content(list(objects)) == objects
    bad = subprocess.run([*dosfs, "pull", f"s3://{bucket}/nothing", str(tmp_path / "x")],
                         env=env, capture_output=True, text=True)
    assert bad.returncode == 1
    assert bad.stderr.startswith("dosfs: error:") and len(bad.stderr.strip().splitlines()) == 1


def test_push_killed_midway_leaves_the_old_generation_and_resumes(
    tmp_path: Path, bucket: str, s3_server: S3Server, aws_env: None
) -> None:
    import signal
    import subprocess
    import sys

    folder = tmp_path / "c"
    objects = _container(folder)
    target = f"s3://{bucket}/killed"
    push(folder, target)  # generation 1
    with Container(folder) as c:  # 72 MiB more: a new tail segment of pack 0
        for _ in range(3):
            data = os.urandom(24 * 1024 * 1024)
            objects[c.add_objects_to_pack([data])[0]] = data
    store = s3_server.store(bucket)

    def segments() -> set[str]:
        return {m["path"] for b in obstore.list(store, prefix="killed/segments/") for m in b}

    before = segments()
    proc = subprocess.Popen([sys.executable, "-m", "dosfs.cli", "push", str(folder), target],
                            env={**os.environ, **s3_server.env})
    try:
        deadline = time.monotonic() + 60
        while not (segments() - before) and proc.poll() is None:  # the first new segment is up
            assert time.monotonic() < deadline
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    if proc.returncode == 0:
        pytest.skip("the push finished before it could be killed (machine too fast)")
    with RemoteContainer(target) as rc:  # still generation 1, whole
        assert rc.generation.number == 1
        old = [h for h in objects if rc.has_objects([h])[0]]
        assert rc.get_objects_content(old) == {h: objects[h] for h in old}
    resumed = push(folder, target)
    assert resumed.generation == 2 and resumed.skipped_segments >= 1  # what was up is not resent
    with RemoteContainer(target) as rc:
        assert rc.get_objects_content(list(objects)) == objects


def test_push_while_a_writer_and_a_packer_run(tmp_path: Path, bucket: str, aws_env: None) -> None:
    import threading

    folder = tmp_path / "c"
    objects = _container(folder)
    lock = threading.Lock()
    stop = threading.Event()

    def churn() -> None:
        with Container(folder) as c:
            while not stop.is_set():
                data = os.urandom(5000)
                h = c.add_object(data)
                with lock:
                    objects[h] = data
                c.pack_all_loose()
                c.clean_storage()

    worker = threading.Thread(target=churn)
    worker.start()
    target = f"s3://{bucket}/busy"
    try:
        for _ in range(3):
            push(folder, target)
    finally:
        stop.set()
        worker.join()
    with RemoteContainer(target) as rc:  # the last snapshot: every object it names reads right
        published = list(rc.list_all_objects())
        assert len(published) >= 7
        with lock:
            expected = {h: objects[h] for h in published}
        assert rc.get_objects_content(published) == expected
