"""Issue 22, the container commands that harmed or misled: `cat` verifies like the mount,
`backup` refuses a destination that overlaps the container, a broken packs.idx is refused, and
`validate`/`status` work on a read-only container. Through the real CLI (a subprocess)."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from dosfs import Container
from dosfs.container.verify import SMALL_VERIFY

DOSFS = [sys.executable, "-m", "dosfs.cli"]


def dosfs(*args: str) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ)
    env.pop("DOSFS_CONTAINER", None)
    return subprocess.run([*DOSFS, *args], capture_output=True, env=env, timeout=120)


def one_error_line(proc: subprocess.CompletedProcess[bytes], *words: str) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    lines = proc.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dosfs: error: "), proc.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    Container(tmp_path / "c").init_container()
    return tmp_path / "c"


SMALL = b"small object, " * 100
BIG = random.Random(22).randbytes(SMALL_VERIFY + 3 * 1024 * 1024 + 17)
BIG_TEXT = b"".join(b"line %d of a compressible object\n" % i for i in range(200_000))


def _corrupt_packed(c: Container, key: str, where: float = 0.5) -> None:
    meta = c.get_object_meta(key)
    assert meta.pack_offset is not None and meta.pack_length is not None
    flip(c.folder / "packs" / str(meta.pack_id), meta.pack_offset + int(meta.pack_length * where))


def test_cat_good_objects_all_kinds(folder: Path) -> None:
    c = Container(folder)
    loose = c.add_object(SMALL)
    packed = c.add_objects_to_pack([BIG], compress=False)[0]
    zipped = c.add_objects_to_pack([BIG_TEXT], compress=True)[0]
    for key, content in ((loose, SMALL), (packed, BIG), (zipped, BIG_TEXT)):
        proc = dosfs("cat", str(folder), key)
        assert proc.returncode == 0 and proc.stderr == b"", proc.stderr
        assert proc.stdout == content


def test_cat_corrupt_loose_writes_nothing(folder: Path) -> None:
    c = Container(folder)
    key = c.add_object(SMALL)
    path = folder / "loose" / key[:2] / key[2:]
    flip(path, 3)
    proc = dosfs("cat", str(folder), key)
    one_error_line(proc, key, "corrupt", "content hashes to")
    assert proc.stdout == b""  # a small object is hashed before its first byte goes out
    raw = dosfs("cat", "--no-verify", str(folder), key)
    assert raw.returncode == 0 and raw.stdout == path.read_bytes() != SMALL


def test_cat_corrupt_packed_uncompressed(folder: Path) -> None:
    c = Container(folder)
    small, big = c.add_objects_to_pack([SMALL, BIG], compress=False)
    _corrupt_packed(c, small)
    proc = dosfs("cat", str(folder), small)
    one_error_line(proc, small, "corrupt")
    assert proc.stdout == b""
    _corrupt_packed(c, big, 0.1)
    proc = dosfs("cat", str(folder), big)
    one_error_line(proc, big, "corrupt")
    # streamed, but the piece that completes it is held back: never complete and wrong
    assert 0 < len(proc.stdout) < len(BIG)
    raw = dosfs("cat", str(folder), big, "--no-verify")
    assert raw.returncode == 0 and len(raw.stdout) == len(BIG) and raw.stdout != BIG
    assert hashlib.sha256(raw.stdout).hexdigest() != big


def test_cat_corrupt_packed_compressed(folder: Path) -> None:
    c = Container(folder)
    small, big = c.add_objects_to_pack([SMALL, BIG_TEXT], compress=True)
    assert c.get_object_meta(big).pack_compressed
    _corrupt_packed(c, small)
    proc = dosfs("cat", str(folder), small)
    one_error_line(proc, small, "corrupt")
    assert proc.stdout == b""
    _corrupt_packed(c, big, 0.9)
    proc = dosfs("cat", str(folder), big)
    one_error_line(proc, big, "corrupt")
    assert len(proc.stdout) < len(BIG_TEXT)
