"""Real mounts, issue 8: bit flips never reach a reader in full, close() is the commit even when
the daemon dies right after it, reads go on when the disk is full, names too long for
incoming/ are refused. Each test failed before its fix."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from dosfs import Container
from tests.fs.conftest import DOSFS, FSNAME, Mounted, wait_for

pytestmark = pytest.mark.mount


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))


def cat(path: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["cat", str(path)], capture_output=True)


@pytest.fixture
def flipped(make_container: Callable[..., Path]) -> tuple[Path, dict[str, str], dict[str, bytes]]:
    """A container with one flipped bit in a small and a big loose and packed object each, plus
    intact objects; returns (folder, {kind: hash of the corrupt one}, {hash: intact bytes})."""
    folder = make_container()
    c = Container(folder)
    blobs = {
        "small-loose": os.urandom(10_000),
        "big-loose": os.urandom(5 << 20),
        "small-packed": os.urandom(20_000),
        "big-packed": os.urandom(6 << 20),
    }
    keys = {
        "small-loose": c.add_object(blobs["small-loose"]),
        "big-loose": c.add_object(blobs["big-loose"]),
    }
    keys["small-packed"], keys["big-packed"] = c.add_objects_to_pack(
        [blobs["small-packed"], blobs["big-packed"]]
    )
    intact = [os.urandom(3000), os.urandom(4 << 20)]
    good = {c.add_object(intact[0]): intact[0]}
    good[c.add_objects_to_pack([intact[1]])[0]] = intact[1]
    for kind in ("small-loose", "big-loose"):
        h = keys[kind]
        flip(folder / "loose" / h[:2] / h[2:], len(blobs[kind]) // 3)
    for kind in ("small-packed", "big-packed"):
        meta = c.get_object_meta(keys[kind])
        flip(folder / "packs" / str(meta.pack_id), meta.pack_offset + meta.pack_length // 3)
    c.close()
    return folder, keys, good


def test_bit_flips_give_eio_and_a_log_line_never_the_bytes(
    mount: Callable[..., Mounted], flipped: tuple[Path, dict[str, str], dict[str, bytes]]
) -> None:
    folder, keys, good = flipped
    m = mount(folder)
    m.expect_errors = True
    for kind in ("small-loose", "big-loose", "small-packed", "big-packed"):
        result = cat(m.by_hash / keys[kind])
        assert result.returncode != 0 and b"Input/output error" in result.stderr, kind
        assert sha(result.stdout) != keys[kind]
        if kind.startswith("small"):
            assert result.stdout == b"", f"{kind}: bytes served before verification"
    # the last block first (dd skip), then the rest: still refused
    h = keys["big-packed"]
    last = subprocess.run(
        ["dd", f"if={m.by_hash / h}", "of=/dev/null", "bs=1M", "skip=5", "count=1"],
        capture_output=True,
    )
    assert last.returncode != 0 and b"Input/output error" in last.stderr
    log = m.log_text()
    for kind in ("small-loose", "big-loose", "small-packed", "big-packed"):
        assert keys[kind] in log, f"no log line names {kind}"
    assert "loose file" in log and "pack " in log  # where the bytes live
    # the daemon keeps serving intact objects
    for h, data in good.items():
        assert (m.by_hash / h).read_bytes() == data
    assert m.is_mounted()


def test_verify_off_serves_raw_bytes(
    mount: Callable[..., Mounted], flipped: tuple[Path, dict[str, str], dict[str, bytes]]
) -> None:
    folder, keys, _good = flipped
    m = mount(folder, "verify=off")
    result = cat(m.by_hash / keys["big-loose"])
    assert result.returncode == 0 and len(result.stdout) == 5 << 20


def test_corrupt_compressed_content_is_refused(
    mount: Callable[..., Mounted], make_container: Callable[..., Path]
) -> None:
    """A packed compressed row whose zlib stream is valid but decodes to other content."""
    import sqlite3
    import zlib

    folder = make_container()
    c = Container(folder)
    real = b"".join(b"%08d real\n" % i for i in range(300_000))
    fake = real.replace(b"real", b"fake")
    h_real = c.add_objects_to_pack([real], compress=True)[0]
    h_fake = c.add_objects_to_pack([fake], compress=True)[0]
    meta_fake = c.get_object_meta(h_fake)
    c.close()
    # point the real key at the fake bytes (a valid stream, right size, wrong content)
    conn = sqlite3.connect(str(folder / "packs.idx"), isolation_level=None)
    conn.execute(
        "UPDATE db_object SET offset = ?, length = ? WHERE hashkey = ?",
        (meta_fake.pack_offset, meta_fake.pack_length, h_real),
    )
    conn.close()
    assert zlib.decompress(
        (folder / "packs" / "0").read_bytes()[
            meta_fake.pack_offset : meta_fake.pack_offset + meta_fake.pack_length
        ]
    ) == fake
    m = mount(folder)
    m.expect_errors = True
    result = cat(m.by_hash / h_real)
    assert result.returncode != 0 and b"Input/output error" in result.stderr
    assert h_real in m.log_text()


# ---------------------------------------------------------------------------- close() commits


KILL_ROUNDS = 12


def test_close_returned_means_committed_even_if_the_daemon_dies(
    fuse: None, make_container: Callable[..., Path], tmp_path: Path
) -> None:
    folder = make_container()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    writer = (
        "import os, random, sys\n"
        "path, data = sys.argv[1], random.Random(int(sys.argv[2])).randbytes(int(sys.argv[4]))\n"
        "fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)\n"
        "os.write(fd, data)\n"
        "os.close(fd)\n"  # returns 0: from now on the object must survive anything
        "os.kill(int(sys.argv[3]), 9)\n"
    )
    expected = []
    for i in range(KILL_ROUNDS):
        daemon = subprocess.Popen(
            [*DOSFS, "mount", "--foreground", "-o", f"fsname={FSNAME}", str(folder), str(mnt)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(lambda: os.path.ismount(mnt), what="the mount")
            size = 1000 + i * 500_000
            expected.append(sha(random.Random(i).randbytes(size)))
            subprocess.run(
                [sys.executable, "-c", writer, str(mnt / "incoming" / f"f{i}"), str(i),
                 str(daemon.pid), str(size)],
                check=True,
                timeout=60,
            )
            daemon.wait(timeout=20)
            assert daemon.returncode == -signal.SIGKILL
        finally:
            subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True)
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait()
    c = Container(folder)
    got = c.get_objects_content(expected)
    assert all(got.get(h) is not None and sha(got[h]) == h for h in expected), (
        f"{sum(1 for h in expected if got.get(h) is None)} of {KILL_ROUNDS} lost"
    )
    assert c.validate_report().is_valid()
    c.close()


def test_a_complete_staging_file_of_a_dead_daemon_is_recovered_at_mount(
    mount: Callable[..., Mounted], make_container: Callable[..., Path]
) -> None:
    folder = make_container()
    c = Container(folder)
    staged = c.new_staged_object()
    staged.write(b"closed, then the daemon died")
    staged.fsync()
    staged.mark_complete()
    os.close(staged._fd)  # the writer dies: its flock goes, the file stays
    staged._done = True
    m = mount(folder)
    h = sha(b"closed, then the daemon died")
    wait_for(lambda: c.has_object(h), what="the recovery at mount")
    assert (m.by_hash / h).read_bytes() == b"closed, then the daemon died"
    assert os.listdir(folder / "sandbox") == []
    c.close()


# ---------------------------------------------------------------------------- disk full


def test_reads_keep_working_on_a_full_disk(mount: Callable[..., Mounted], tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(small)], check=True)
    try:
        folder = small / "container"
        c = Container(folder)
        c.init_container()
        h_loose = c.add_object(b"a loose object")
        h_packed = c.add_objects_to_pack([b"a packed object" * 100])[0]
        c.close()  # no connection open now: -shm and -wal are gone
        assert not (folder / "packs.idx-shm").exists()
        with open(small / "filler", "wb") as f:  # fill the disk to the last block
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
        m = mount(folder)
        m.expect_errors = True  # the failed write below is logged
        assert (m.by_hash / h_loose).read_bytes() == b"a loose object"
        assert (m.by_hash / h_packed).read_bytes() == b"a packed object" * 100
        result = subprocess.run(
            ["dd", "if=/dev/urandom", f"of={m.incoming / 'x'}", "bs=64k", "count=4"],
            capture_output=True,
        )
        assert result.returncode != 0 and b"No space left on device" in result.stderr
        assert not (m.incoming / "x").exists()
        (small / "filler").unlink()
        m.unmount()
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


# ---------------------------------------------------------------------------- names


def test_names_too_long_are_refused_through_the_mount(
    mount: Callable[..., Mounted], make_container: Callable[..., Path]
) -> None:
    m = mount(make_container())
    result = subprocess.run(["touch", str(m.incoming / ("n" * 256))], capture_output=True)
    assert result.returncode != 0 and b"File name too long" in result.stderr
    result = subprocess.run(["mkdir", str(m.incoming / ("d" * 300))], capture_output=True)
    assert result.returncode != 0 and b"File name too long" in result.stderr
    (m.incoming / ("n" * 255)).write_bytes(b"fits")
    assert os.readlink(m.incoming / ("n" * 255)).endswith(sha(b"fits"))
