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


# -- a damaged packs.idx ---------------------------------------------------------------------------
def _damage(index: Path, how: str) -> None:
    size = index.stat().st_size
    with open(index, "r+b") as f:
        if how == "truncated":
            f.truncate(size // 2)
        elif how == "garbled-head":
            f.write(random.Random(1).randbytes(100))
        else:  # garbled in the middle: header and schema intact, a B-tree page is not
            f.seek(size // 3)
            f.write(random.Random(2).randbytes(8192))


def _packed_container(folder: Path, n: int = 3000) -> list[str]:
    with Container(folder) as c:
        return c.add_objects_to_pack([b"object %d " % i * 20 for i in range(n)])


@pytest.mark.parametrize("how", ["truncated", "garbled-head", "garbled-middle"])
def test_damaged_index_is_refused(folder: Path, how: str) -> None:
    keys = _packed_container(folder)
    (folder / "packs.idx-wal").unlink(missing_ok=True)
    (folder / "packs.idx-shm").unlink(missing_ok=True)
    _damage(folder / "packs.idx", how)
    one_error_line(dosfs("clean", str(folder)), "packs.idx")  # was: exit 0, silently
    line = one_error_line(dosfs("status", str(folder)), "packs.idx")
    assert "Traceback" not in line
    proc = dosfs("validate", str(folder))
    assert proc.returncode == 1 and len(proc.stderr.decode().strip().splitlines()) <= 1
    if how != "garbled-middle":  # the middle page may not be on the way to this one row
        one_error_line(dosfs("cat", str(folder), keys[-1]), "packs.idx")


# -- a read-only container -------------------------------------------------------------------------
@pytest.fixture
def read_only_view(tmp_path: Path) -> object:
    """Factory: a read-only bind mount of a folder (as another user's container looks to this
    one); always unmounted in teardown."""
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root")
    made: list[Path] = []

    def view(folder: Path) -> Path:
        target = tmp_path / f"ro-{len(made)}"
        target.mkdir()
        done = subprocess.run(["mount", "--bind", "-o", "ro", str(folder), str(target)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot make a read-only bind mount: {done.stderr.strip()}")
        made.append(target)
        subprocess.run(["mount", "-o", "remount,ro,bind", str(target)], check=True)
        assert not os.access(target, os.W_OK)
        return target

    yield view
    for target in made:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


def _no_write_noise(proc: subprocess.CompletedProcess[bytes]) -> None:
    err = proc.stderr.decode()
    assert "readonly database" not in err and "full disk" not in err and "-shm" not in err, err


def test_validate_and_status_on_a_read_only_container(
    folder: Path, read_only_view: object
) -> None:
    keys = _packed_container(folder, 200)
    with Container(folder) as c:
        loose = c.add_object(b"a loose one")
    (folder / "packs.idx-shm").unlink(missing_ok=True)  # as left by a writer that is gone
    (folder / "packs.idx-wal").unlink(missing_ok=True)
    before = sorted(p.name for p in folder.iterdir())
    ro = read_only_view(folder)  # type: ignore[operator]
    status = dosfs("status", str(ro))
    assert status.returncode == 0 and b"200 packed in 1 pack file(s), 1 loose" in status.stdout
    _no_write_noise(status)
    valid = dosfs("validate", str(ro))
    assert valid.returncode == 0 and b"OK" in valid.stdout, valid
    _no_write_noise(valid)
    cat = dosfs("cat", str(ro), keys[7])
    assert cat.returncode == 0 and cat.stdout == b"object 7 " * 20
    _no_write_noise(cat)
    assert dosfs("cat", str(ro), loose).stdout == b"a loose one"
    # a change is refused with one line, never half-done
    one_error_line(dosfs("pack", str(ro)), "Read-only")
    one_error_line(dosfs("clean", str(ro)), "Read-only")
    assert sorted(p.name for p in folder.iterdir()) == before


WRITER = """
import sys, time
from dosfs import Container
c = Container(sys.argv[1])
c.keep_index_open()
c.add_objects_to_pack([b"while read-only %d" % i for i in range(50)])
print("ready", flush=True)
sys.stdin.read()
"""


def test_read_only_container_with_a_live_writer(folder: Path, read_only_view: object) -> None:
    """Its -wal and -shm exist (owned by the writer): read through them, not around them."""
    _packed_container(folder, 100)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(folder)], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "ready\n"
        assert (folder / "packs.idx-shm").exists() and (folder / "packs.idx-wal").exists()
        ro = read_only_view(folder)  # type: ignore[operator]
        status = dosfs("status", str(ro), "--json")
        assert status.returncode == 0, status.stderr
        assert b'"count_packed": 150' in status.stdout
        _no_write_noise(status)
        valid = dosfs("validate", str(ro))
        assert valid.returncode == 0 and b"OK" in valid.stdout, valid
        _no_write_noise(valid)
    finally:
        assert writer.stdin is not None
        writer.stdin.close()
        writer.wait(timeout=30)


def test_read_only_container_whose_wal_cannot_be_read(
    folder: Path, read_only_view: object
) -> None:
    """A writer killed with changes in its -wal, and its -shm gone: read-only, SQLite cannot
    read that WAL, and reading around it could miss objects: one line that says what to do."""
    _packed_container(folder, 10)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(folder)], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert writer.stdout is not None and writer.stdout.readline() == "ready\n"
    writer.kill()
    writer.wait(timeout=30)
    assert (folder / "packs.idx-wal").stat().st_size > 0
    (folder / "packs.idx-shm").unlink()
    ro = read_only_view(folder)  # type: ignore[operator]
    for command in ("status", "validate"):
        line = one_error_line(dosfs(command, str(ro)), "packs.idx", "-wal", "read-only")
        assert "full disk" not in line


def test_cat_takes_short_hashes_as_the_mount_does(folder: Path) -> None:
    from tests.fs.test_admin_mount import colliding_prefix_pair

    c = Container(folder)
    a, b = colliding_prefix_pair()
    ka, kb = c.add_object(a), c.add_objects_to_pack([b])[0]  # one loose, one packed
    unique = c.add_objects_to_pack([SMALL])[0]
    assert ka[:8] == kb[:8]
    for short in (unique[:8], unique[:20]):
        proc = dosfs("cat", str(folder), short)
        assert proc.returncode == 0 and proc.stdout == SMALL, proc.stderr
    n = next(i for i in range(8, 64) if ka[i] != kb[i]) + 1
    assert dosfs("cat", str(folder), ka[:n]).stdout == a
    assert dosfs("cat", str(folder), kb[:n]).stdout == b
    one_error_line(dosfs("cat", str(folder), ka[:8]), "is ambiguous", "give more digits")
    one_error_line(dosfs("cat", str(folder), unique[:7]), "at least 8")
    missing = "0" * 8 if not unique.startswith("0" * 8) else "f" * 8
    one_error_line(dosfs("cat", str(folder), missing), "no object starting with")


def test_json_of_init_delete_repack_backup(tmp_path: Path) -> None:
    import json

    folder = tmp_path / "c"
    made = dosfs("init", str(folder), "--json")
    first = json.loads(made.stdout)
    assert made.returncode == 0 and first["created"] is True and first["hash_type"] == "sha256"
    again = json.loads(dosfs("init", str(folder), "--json").stdout)
    assert again["created"] is False and again["container_id"] == first["container_id"]
    c = Container(folder)
    keys = c.add_objects_to_pack([SMALL, BIG_TEXT])
    deleted = dosfs("delete", str(folder), keys[0], "--json")
    assert deleted.returncode == 0, deleted.stderr
    assert json.loads(deleted.stdout) == {"deleted": [keys[0]], "missing": []}
    repacked = json.loads(dosfs("repack", str(folder), "--json").stdout)
    assert repacked["packfiles_bytes_after"] < repacked["packfiles_bytes_before"]
    backup = dosfs("backup", str(folder), str(tmp_path / "bk"), "--json")
    assert backup.returncode == 0 and backup.stderr == b"", backup.stderr
    report = json.loads(backup.stdout)
    assert Path(report["folder"]).parent == tmp_path / "bk" and report["copied_files"] >= 1
