"""`dosfs mount s3://…` through a real mount against the real gateway: by-hash/ read-only with
the bytes of the published generation (verified), EROFS for writes, a bounded block cache, new
generations picked up while open files keep theirs, a wrong byte from the server is EIO (the
daemon keeps serving), a server that is down or silent is EIO within the timeout and served
again once it is back, and bad input is one clear line from `dosfs mount`."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import obstore
import pytest

from dosfs.container import Container
from dosfs.remote.layout import read_head
from dosfs.remote.push import push
from dosfs.remote.url import make_store, parse_url
from tests.fs.conftest import DOSFS, FSNAME, Mounted, wait_for
from tests.remote.conftest import S3Server
from tests.remote.tcpproxy import FaultProxy

MiB = 1024 * 1024


def _make(folder: Path) -> dict[str, bytes]:
    objects: dict[str, bytes] = {}
    with Container(folder) as c:
        c.init_container()
        for data in [b"", b"x", os.urandom(1000), os.urandom(300_000), os.urandom(9 * MiB)]:
            objects[c.add_objects_to_pack([data])[0]] = data
        packed_z = os.urandom(1000) * 3000  # 3 MB that compresses
        objects[c.add_objects_to_pack([packed_z], compress=True)[0]] = packed_z
        loose = os.urandom(5000)
        objects[c.add_object(loose)] = loose
    return objects


def _read(path: Path) -> bytes:
    return subprocess.run(["cat", str(path)], check=True, capture_output=True).stdout


def _cat_error(path: Path, timeout: float = 60) -> str:
    r = subprocess.run(["cat", str(path)], capture_output=True, text=False, timeout=timeout)
    assert r.returncode != 0, "read should have failed"
    return r.stderr.decode()


@pytest.fixture
def published(tmp_path: Path, bucket: str, aws_env: None) -> Iterator[tuple[str, dict[str, bytes]]]:
    objects = _make(tmp_path / "c")
    target = f"s3://{bucket}/group/repo"
    push(tmp_path / "c", target)
    yield target, objects


def test_serves_every_object_verified_and_refuses_writes(
    tmp_path: Path, published: tuple[str, dict[str, bytes]], mount: Callable[..., Mounted]
) -> None:
    target, objects = published
    cache = tmp_path / "cache"
    m = mount(target, f"cache_dir={cache}", "cache_size=4MiB", "refresh=0")
    assert sorted(os.listdir(m.by_hash)) == sorted(objects)
    for h, data in objects.items():
        assert _read(m.by_hash / h) == data, h
        assert os.stat(m.by_hash / h).st_size == len(data)
    big = max(objects, key=lambda h: len(objects[h]))
    out = subprocess.run(
        ["getfattr", "--only-values", "-n", "user.dosfs.hash", str(m.by_hash / big)],
        check=True, capture_output=True, text=True).stdout
    assert out.strip() == big
    size = subprocess.run(  # from the index (its tables), as a packed object's meta
        ["getfattr", "--only-values", "-n", "user.dosfs.size", str(m.by_hash / big)],
        check=True, capture_output=True, text=True).stdout
    assert int(size) == len(objects[big])
    # dd with an offset: a ranged read in the middle of the 9 MiB object
    got = subprocess.run(["dd", f"if={m.by_hash / big}", "bs=4096", "skip=1000", "count=3",
                          "status=none"], check=True, capture_output=True).stdout
    assert got == objects[big][4096 * 1000 : 4096 * 1003]
    # the cache keeps to its bound
    held = sum(f.stat().st_size for f in cache.iterdir() if f.is_file())
    assert 0 < held <= 4 * MiB
    # read-only: EROFS for writes anywhere, ENOENT for an unknown hash
    for path in (m.incoming / "new", m.by_hash / ("0" * 64 + "x")):
        with pytest.raises(OSError) as info:
            path.write_bytes(b"data")
        assert info.value.errno in (errno.EROFS, errno.EACCES), path
    with pytest.raises(FileNotFoundError):
        os.stat(m.by_hash / ("f" * 64))
    line = next(x for x in Path("/proc/mounts").read_text().splitlines() if f" {m.path} " in x)
    assert line.split()[3].split(",")[0] == "ro"
    # live statistics: the GETs, the bytes fetched and the cache (dosfs stats)
    stats = json.loads(subprocess.run([*DOSFS, "stats", "--json", str(m.path)], check=True,
                                      capture_output=True, text=True).stdout)["remote"]
    assert stats["url"] == target and stats["generation"] == 1
    assert stats["requests"] > 0 and stats["bytes_fetched"] >= len(objects[big])
    assert 0 < stats["cache_bytes"] <= stats["cache_capacity"] == 4 * MiB
    text = subprocess.run([*DOSFS, "stats", str(m.path)], check=True, capture_output=True,
                          text=True).stdout
    assert f"remote {target} generation 1" in text


def test_new_generation_while_an_open_file_keeps_its_own(
    tmp_path: Path, published: tuple[str, dict[str, bytes]], mount: Callable[..., Mounted]
) -> None:
    target, objects = published
    big = max(objects, key=lambda h: len(objects[h]))
    m = mount(target, f"cache_dir={tmp_path / 'cache'}", "refresh=0.2")
    with open(m.by_hash / big, "rb", buffering=0) as f:
        head = f.read(1 * MiB)
        # the publisher moves everything: objects deleted, the rest repacked into new packs,
        # a new object added; then a push publishes generation 2
        with Container(tmp_path / "c") as c:
            gone = [h for h in objects if h != big and len(objects[h]) == 1000]
            c.delete_objects(gone)
            c.pack_all_loose()
            c.clean_storage()
            c.repack()
            new = c.add_object(b"only in generation 2")
        assert push(tmp_path / "c", target).generation == 2
        wait_for(lambda: os.path.exists(m.by_hash / new), what="generation 2 in the mount")
        assert _read(m.by_hash / new) == b"only in generation 2"
        rest = f.read()  # the handle opened in generation 1 reads on, every byte right
    assert head + rest == objects[big]
    assert _read(m.by_hash / big) == objects[big]  # opened anew: generation 2's segments
    assert "now serving generation 2" in m.log_text()


def _corrupt(store: object, target: str, folder: Path, hashkey: str) -> None:
    """Flip one byte of `hashkey` in the bucket's copy (a server handing out wrong bytes)."""
    url = parse_url(target)
    with Container(folder) as c:
        meta = c.get_object_meta(hashkey)
    generation = read_head(make_store(url), url)
    assert generation is not None and meta.pack_id is not None
    where = meta.pack_offset + meta.pack_length // 2
    start = 0
    for seg in generation.packs[meta.pack_id]:
        if start <= where < start + seg.length:
            key = url.key(seg.key)
            data = bytearray(obstore.get(store, key).bytes())  # type: ignore[arg-type]
            data[where - start] ^= 0x01
            obstore.put(store, key, bytes(data))  # type: ignore[arg-type]
            return
        start += seg.length
    raise AssertionError("no segment holds the object")


def test_a_wrong_byte_from_the_server_is_eio_and_the_daemon_keeps_serving(
    tmp_path: Path, bucket: str, published: tuple[str, dict[str, bytes]], s3_server: S3Server,
    mount: Callable[..., Mounted],
) -> None:
    target, objects = published
    big = max(objects, key=lambda h: len(objects[h]))
    small = next(h for h in objects if len(objects[h]) == 300_000)
    _corrupt(s3_server.store(bucket), target, tmp_path / "c", big)
    _corrupt(s3_server.store(bucket), target, tmp_path / "c", small)
    m = mount(target, f"cache_dir={tmp_path / 'cache'}", "refresh=0")
    m.expect_errors = True
    for h in (big, small):
        assert "Input/output error" in _cat_error(m.by_hash / h)
        assert h in m.log_text()
    for h, data in objects.items():
        if h not in (big, small):
            assert _read(m.by_hash / h) == data  # the others are served, verified


def test_server_down_or_silent_is_eio_within_the_timeout_then_served_again(
    tmp_path: Path, published: tuple[str, dict[str, bytes]], s3_server: S3Server,
    mount: Callable[..., Mounted], monkeypatch: pytest.MonkeyPatch,
) -> None:
    target, objects = published
    proxy = FaultProxy(s3_server.endpoint)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        m = mount(target, f"cache_dir={tmp_path / 'cache'}", "timeout=1", "refresh=0")
        m.expect_errors = True
        big = max(objects, key=lambda h: len(objects[h]))
        first = next(h for h in objects if len(objects[h]) == 1000)
        assert _read(m.by_hash / first) == objects[first]  # its block is now cached
        for mode in ("refuse", "hang"):
            proxy.set_mode(mode)
            start = time.monotonic()
            assert "Input/output error" in _cat_error(m.by_hash / big)
            assert time.monotonic() - start < 30, mode  # bounded: never hangs
            assert m.is_mounted() and os.listdir(m.path)  # the daemon keeps serving
            assert _read(m.by_hash / first) == objects[first]  # from the cache
            proxy.set_mode("pass")
            assert hashlib.sha256(_read(m.by_hash / big)).hexdigest() == big  # back: served
            # forget the cached blocks: the next mode must reach the server again
            for f in (tmp_path / "cache").iterdir():
                f.unlink()
            m.unmount()
            m = mount(target, f"cache_dir={tmp_path / 'cache'}", "timeout=1", "refresh=0",
                      name=f"mnt-{mode}")
            m.expect_errors = True
            assert _read(m.by_hash / first) == objects[first]
    finally:
        proxy.close()


def test_mount_errors_are_one_clear_line(
    tmp_path: Path, bucket: str, aws_env: None, fuse: None
) -> None:
    mp = tmp_path / "mp"
    mp.mkdir()
    with Container(tmp_path / "c") as c:
        c.init_container()
        c.add_object(b"x")
    push(tmp_path / "c", f"s3://{bucket}/x")
    cases = [
        ([f"s3://{bucket}/nothing-here", str(mp)], "nothing published"),
        (["--secret", f"s3://{bucket}/x", str(mp)], "access denied"),
        (["s3://dosfs-no-such-bucket-anywhere/x", str(mp)], "does not exist|nothing published"),
        ([str(tmp_path), str(mp), "-o", "cache_size=1GiB"], "only for s3://|container"),
        ([f"s3://{bucket}/x", str(mp), "-o", "cache_size=lots"], "not a size"),
    ]
    for args, expected in cases:
        env = dict(os.environ)
        if args[0] == "--secret":  # bad credentials
            args = args[1:]
            env["AWS_SECRET_ACCESS_KEY"] = "not-the-secret"
        r = subprocess.run([*DOSFS, "mount", *args], capture_output=True, text=True, timeout=60,
                           env=env)
        assert r.returncode in (1, 2), (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("dosfs: error:"), r.stderr
        assert re.search(expected, lines[0]), (expected, lines[0])
        assert not os.path.ismount(mp)


def test_mount_8_with_credentials_from_aws_files_only(
    tmp_path: Path, published: tuple[str, dict[str, bytes]], s3_server: S3Server, fuse: None
) -> None:
    """`mount -t fuse.dosfs s3://… MOUNTPOINT` (what an fstab line runs) with an empty
    environment: endpoint and credentials come from ~/.aws-style files alone."""
    from tests.fs.test_admin_mount import installed_dosfs

    reason = installed_dosfs()
    if reason:
        pytest.skip(reason)
    target, objects = published
    aws = tmp_path / "aws"
    aws.mkdir()
    (aws / "credentials").write_text(
        f"[default]\naws_access_key_id = {s3_server.access_key}\n"
        f"aws_secret_access_key = {s3_server.secret_key}\n")
    (aws / "config").write_text(
        f"[default]\nendpoint_url = {s3_server.endpoint}\nregion = {s3_server.region}\n")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "AWS_CONFIG_FILE": str(aws / "config"),
           "AWS_SHARED_CREDENTIALS_FILE": str(aws / "credentials")}
    done = subprocess.run(
        ["mount", "-t", "fuse.dosfs", target, str(mnt), "-o",
         f"fsname={FSNAME},_netdev,cache_dir={tmp_path / 'cache'},refresh=0"],
        env=env, capture_output=True, text=True, timeout=60)
    try:
        assert done.returncode == 0, done.stderr
        for h, data in objects.items():
            assert _read(mnt / "by-hash" / h) == data
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True)
    assert not os.path.ismount(mnt)


def test_many_readers_while_the_publisher_pushes_and_repacks(
    tmp_path: Path, bucket: str, aws_env: None, mount: Callable[..., Mounted]
) -> None:
    """Four reader processes cat objects through the s3 mount while the publisher adds, deletes,
    repacks and pushes five more generations (refresh=0.2 s): new bases (repacks) and runs
    (loose objects added, a loose one deleted: a tombstone, then packed) in turn. Every read that
    succeeds is byte-exact, and only objects the publisher deleted may vanish."""
    folder = tmp_path / "c"
    objects: dict[str, bytes] = {}
    with Container(folder) as c:
        c.init_container()
        for data in [os.urandom(n) for n in (10, 5000, 300_000, 3 * MiB)] * 3:
            data = data + os.urandom(8)
            objects[c.add_objects_to_pack([data])[0]] = data
    target = f"s3://{bucket}/busy"
    push(folder, target)
    m = mount(target, f"cache_dir={tmp_path / 'cache'}", "cache_size=8MiB", "refresh=0.2")
    (tmp_path / "expected").mkdir()
    for h, data in objects.items():
        (tmp_path / "expected" / h).write_bytes(data)
    reader = (
        "import os, random, sys\n"
        "mnt, exp, stop = sys.argv[1], sys.argv[2], sys.argv[3]\n"
        "names = sorted(os.listdir(exp)); bad = 0; gone = set(); n = 0\n"
        "while not os.path.exists(stop) or n < 50:\n"
        "    n += 1\n"
        "    h = random.choice(names)\n"
        "    try:\n"
        "        got = open(os.path.join(mnt, h), 'rb').read()\n"
        "    except FileNotFoundError:\n"
        "        gone.add(h); continue\n"
        "    bad += got != open(os.path.join(exp, h), 'rb').read()\n"
        "print(bad, n, *sorted(gone))\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", reader, str(m.by_hash),
                               str(tmp_path / "expected"), str(tmp_path / "stop")],
                              stdout=subprocess.PIPE, text=True) for _ in range(4)]
    deleted: set[str] = set()
    extra: dict[str, bytes] = {}
    for round_ in range(5):
        with Container(folder) as c:
            if round_ in (0, 4):  # rows move: a new base
                victim = sorted(set(objects) - deleted)[round_]
                c.delete_objects([victim])
                deleted.add(victim)
                c.add_object(os.urandom(1000))
                c.pack_all_loose()
                c.clean_storage()
                c.repack()
            elif round_ == 1:  # loose objects: a run
                for _ in range(3):
                    data = os.urandom(2000)
                    extra[c.add_object(data)] = data
            elif round_ == 2:  # one loose object goes (a tombstone), one packed comes
                gone = sorted(extra)[0]
                c.delete_objects([gone])
                del extra[gone]
                data = os.urandom(3000)
                extra[c.add_objects_to_pack([data])[0]] = data
            else:  # the loose ones get packed: their rows move to a pack (a run)
                c.pack_all_loose()
                c.clean_storage()
        report = push(folder, target)
        assert not report.unchanged
    wait_for(lambda: "now serving generation 6" in m.log_text(), what="generation 6")
    (tmp_path / "stop").touch()
    results = [p.communicate(timeout=300)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum(int(r[0]) for r in results) == 0  # never a wrong byte
    assert all(int(r[1]) >= 50 for r in results)
    assert {h for r in results for h in r[2:]} <= deleted  # only deleted objects vanish
    for h in set(objects) - deleted:  # everything kept reads back after the last switch
        assert _read(m.by_hash / h) == objects[h]
    for h, data in extra.items():
        assert _read(m.by_hash / h) == data


def test_dosfs_container_may_name_the_bucket(
    tmp_path: Path, published: tuple[str, dict[str, bytes]], fuse: None
) -> None:
    """`DOSFS_CONTAINER=s3://… dosfs mount MOUNTPOINT`, like every other command's variable."""
    target, objects = published
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = {**os.environ, "DOSFS_CONTAINER": target}
    subprocess.run([*DOSFS, "mount", "-o", f"fsname={FSNAME},cache_dir={tmp_path / 'cache'}",
                    str(mnt)], env=env, check=True, capture_output=True, timeout=60)
    try:
        h = next(iter(objects))
        assert _read(mnt / "by-hash" / h) == objects[h]
    finally:
        subprocess.run([*DOSFS, "umount", str(mnt)], capture_output=True, timeout=60)
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True)
    assert not os.path.ismount(mnt)


def test_a_full_cache_disk_still_serves_every_byte(
    tmp_path: Path, published: tuple[str, dict[str, bytes]], mount: Callable[..., Mounted]
) -> None:
    """The cache folder on a 1 MiB filesystem: extents cannot be stored (one WARNING line), every
    object is still served whole and verified, straight from the server."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    try:
        target, objects = published
        m = mount(target, f"cache_dir={small / 'cache'}", "refresh=0")
        for h, data in objects.items():
            assert _read(m.by_hash / h) == data, h
        assert "cache: cannot store" in m.log_text()
        m.unmount()
    finally:
        subprocess.run(["umount", "-l", str(small)], capture_output=True)
