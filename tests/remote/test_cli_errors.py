"""Issue 22, the remote tier through the real CLI: a push of another container over a published
one is refused unless --force; `-o rw` on an s3:// mount is refused; every S3 failure is one
short, complete line, worded the same in push, pull, status and mount ("no credentials" apart
from "access denied", a missing bucket as such); the client never asks the cloud's instance
metadata service when it must not."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dosfs.container import Container
from dosfs.remote.url import RemoteError, make_store, parse_url
from tests.fs.conftest import FSNAME
from tests.remote.conftest import S3Server

DOSFS = [sys.executable, "-m", "dosfs.cli"]


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DOSFS, *args], capture_output=True, text=True, env=env, timeout=120)


def one_line(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dosfs: error: "), proc.stderr
    line = lines[0]
    assert "<" not in line and "Debug" not in line and len(line) <= 240, line
    assert not line.endswith(("…", "-", ":")), line  # complete, not cut
    for word in words:
        assert word in line, (word, line)
    return line


def _container(folder: Path, *contents: bytes) -> str:
    with Container(folder) as c:
        c.init_container()
        for data in contents:
            c.add_object(data)
        return str(c.container_id)


def test_push_of_another_container_is_refused_unless_force(
    tmp_path: Path, bucket: str, s3_server: S3Server
) -> None:
    env = {**os.environ, **s3_server.env}
    target = f"s3://{bucket}/repo"
    first = _container(tmp_path / "a", b"from a")
    second = _container(tmp_path / "b", b"from b")
    assert cli(env, "push", str(tmp_path / "a"), target).returncode == 0
    line = one_line(cli(env, "push", str(tmp_path / "b"), target), first, second, "--force")
    assert "another container" in line
    status = cli(env, "status", target, "--json")
    assert f'"container_id": "{first}"' in status.stdout  # nothing was replaced
    assert '"generation": 1' in status.stdout
    again = cli(env, "push", str(tmp_path / "a"), target)  # the same container: fine
    assert again.returncode == 0, again.stderr
    forced = cli(env, "push", "--force", str(tmp_path / "b"), target)
    assert forced.returncode == 0, forced.stderr
    status = cli(env, "status", target, "--json")
    assert f'"container_id": "{second}"' in status.stdout
    pulled = cli(env, "pull", target, str(tmp_path / "copy"))
    assert pulled.returncode == 0, pulled.stderr
    with Container(tmp_path / "copy") as c:
        keys = list(c.list_all_objects())
        assert [c.get_object_content(k) for k in keys] == [b"from b"]


def test_rw_on_an_s3_mount_is_refused(tmp_path: Path) -> None:
    mp = tmp_path / "mp"
    mp.mkdir()
    env = {**os.environ, "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "k",
           "AWS_SECRET_ACCESS_KEY": "s"}
    for args in (["mount", "-o", "rw", "s3://b/p", str(mp)],
                 ["mount", "-o", "ro,rw", "s3://b/p", str(mp)]):
        one_line(cli(env, *args), "read-only", "-o rw")
    # mount(8) adds rw to every helper's options by itself: not refused for that (here the
    # server is not there, which is the one line then)
    proc = cli(env, "s3://b/p", str(mp), "-o", "rw,dev,suid,timeout=1")
    line = one_line(proc)
    assert "read-only" not in line
    assert not os.path.ismount(mp)


def test_no_credentials_is_said_and_never_asks_the_metadata_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_PROFILE", "AWS_SKIP_SIGNATURE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("AWS_EC2_METADATA_DISABLED", raising=False)
    url = parse_url("s3://b/p")
    with pytest.raises(RemoteError, match="no credentials"):
        make_store(url)  # an explicit endpoint is no cloud: no instance role to ask
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(RemoteError, match="no credentials"):
        make_store(url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.delenv("AWS_EC2_METADATA_DISABLED")
    make_store(url)  # keys given: a store, whose metadata endpoint points nowhere
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_ENDPOINT_URL="http://127.0.0.1:9",
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"))
    _container(tmp_path / "c", b"x")
    mp = tmp_path / "mp"
    mp.mkdir()
    for args in (["status", "s3://b/p"], ["pull", "s3://b/p", str(tmp_path / "copy")],
                 ["push", str(tmp_path / "c"), "s3://b/p"], ["mount", "s3://b/p", str(mp)]):
        line = one_line(cli(env, *args), "no credentials", "AWS_ACCESS_KEY_ID")
        assert "access denied" not in line


@pytest.fixture
def silent_server() -> Iterator[str]:
    """An endpoint that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        sock.close()


def test_s3_errors_are_one_short_consistent_line(
    tmp_path: Path, bucket: str, s3_server: S3Server, silent_server: str
) -> None:
    env = {**os.environ, **s3_server.env}
    _container(tmp_path / "c", b"published")
    assert cli(env, "push", str(tmp_path / "c"), f"s3://{bucket}/x").returncode == 0
    mp = tmp_path / "mp"
    mp.mkdir()

    def every(url: str, timeout: str = "10") -> list[list[str]]:
        return [["status", url, "--timeout", timeout],
                ["pull", url, str(tmp_path / "copy"), "--timeout", timeout],
                ["mount", url, str(mp), "-o", f"timeout={timeout}"]]

    # a missing bucket: the same words in status, pull and mount (mount and pull used to say
    # "nothing published there")
    missing = {one_line(cli(env, *a), "does not exist") for a in every("s3://dosfs-nobucket/x")}
    assert missing == {"dosfs: error: s3://dosfs-nobucket/x: bucket 'dosfs-nobucket' does not "
                       "exist"}
    # an invalid bucket name: no XML body (push used to print it raw)
    one_line(cli(env, "push", str(tmp_path / "c"), "s3://Bad_Bucket/x"), "Bad_Bucket",
             "not a valid bucket name")
    for a in every(f"s3://{bucket}/nothing"):
        one_line(cli(env, *a), "nothing published")
    wrong_secret = {**env, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    wrong_key = {**env, "AWS_ACCESS_KEY_ID": "NOSUCHKEY0000000000"}
    for a in [*every(f"s3://{bucket}/x"), ["push", str(tmp_path / "c"), f"s3://{bucket}/x"]]:
        one_line(cli(wrong_secret, *a), "access denied", "AWS_SECRET_ACCESS_KEY")
        one_line(cli(wrong_key, *a), "access denied", "AWS_ACCESS_KEY_ID")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        down = {**env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{s.getsockname()[1]}"}
    silent = {**env, "AWS_ENDPOINT_URL": silent_server}
    for a in every(f"s3://{bucket}/x", timeout="1"):
        one_line(cli(down, *a), "cannot reach")
        start = time.monotonic()
        one_line(cli(silent, *a), "did not answer in time")
        assert time.monotonic() - start < 30
    assert not os.path.ismount(mp)


def test_mount_8_form_with_its_own_rw_mounts_read_only(
    tmp_path: Path, bucket: str, s3_server: S3Server, fuse: None
) -> None:
    """What mount.fuse3 runs for `mount -t fuse.dosfs s3://… MP` (rw added by mount(8))."""
    env = {**os.environ, **s3_server.env}
    _container(tmp_path / "c", b"served")
    assert cli(env, "push", str(tmp_path / "c"), f"s3://{bucket}/x").returncode == 0
    mp = tmp_path / "mp"
    mp.mkdir()
    done = cli(env, f"s3://{bucket}/x", str(mp), "-o",
               f"rw,dev,suid,fsname={FSNAME},cache_dir={tmp_path / 'cache'}")
    try:
        assert done.returncode == 0, done.stderr
        line = next(x for x in Path("/proc/self/mounts").read_text().splitlines()
                    if f" {mp} " in x)
        assert " ro," in line, line
        assert [p.read_bytes() for p in (mp / "by-hash").iterdir()] == [b"served"]
    finally:
        subprocess.run([*DOSFS, "umount", str(mp)], capture_output=True)
        if os.path.ismount(mp):
            subprocess.run(["fusermount3", "-uz", str(mp)], capture_output=True)
    assert not os.path.ismount(mp)
