"""Real mounts: the daemon in a subprocess, exercised with the tools people use (cat, dd, cmp,
sha256sum, cp, rsync, getfattr, ls), against the real engine and disk-objectstore containers."""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import random
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from dosfs import Container
from tests.fs.conftest import DOSFS, FSNAME, Mounted

pytestmark = pytest.mark.mount

sha = lambda data: hashlib.sha256(data).hexdigest()  # noqa: E731


def run(*cmd: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=True, **kwargs)  # type: ignore[call-overload,no-any-return]


def os_error(fn: Callable[[], object]) -> int:
    try:
        fn()
    except OSError as exc:
        return exc.errno or 0
    raise AssertionError("no error raised")


def random_reads(path: Path, data: bytes, count: int, seed: int) -> None:
    rng = random.Random(seed)
    fd = os.open(path, os.O_RDONLY)
    try:
        for _ in range(count):
            off = rng.randrange(0, len(data) + 10) if data else 0
            size = rng.choice([1, 17, 4096, 65536, 131072 + 5, 1 << 20])
            assert os.pread(fd, size, off) == data[off : off + size], (off, size)
    finally:
        os.close(fd)


@pytest.fixture
def objects(make_container: Callable[..., Path]) -> tuple[Path, dict[str, bytes]]:
    """A container with loose, packed and packed-compressed objects of awkward sizes."""
    folder = make_container()
    c = Container(folder)
    rng = random.Random(4)
    loose = [b"", b"x", rng.randbytes(3 << 20), b"line\n" * 1000]
    packed = [rng.randbytes(700_000), b"packed-small"]
    compressible = [(b"%08d compressible text\n" % i) * 1 for i in range(200_000)]
    compressed = [b"".join(compressible), rng.randbytes(300_000), b"z"]
    data = {}
    for blob in loose:
        data[c.add_object(blob)] = blob
    for h, blob in zip(c.add_objects_to_pack(packed, compress=False), packed, strict=True):
        data[h] = blob
    for h, blob in zip(c.add_objects_to_pack(compressed, compress=True), compressed, strict=True):
        data[h] = blob
    assert c.get_object_meta(sha(compressed[0]))["pack_compressed"]
    c.close()
    return folder, data


# ---------------------------------------------------------------------------- by-hash reads


def test_reads_with_real_tools(
    mount: Callable[..., Mounted], objects: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    folder, data = objects
    m = mount(folder)
    for i, (h, blob) in enumerate(data.items()):
        path = m.by_hash / h
        st = path.stat()
        assert st.st_size == len(blob) and stat.S_IMODE(st.st_mode) == 0o444
        assert st.st_blksize == 1 << 20
        assert run("sha256sum", str(path)).stdout.split()[0] == h
        original = tmp_path / f"orig{i}"
        original.write_bytes(blob)
        run("cmp", str(path), str(original))
        assert subprocess.run(["cat", str(path)], capture_output=True, check=True).stdout == blob
        if len(blob) > 100_000:
            out = subprocess.run(
                ["dd", f"if={path}", "bs=4096", "skip=7", "count=5", "status=none"],
                capture_output=True,
                check=True,
            ).stdout
            assert out == blob[7 * 4096 : 12 * 4096]
        random_reads(path, blob, 40, seed=i)
        random_reads(path, blob, 10, seed=i)  # again: served from the page cache (keep_cache)


def test_xattrs_with_getfattr(
    mount: Callable[..., Mounted], objects: tuple[Path, dict[str, bytes]]
) -> None:
    folder, data = objects
    m = mount(folder)
    c = Container(folder)
    for h in data:
        meta = c.get_object_meta(h)
        out = run("getfattr", "-d", "-m", "-", "--absolute-names", str(m.by_hash / h)).stdout
        assert f'user.dosfs.size="{len(data[h])}"' in out
        if meta["type"] == "packed":
            assert 'user.dosfs.type="packed"' in out
            assert f'user.dosfs.pack_id="{meta["pack_id"]}"' in out
            assert f'user.dosfs.pack_offset="{meta["pack_offset"]}"' in out
            assert f'user.dosfs.pack_length="{meta["pack_length"]}"' in out
            assert f'user.dosfs.compressed="{int(bool(meta["pack_compressed"]))}"' in out
        else:
            assert 'user.dosfs.type="loose"' in out and "pack_id" not in out
        missing = subprocess.run(
            ["getfattr", "-n", "security.selinux", str(m.by_hash / h)], capture_output=True
        )
        assert missing.returncode != 0 and b"Operation not supported" in missing.stderr
        other = subprocess.run(
            ["getfattr", "-n", "user.other", str(m.by_hash / h)], capture_output=True
        )
        assert other.returncode != 0 and b"No such attribute" in other.stderr
    c.close()


def test_unknown_and_malformed_names(
    mount: Callable[..., Mounted], make_container: Callable[..., Path]
) -> None:
    folder = make_container()
    m = mount(folder)
    later = sha(b"added later")
    for name in [later, later.upper(), later[:-1], later + "0", "not-a-hash", "x" * 64]:
        assert os_error(lambda n=name: (m.by_hash / n).stat()) == errno.ENOENT
        assert os_error(lambda n=name: os.open(m.by_hash / n, os.O_RDONLY)) == errno.ENOENT
    assert subprocess.run(["cat", str(m.by_hash / later)], capture_output=True).returncode == 1
    # no negative caching: an object added by the library is visible at once
    c = Container(folder)
    assert c.add_object(b"added later") == later
    c.close()
    assert (m.by_hash / later).read_bytes() == b"added later"


def test_writes_under_by_hash_are_refused(
    mount: Callable[..., Mounted], objects: tuple[Path, dict[str, bytes]]
) -> None:
    folder, data = objects
    m = mount(folder)
    h = next(iter(data))
    target = m.by_hash / h
    refused = (errno.EROFS, errno.EACCES)
    assert os_error(lambda: os.open(target, os.O_RDWR)) in refused
    assert os_error(lambda: os.open(target, os.O_WRONLY | os.O_APPEND)) in refused
    assert os_error(lambda: os.open(m.by_hash / ("0" * 64), os.O_WRONLY | os.O_CREAT)) in refused
    assert os_error(lambda: os.truncate(target, 0)) in refused
    assert os_error(lambda: os.chmod(target, 0o644)) in refused
    assert os_error(lambda: os.utime(target)) in refused
    assert os_error(lambda: os.unlink(target)) in refused
    assert os_error(lambda: os.mkdir(m.by_hash / "d")) in refused
    assert os_error(lambda: os.rename(target, m.incoming / "x")) in refused
    assert os_error(lambda: os.setxattr(target, "user.x", b"1")) in refused
    assert os_error(lambda: os.mkdir(m.path / "new")) in refused
    assert run("cat", str(target)).returncode == 0  # still readable


def test_listing_more_than_one_page(
    mount: Callable[..., Mounted], make_container: Callable[..., Path]
) -> None:
    folder = make_container()
    c = Container(folder)
    hashes = [c.add_object(b"obj %d" % i) for i in range(1500)]
    hashes += c.add_objects_to_pack([b"packed %d" % i for i in range(1500)])
    c.close()
    m = mount(folder)
    listed = run("ls", str(m.by_hash)).stdout.split()
    assert listed == sorted(hashes)  # complete, no duplicates, hash order
    assert sorted(os.listdir(m.by_hash)) == sorted(hashes)
    long = run("ls", "-l", str(m.by_hash)).stdout.splitlines()
    assert len(long) == 3001 and long[1].startswith("-r--r--r--")
    assert os.listdir(m.path) == ["by-hash", "incoming"]


def test_listing_and_use_past_the_inode_bound(
    mount: Callable[..., Mounted], make_container: Callable[..., Path]
) -> None:
    folder = make_container()
    c = Container(folder)
    blobs = {
        c.add_object(b"content %d " % i * (i % 7 + 1)): b"content %d " % i * (i % 7 + 1)
        for i in range(400)
    }
    c.close()
    m = mount(folder, "max_inodes=50")
    for _ in range(2):
        long = run("ls", "-l", str(m.by_hash)).stdout.splitlines()[1:]
        sizes = {line.split()[-1]: int(line.split()[4]) for line in long}
        assert sizes == {h: len(b) for h, b in blobs.items()}
        out = run("find", str(m.by_hash), "-type", "f", "-exec", "sha256sum", "{}", "+").stdout
        assert sorted(line.split()[0] for line in out.splitlines()) == sorted(blobs)
    for h, blob in list(blobs.items())[::37]:
        assert (m.by_hash / h).read_bytes() == blob
        assert os.stat(m.by_hash / h).st_ino == os.stat(m.by_hash / h).st_ino


def test_nolisting(mount: Callable[..., Mounted], make_container: Callable[..., Path]) -> None:
    folder = make_container()
    h = Container(folder).add_object(b"by name only")
    m = mount(folder, "nolisting")
    assert os_error(lambda: os.listdir(m.by_hash)) == errno.EACCES
    assert (m.by_hash / h).read_bytes() == b"by name only"


# ---------------------------------------------------------------------------- incoming/


def check_link(path: Path, content: bytes, depth: int) -> str:
    target = os.readlink(path)
    h = sha(content)
    assert target == "../" * depth + "by-hash/" + h, target
    assert path.read_bytes() == content
    assert run("sha256sum", str(path)).stdout.split()[0] == h
    return h


def test_incoming_cp_dd_and_temp_rename(
    mount: Callable[..., Mounted], make_container: Callable[..., Path], tmp_path: Path
) -> None:
    folder = make_container()
    m = mount(folder)
    src = tmp_path / "src.bin"
    src.write_bytes(random.Random(1).randbytes(5 << 20))
    run("cp", str(src), str(m.incoming / "copied.bin"))
    h = check_link(m.incoming / "copied.bin", src.read_bytes(), 1)
    c = Container(folder)
    assert c.get_object_meta(h)["type"] == "loose"
    run("dd", f"if={src}", f"of={m.incoming / 'dd.bin'}", "bs=1M", "status=none")
    check_link(m.incoming / "dd.bin", src.read_bytes(), 1)
    # rsync-style: write a temp name, then rename it into place
    tmp = m.incoming / ".part.tmp"
    tmp.write_bytes(b"temporary name first")
    os.rename(tmp, m.incoming / "final")
    check_link(m.incoming / "final", b"temporary name first", 1)
    assert not tmp.exists()
    # removing the name never removes the object
    os.unlink(m.incoming / "final")
    assert c.get_object_content(sha(b"temporary name first")) == b"temporary name first"
    # random-pattern writes are hashed at close
    fd = os.open(m.incoming / "sparse", os.O_CREAT | os.O_WRONLY, 0o644)
    os.pwrite(fd, b"end", 1000)
    os.pwrite(fd, b"start", 0)
    os.close(fd)
    check_link(m.incoming / "sparse", b"start" + b"\0" * 995 + b"end", 1)
    # a read-write handle keeps the page cache (write-only ones use direct_io): mmap works
    fd = os.open(m.incoming / "mapped", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.ftruncate(fd, 4096)
        with mmap.mmap(fd, 4096) as mapped:
            mapped[:6] = b"mapped"
            mapped.flush()
    finally:
        os.close(fd)
    check_link(m.incoming / "mapped", b"mapped" + b"\0" * 4090, 1)
    c.close()


def test_incoming_cp_r_and_rsync(
    mount: Callable[..., Mounted], make_container: Callable[..., Path], tmp_path: Path
) -> None:
    folder = make_container()
    m = mount(folder)
    tree = tmp_path / "tree"
    files = {
        "a.txt": b"alpha\n",
        "sub/b.bin": random.Random(2).randbytes(200_000),
        "sub/deeper/c": b"",
        "sub/deeper/d": b"same",
        "sub/e": b"same",
    }
    for rel, content in files.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_bytes(content)
    run("cp", "-r", str(tree), str(m.incoming / "tree"))
    for rel, content in files.items():
        check_link(m.incoming / "tree" / rel, content, rel.count("/") + 2)
    run("diff", "-r", str(tree), str(m.incoming / "tree"))
    # moving a directory keeps its links right (targets follow the depth)
    os.rename(m.incoming / "tree" / "sub", m.incoming / "sub")
    check_link(m.incoming / "sub" / "deeper" / "d", b"same", 3)
    if shutil.which("rsync") is None:
        pytest.skip("rsync is not installed")
    # rsync writes a temp file, closes it (it becomes a link), then renames it. It chmods the
    # temp file in between unless the wanted mode is its temp mode: --chmod=F600 (docs).
    run("rsync", "-a", "--chmod=F600", f"{tree}/", str(m.incoming / "rsynced"))
    for rel, content in files.items():
        check_link(m.incoming / "rsynced" / rel, content, rel.count("/") + 2)
    assert not [p for p in (m.incoming / "rsynced").rglob(".*")]  # no temp names left


def test_concurrent_writers_mount_and_library(
    mount: Callable[..., Mounted], make_container: Callable[..., Path]
) -> None:
    folder = make_container()
    m = mount(folder)
    errors: list[BaseException] = []
    expected: dict[str, bytes] = {}
    lock = threading.Lock()

    def via_mount(worker: int) -> None:
        try:
            rng = random.Random(worker)
            for i in range(15):
                blob = rng.randbytes(rng.randrange(0, 300_000))
                (m.incoming / f"w{worker}-{i}").write_bytes(blob)
                with lock:
                    expected[f"w{worker}-{i}"] = blob
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def via_library(worker: int) -> None:
        try:
            c = Container(folder)
            rng = random.Random(100 + worker)
            for _ in range(30):
                blob = rng.randbytes(rng.randrange(0, 100_000))
                h = c.add_object(blob)
                assert (m.by_hash / h).read_bytes() == blob  # visible through the mount at once
            c.close()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=via_mount, args=(i,)) for i in range(4)]
    threads += [threading.Thread(target=via_library, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    c = Container(folder)
    for name, blob in expected.items():
        h = check_link(m.incoming / name, blob, 1)
        assert c.get_object_content(h) == blob
    c.close()


def test_enospc_reaches_the_writer_and_commits_nothing(
    mount: Callable[..., Mounted], tmp_path: Path
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(small)], check=True)
    try:
        folder = small / "container"
        Container(folder).init_container()
        m = mount(folder)
        m.expect_errors = True  # the failed write is logged
        big = subprocess.run(
            ["dd", "if=/dev/zero", f"of={m.incoming / 'big'}", "bs=1M", "count=8"],
            capture_output=True,
            text=True,
        )
        assert big.returncode != 0 and "No space left on device" in big.stderr, big.stderr
        assert not (m.incoming / "big").exists()
        assert os.listdir(folder / "sandbox") == []
        assert os.listdir(folder / "loose") == []
        # a small file still works afterwards
        (m.incoming / "small").write_bytes(b"fits")
        check_link(m.incoming / "small", b"fits", 1)
        m.unmount()
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


# ---------------------------------------------------------------------------- packer


def test_packer_while_reading(
    mount: Callable[..., Mounted], make_container: Callable[..., Path]
) -> None:
    folder = make_container()
    c = Container(folder)
    rng = random.Random(7)
    blobs = [rng.randbytes(8 << 20)] + [(b"text %d " % i) * 5000 for i in range(20)]
    hashes = [c.add_object(b) for b in blobs]
    c.close()
    m = mount(folder)
    big = blobs[0]
    fd = os.open(m.by_hash / hashes[0], os.O_RDONLY)
    stop = threading.Event()
    failures: list[str] = []

    def reader() -> None:
        r = random.Random(9)
        while not stop.is_set():
            i = r.randrange(len(blobs))
            blob = blobs[i]
            off = r.randrange(0, max(1, len(blob)))
            try:
                with open(m.by_hash / hashes[i], "rb") as f:
                    f.seek(off)
                    got = f.read(65536)
            except OSError as exc:
                failures.append(f"read error {exc}")
                return
            if got != blob[off : off + 65536]:
                failures.append(f"wrong bytes in {hashes[i]} at {off}")
                return

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        assert os.pread(fd, 1 << 20, 0) == big[: 1 << 20]
        pack = (
            "import sys; from dosfs import Container; c = Container(sys.argv[1]); "
            "c.pack_all_loose(compress=sys.argv[2] == '1'); c.clean_storage(); c.close()"
        )
        subprocess.run([sys.executable, "-c", pack, str(folder), "1"], check=True, timeout=120)
        c = Container(folder)
        assert c.get_object_meta(hashes[0])["type"] == "packed"
        assert c.get_object_meta(hashes[0])["pack_compressed"]
        assert not list((folder / "loose").rglob("*/*"))  # loose copies are gone
        c.close()
        # the handle opened before packing keeps reading the right bytes (uncached range)
        random_reads_fd(fd, big, 30)
        # a fresh open reads the packed, compressed copy with random access
        random_reads(m.by_hash / hashes[0], big, 20, seed=3)
    finally:
        stop.set()
        for t in threads:
            t.join()
        os.close(fd)
    assert not failures, failures


def random_reads_fd(fd: int, data: bytes, count: int) -> None:
    rng = random.Random(11)
    for _ in range(count):
        off = rng.randrange(len(data))
        size = rng.choice([4096, 131072, 1 << 20])
        assert os.pread(fd, size, off) == data[off : off + size]


# ---------------------------------------------------------------------------- lifecycle


def test_sigterm_with_open_files(
    mount: Callable[..., Mounted], make_container: Callable[..., Path]
) -> None:
    folder = make_container()
    h = Container(folder).add_object(b"open while stopping" * 1000)
    m = mount(folder)
    reading = os.open(m.by_hash / h, os.O_RDONLY)
    assert os.read(reading, 10) == b"open while"
    writing = os.open(m.incoming / "unfinished", os.O_WRONLY | os.O_CREAT)
    assert os.write(writing, b"half") == 4
    assert m.proc is not None
    m.proc.send_signal(signal.SIGTERM)
    assert m.proc.wait(timeout=20) == 0
    assert not os.path.ismount(m.path) and not m.is_mounted()
    assert os.listdir(folder / "sandbox") == []  # the unfinished file was discarded
    assert "SIGTERM received" in m.log_text()
    for fd in (reading, writing):
        try:
            os.close(fd)
        except OSError:
            pass


def test_sigint_and_notify_socket(
    fuse: None, make_container: Callable[..., Path], tmp_path: Path
) -> None:
    folder = make_container()
    mp = tmp_path / "mnt"
    mp.mkdir()
    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(30)
    proc = subprocess.Popen(
        [*DOSFS, "mount", "-f", "-o", f"fsname={FSNAME}", str(folder), str(mp)],
        env={**os.environ, "NOTIFY_SOCKET": sock_path},
        stderr=subprocess.PIPE,
    )
    try:
        assert sock.recv(100) == b"READY=1"
        assert os.path.ismount(mp)  # READY=1 means mounted
        proc.send_signal(signal.SIGINT)
        assert sock.recv(100) == b"STOPPING=1"
        assert proc.wait(timeout=20) == 0
        assert not os.path.ismount(mp)
    finally:
        if proc.poll() is None:
            subprocess.run(["fusermount3", "-uz", str(mp)])
            proc.kill()
            proc.wait()
        sock.close()


def test_background_mount_umount_and_errors(
    mount: Callable[..., Mounted], make_container: Callable[..., Path], tmp_path: Path
) -> None:
    folder = make_container()
    m = mount(folder, background=True)
    assert os.listdir(m.path) == ["by-hash", "incoming"]  # usable as soon as `mount` returned
    (m.incoming / "x").write_bytes(b"committed before the daemon exits")

    def dosfs(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*DOSFS, *args], capture_output=True, text=True, timeout=60)

    again = dosfs("mount", "-o", f"fsname={FSNAME}", str(folder), str(m.path))
    assert again.returncode == 1 and "already a mount point" in again.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    not_container = dosfs("mount", str(tmp_path / "nothing-here"), str(elsewhere))
    assert not_container.returncode == 1 and "does not exist" in not_container.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    uninit = dosfs("mount", str(empty), str(elsewhere))
    assert uninit.returncode == 1 and "not a usable container" in uninit.stderr
    missing = dosfs("mount", str(folder), str(tmp_path / "no-such-dir"))
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    (elsewhere / "file").write_text("occupied")
    busy = dosfs("mount", str(folder), str(elsewhere))
    assert busy.returncode == 1 and "not empty" in busy.stderr
    bad = dosfs("mount", "-o", "max_read=4096", str(folder), str(empty))
    assert bad.returncode == 1 and "unknown mount option" in bad.stderr
    assert dosfs("umount", str(empty)).stderr.strip().endswith("is not mounted")
    assert all(p.count("Traceback") == 0 for p in (again.stderr, busy.stderr, bad.stderr))

    done = dosfs("umount", str(m.path))
    assert done.returncode == 0, done.stderr
    assert not m.is_mounted() and m.pids() == []
    c = Container(folder)
    assert c.get_object_content(sha(b"committed before the daemon exits"))
    c.close()


def test_read_only_and_allow_other(
    mount: Callable[..., Mounted], make_container: Callable[..., Path]
) -> None:
    folder = make_container()
    h = Container(folder).add_object(b"ro")
    m = mount(folder, "ro", "allow_other")
    mounts = Path("/proc/self/mounts").read_text().splitlines()
    line = next(entry for entry in mounts if f" {m.path} " in entry)
    assert " ro," in line and "allow_other" in line and "default_permissions" in line
    assert (m.by_hash / h).read_bytes() == b"ro"
    assert os_error(lambda: (m.incoming / "x").write_bytes(b"no")) == errno.EROFS
    assert os_error(lambda: os.mkdir(m.incoming / "d")) == errno.EROFS


def test_disk_objectstore_containers_both_ways(
    mount: Callable[..., Mounted], tmp_path: Path
) -> None:
    dos = pytest.importorskip("disk_objectstore")
    folder = tmp_path / "dos"
    theirs = dos.Container(str(folder))
    theirs.init_container()
    blobs = [os.urandom(100_000), b"hello", zlib.compress(b"x") * 1000]
    loose = [theirs.add_object(b) for b in blobs]
    packed = theirs.add_objects_to_pack([b + b"p" for b in blobs], compress=True)
    theirs.close()
    m = mount(folder)
    for h, blob in zip(loose + packed, blobs + [b + b"p" for b in blobs], strict=True):
        assert (m.by_hash / h).read_bytes() == blob
        random_reads(m.by_hash / h, blob, 10, seed=5)
    (m.incoming / "from-mount").write_bytes(b"written through dosfs")
    h = os.readlink(m.incoming / "from-mount").rsplit("/", 1)[1]
    theirs = dos.Container(str(folder))
    assert theirs.get_object_content(h) == b"written through dosfs"
    theirs.close()


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = Path(__file__).resolve().parents[2] / "systemd" / "dosfs@.service"
    text = unit.read_text()
    assert "Type=notify" in text and "ExecStopPost=" in text
    assert not re.search(r"^\s*(Private|Protect)\w*=", text, re.M)  # would hide the mount
    # verify an instance with ExecStart pointing at this checkout's dosfs
    dosfs_bin = shutil.which("dosfs") or str(Path(sys.executable).parent / "dosfs")
    (tmp_path / "dosfs@.service").write_text(text.replace("/usr/local/bin/dosfs", dosfs_bin))
    env_dir = tmp_path / "etc"
    env_dir.mkdir()
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(tmp_path / "dosfs@mnt-objs.service")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if "dosfs@" in line and "Failed to load EnvironmentFile" not in line
    ]
    assert result.returncode == 0 or not problems, result.stdout + result.stderr
    assert not problems, problems


# ---------------------------------------------------------------------------- corruption


def test_corrupt_pack_gives_eio_a_log_line_and_the_daemon_keeps_serving(
    mount: Callable[..., Mounted], make_container: Callable[..., Path]
) -> None:
    folder = make_container()
    c = Container(folder)
    text = b"".join(b"%06d some compressible text\n" % i for i in range(50_000))
    healthy = b"healthy object"
    h_bad = c.add_objects_to_pack([text], compress=True)[0]
    h_good = c.add_objects_to_pack([healthy])[0]
    h_cut = c.add_objects_to_pack([b"tail object " * 100])[0]
    bad, cut = c.get_object_meta(h_bad), c.get_object_meta(h_cut)
    c.close()
    # garble the middle of the compressed stream and cut the pack before the last object
    pack = folder / "packs" / str(bad["pack_id"])
    with open(pack, "r+b") as f:
        f.seek(bad["pack_offset"] + bad["pack_length"] // 2)
        f.write(b"\xff" * 64)
        f.truncate(cut["pack_offset"] + 10)
    m = mount(folder)
    m.expect_errors = True
    assert os_error(lambda: (m.by_hash / h_bad).read_bytes()) == errno.EIO
    assert os_error(lambda: (m.by_hash / h_cut).read_bytes()) == errno.EIO
    # the daemon is still there and serves the healthy object
    assert (m.by_hash / h_good).read_bytes() == healthy
    assert run("cat", str(m.by_hash / h_good)).stdout == healthy.decode()
    log = m.log_text()
    assert h_bad in log and h_cut in log, log
    assert "ERROR" in log
    assert m.is_mounted()
