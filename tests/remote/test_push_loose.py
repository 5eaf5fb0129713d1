"""Loose objects on their way to the bucket: each goes up once (a later push serves it from the
segment it went up in while it stays loose, and from its pack once packed), streamed (a push of
a big loose object does not hold it in memory), and a push killed after a loose segment is up
does not send it again."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dosfs import RemoteContainer
from dosfs.container import Container
from dosfs.remote.push import push
from tests.remote.conftest import S3Server

MiB = 1024 * 1024


def test_each_loose_object_goes_up_once(tmp_path: Path, bucket: str, aws_env: None) -> None:
    folder = tmp_path / "c"
    objects: dict[str, bytes] = {}
    with Container(folder) as c:
        c.init_container()
        for _ in range(3):
            data = os.urandom(200_000)
            objects[c.add_object(data)] = data
    target = f"s3://{bucket}/repo"
    first = push(folder, target)
    assert first.uploaded_bytes >= 600_000
    with Container(folder) as c:
        extra = os.urandom(50_000)
        objects[c.add_object(extra)] = extra
    second = push(folder, target)
    index_bytes = second.uploaded_bytes - 50_000
    assert 0 <= index_bytes < 100_000  # the new object and the index: not the first three again
    with RemoteContainer(target) as rc:
        assert rc.get_objects_content(list(objects)) == objects
        assert all(m["type"] == "packed" for _h, m in rc.get_objects_meta(list(objects)))
    # packed meanwhile: served from the pack, the loose segments leave the generation
    with Container(folder) as c:
        c.pack_all_loose()
        c.clean_storage()
    third = push(folder, target)
    assert not any("/loose-" in f"/{k}" for k in third.segments)
    with RemoteContainer(target) as rc:
        assert rc.get_objects_content(list(objects)) == objects
    assert push(folder, target).unchanged


def test_a_big_loose_object_is_streamed_up(tmp_path: Path, bucket: str, aws_env: None) -> None:
    folder = tmp_path / "c"
    with Container(folder) as c:
        c.init_container()
        with open(tmp_path / "big", "wb") as f:
            for _ in range(24):
                f.write(os.urandom(16 * MiB))
        with open(tmp_path / "big", "rb") as f:
            key = c.add_streamed_object(f)
    (tmp_path / "big").unlink()
    script = (
        "import sys; from dosfs.remote.push import push; push(sys.argv[1], sys.argv[2]); "
        "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])"
    )
    out = subprocess.run([sys.executable, "-c", script, str(folder), f"s3://{bucket}/big"],
                         check=True, capture_output=True, text=True, timeout=300).stdout
    peak_mib = int(out.split()[-1]) / 1024
    assert peak_mib < 200, f"push of a 384 MiB loose object peaked at {peak_mib:.0f} MiB"
    with RemoteContainer(f"s3://{bucket}/big") as rc, rc.get_object_stream(key) as stream:
        size = 0
        while piece := stream.read(8 * MiB):
            size += len(piece)
    assert size == 384 * MiB  # read through the verifying stream: every byte hashed to its name


def test_a_second_publisher_meanwhile_is_refused(
    tmp_path: Path, bucket: str, aws_env: None
) -> None:
    """Another push publishes while this one uploads (run from this push's progress callback:
    a real interleaving, no fake): this push stops, switches nothing, and says why."""
    import pytest

    from dosfs.remote.url import RemoteError

    target = f"s3://{bucket}/repo"
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    for folder in (mine, theirs):
        with Container(folder) as c:
            c.init_container()
            c.add_objects_to_pack([os.urandom(100_000)])
    other: list[int] = []

    def meanwhile(done: int, total: int) -> None:
        if not other:
            other.append(push(theirs, target).generation)

    with pytest.raises(RemoteError, match="another push published generation 1"):
        push(mine, target, progress=meanwhile)
    assert other == [1]
    with RemoteContainer(target) as rc, Container(theirs) as c:
        assert rc.generation.number == 1
        assert sorted(rc.list_all_objects()) == sorted(c.list_all_objects())


def test_push_shows_progress_on_a_terminal(
    tmp_path: Path, bucket: str, s3_server: S3Server
) -> None:
    """On a terminal (a real pty as stderr) push draws a bar; piped, it prints only its line."""
    import pty

    folder = tmp_path / "c"
    with Container(folder) as c:
        c.init_container()
        c.add_objects_to_pack([os.urandom(3 * MiB)])
    env = {**os.environ, **s3_server.env}
    cmd = [sys.executable, "-m", "dosfs.cli", "push", str(folder), f"s3://{bucket}/tty"]
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=slave)
        os.close(slave)
        seen = b""
        while True:
            try:
                piece = os.read(master, 4096)
            except OSError:  # EIO: the child closed the pty
                break
            if not piece:
                break
            seen += piece
        out = proc.communicate(timeout=120)[0].decode()
    finally:
        os.close(master)
    assert proc.returncode == 0
    assert b"uploading" in seen and b"100%" in seen
    assert "generation 1" in out
    with Container(folder) as c:
        c.add_objects_to_pack([os.urandom(MiB)])
    piped = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    assert "uploading" not in piped.stderr and "generation 2" in piped.stdout
