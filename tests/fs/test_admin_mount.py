"""Mounting the way admins do: mount(8), fstab lines, standard options, auto_unmount, short
hashes and live statistics, all through real mounts and real tools."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dosfs import Container
from tests.fs.conftest import DOSFS, FSNAME, Mounted, fsname_mounts, wait_for, with_suppress_kill

#: the PATH mount.fuse3 gives the helper it runs (measured: it replaces the caller's PATH)
MOUNT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def installed_dosfs() -> str | None:
    """Why mount(8) cannot run this checkout's dosfs, or None."""
    if shutil.which("mount.fuse3") is None:
        return "mount.fuse3 is missing (apt install fuse3)"
    found = shutil.which("dosfs", path=MOUNT_PATH)
    if found is None:
        return "dosfs is not on mount(8)'s PATH: run scripts/setup"
    ours = Path(sys.executable).parent / "dosfs"
    if Path(found).resolve() != ours.resolve():
        return f"mount(8) would run {found}, not this checkout's {ours}: run scripts/setup"
    return None


@pytest.fixture
def system_mounts(fuse: None) -> Iterator[list[Path]]:
    """Mountpoints made by mount(8) in a test; unmounted (lazily and killed on failure) after."""
    made: list[Path] = []
    yield made
    from dosfs.mount import daemon_pids

    for path in made:
        if str(path) not in fsname_mounts():
            continue
        pids = daemon_pids(path)
        done = subprocess.run(["umount", str(path)], capture_output=True)
        if done.returncode != 0:
            subprocess.run(["fusermount3", "-uz", str(path)], capture_output=True)
            for pid in pids:
                with_suppress_kill(pid)
        wait_for(lambda pids=pids: not any(os.path.exists(f"/proc/{p}") for p in pids),
                 what="exit")


@pytest.fixture
def filled(make_container: Callable[..., Path]) -> tuple[Path, dict[str, bytes]]:
    folder = make_container()
    contents = [b"loose object\n", b"packed object\n" * 100]
    with Container(folder) as c:
        loose = c.add_object(contents[0])
        packed = c.add_objects_to_pack([contents[1]])[0]
    return folder, {loose: contents[0], packed: contents[1]}


def test_mount_t_fuse_dosfs(
    filled: tuple[Path, dict[str, bytes]], tmp_path: Path, system_mounts: list[Path]
) -> None:
    reason = installed_dosfs()
    if reason:
        pytest.skip(reason)
    folder, objects = filled
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    system_mounts.append(mnt)
    opts = f"fsname={FSNAME},ro,noatime,nosuid,nodev,noexec,_netdev,nofail,x-systemd.automount"
    done = subprocess.run(
        ["mount", "-t", "fuse.dosfs", str(folder), str(mnt), "-o", opts],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert os.path.ismount(mnt)  # ready when mount(8) returns
    for key, data in objects.items():
        assert subprocess.run(["cat", str(mnt / "by-hash" / key)], capture_output=True,
                              check=True).stdout == data
    line = next(x for x in Path("/proc/self/mounts").read_text().splitlines()
                if x.split()[1] == str(mnt))
    assert line.split()[2] == "fuse.dosfs" and "ro" in line.split()[3].split(",")
    write = subprocess.run(["cp", "/etc/hostname", str(mnt / "incoming" / "x")],
                           capture_output=True, text=True)
    assert write.returncode != 0 and "Read-only file system" in write.stderr


def test_fstab_line(
    filled: tuple[Path, dict[str, bytes]], tmp_path: Path, system_mounts: list[Path]
) -> None:
    """An fstab line as the docs give it, through `mount MOUNTPOINT` with an alternative
    fstab (mount -T), so the machine's /etc/fstab is left alone."""
    reason = installed_dosfs()
    if reason:
        pytest.skip(reason)
    folder, objects = filled
    mnt = tmp_path / "objs"
    mnt.mkdir()
    system_mounts.append(mnt)
    fstab = tmp_path / "fstab"
    fstab.write_text(f"{folder} {mnt} fuse.dosfs defaults,_netdev,fsname={FSNAME} 0 0\n")
    done = subprocess.run(["mount", "-T", str(fstab), str(mnt)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    key = next(iter(objects))
    assert (mnt / "by-hash" / key).read_bytes() == objects[key]
    new = mnt / "incoming" / "new"  # `defaults` is read-write
    new.write_bytes(b"written through an fstab mount")
    key_new = hashlib.sha256(b"written through an fstab mount").hexdigest()
    assert (mnt / "by-hash" / key_new).exists()
    done = subprocess.run(["umount", str(mnt)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert not os.path.ismount(mnt)


def test_auto_unmount_after_sigkill(
    filled: tuple[Path, dict[str, bytes]], mount: Callable[..., Mounted]
) -> None:
    folder, _ = filled
    m = mount(folder, "auto_unmount")
    assert m.proc is not None
    m.proc.send_signal(signal.SIGKILL)
    m.proc.wait(timeout=20)
    wait_for(lambda: not os.path.ismount(m.path), what="fusermount3 to unmount")
    assert os.listdir(m.path) == []  # an empty directory, not "Transport endpoint is not connected"
    m.expect_errors = True  # killed: no clean shutdown line


def test_killed_without_auto_unmount_leaves_a_dead_mount(
    filled: tuple[Path, dict[str, bytes]], mount: Callable[..., Mounted]
) -> None:
    """The contrast that makes the test above mean something."""
    folder, _ = filled
    m = mount(folder)
    assert m.proc is not None
    m.proc.send_signal(signal.SIGKILL)
    m.proc.wait(timeout=20)
    with pytest.raises(OSError) as err:
        os.listdir(m.path)
    assert err.value.errno == 107  # ENOTCONN
    m.expect_errors = True
    subprocess.run(["fusermount3", "-u", str(m.path)], check=True)


def test_uid_gid_umask(
    filled: tuple[Path, dict[str, bytes]], mount: Callable[..., Mounted]
) -> None:
    folder, objects = filled
    m = mount(folder, "uid=1234,gid=5678,umask=027")
    for key in objects:
        st = (m.by_hash / key).stat()
        assert (st.st_uid, st.st_gid) == (1234, 5678)
        assert stat.S_IMODE(st.st_mode) & 0o027 == 0
        assert stat.S_IMODE(st.st_mode) & 0o440 == 0o440
    st = m.by_hash.stat()
    assert (st.st_uid, st.st_gid) == (1234, 5678) and stat.S_IMODE(st.st_mode) & 0o027 == 0
    ls = subprocess.run(["ls", "-ln", str(m.by_hash)], capture_output=True, text=True, check=True)
    assert all(" 1234 5678 " in line for line in ls.stdout.splitlines()[1:])


def colliding_prefix_pair() -> tuple[bytes, bytes]:
    """Two contents whose sha256 share the first 8 hex digits (a birthday search, ~1e5 hashes)."""
    seen: dict[str, bytes] = {}
    i = 0
    while True:
        data = b"%d" % i
        prefix = hashlib.sha256(data).hexdigest()[:8]
        if prefix in seen:
            return seen[prefix], data
        seen[prefix] = data
        i += 1


def test_short_hashes(make_container: Callable[..., Path], mount: Callable[..., Mounted]) -> None:
    folder = make_container()
    a, b = colliding_prefix_pair()
    unique = b"the only object with its prefix\n"
    with Container(folder) as c:
        key = c.add_objects_to_pack([unique])[0]
        ka, kb = c.add_object(a), c.add_object(b)
    assert ka[:8] == kb[:8] and ka != kb
    m = mount(folder)
    out = subprocess.run(["cat", str(m.by_hash / key[:8])], capture_output=True, check=True)
    assert out.stdout == unique
    assert os.readlink(m.by_hash / key[:12]) == key
    for name in (ka[:8], key[:7], "0" * 8 if not key.startswith("0" * 8) else "f" * 8,
                 key[:8] + "x"):
        done = subprocess.run(["cat", str(m.by_hash / name)], capture_output=True, text=True)
        assert done.returncode == 1 and "No such file or directory" in done.stderr, name
    n = next(i for i in range(8, 64) if ka[i] != kb[i]) + 1  # the first prefix telling them apart
    assert (m.by_hash / ka[:n]).read_bytes() == a and (m.by_hash / kb[:n]).read_bytes() == b
    listed = os.listdir(m.by_hash)
    assert sorted(listed) == sorted([key, ka, kb])  # short names are never listed


def test_stats_xattr_and_command(
    filled: tuple[Path, dict[str, bytes]], mount: Callable[..., Mounted]
) -> None:
    folder, objects = filled
    m = mount(folder)
    for key in objects:
        subprocess.run(["cat", str(m.by_hash / key)], capture_output=True, check=True)
    subprocess.run(["cat", str(m.by_hash / ("0" * 64))], capture_output=True)
    (m.incoming / "new").write_bytes(b"counted")
    out = subprocess.run(
        ["getfattr", "--only-values", "-n", "user.dosfs.stats", str(m.path)],
        capture_output=True, check=True,
    )
    data = json.loads(out.stdout)
    for field in ("uptime_s", "requests", "bytes_read", "bytes_written", "objects_committed",
                  "errors", "verify_failures", "latency_us"):
        assert field in data, field
    assert data["bytes_read"] >= sum(len(v) for v in objects.values())
    assert data["bytes_written"] == len(b"counted")
    assert data["objects_committed"] == 1
    assert data["errors"].get("ENOENT", 0) >= 1
    assert data["requests"]["lookup"] >= 3 and data["requests"]["read"] >= 2
    assert set(data["latency_us"]["read"]) == {"p50", "p90", "p99"}

    shown = subprocess.run([*DOSFS, "stats", str(m.path)], capture_output=True, text=True,
                           check=True).stdout
    assert "lookup" in shown and "ENOENT" in shown and "uptime" in shown
    raw = json.loads(subprocess.run([*DOSFS, "stats", "--json", str(m.path)],
                                    capture_output=True, text=True, check=True).stdout)
    assert raw["objects_committed"] == 1 and raw["requests"]["lookup"] >= 3

    bad = subprocess.run([*DOSFS, "stats", str(folder)], capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.startswith("dosfs: error:")
    assert len(bad.stderr.strip().splitlines()) == 1


def test_sigusr1_logs_thread_stacks(
    filled: tuple[Path, dict[str, bytes]], mount: Callable[..., Mounted]
) -> None:
    folder, objects = filled
    m = mount(folder)
    assert m.proc is not None
    m.proc.send_signal(signal.SIGUSR1)
    wait_for(lambda: "Current thread" in m.log_text() or "Thread 0x" in m.log_text(),
             what="the stack dump")
    key = next(iter(objects))
    assert (m.by_hash / key).read_bytes() == objects[key]  # and the daemon keeps serving


def test_log_file_after_the_subcommand_gets_the_start_up_lines(
    filled: tuple[Path, dict[str, bytes]], mount: Callable[..., Mounted]
) -> None:
    folder, _ = filled
    m = mount(folder, background=True)  # runs `dosfs mount -o ... --log-file LOG C MP`
    text = m.log_text()
    assert f"mounted at {m.path}" in text, text
    assert text.splitlines()[0].split()[2:4] == ["INFO", "dosfs.mount:"], text


def test_delete_and_repack_on_a_mounted_container(
    filled: tuple[Path, dict[str, bytes]], mount: Callable[..., Mounted]
) -> None:
    folder, objects = filled
    m = mount(folder)
    loose, packed = objects
    refused = subprocess.run([*DOSFS, "delete", str(folder), packed], capture_output=True,
                             text=True)
    assert refused.returncode == 1 and f"mounted at {m.path}" in refused.stderr
    assert "--force" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert (m.by_hash / packed).read_bytes() == objects[packed]  # nothing was deleted
    with open(m.by_hash / loose, "rb") as held:
        forced = subprocess.run([*DOSFS, "delete", "--force", str(folder), loose],
                                capture_output=True, text=True)
        assert forced.returncode == 0, forced.stderr
        assert held.read() == objects[loose]  # an open file keeps reading a deleted object
    repacked = subprocess.run([*DOSFS, "repack", str(folder)], capture_output=True, text=True)
    assert repacked.returncode == 0, repacked.stderr
    assert f"mounted at {m.path}" in repacked.stdout + repacked.stderr
    assert (m.by_hash / packed).read_bytes() == objects[packed]


@pytest.mark.parametrize("how", ["truncated", "garbled"])
def test_mount_refuses_a_damaged_index(
    filled: tuple[Path, dict[str, bytes]], tmp_path: Path, fuse: None, how: str
) -> None:
    """Issue 22: it mounted with a WARNING and answered EIO for every packed object."""
    folder, _ = filled
    index = folder / "packs.idx"
    for extra in ("-wal", "-shm"):
        Path(f"{index}{extra}").unlink(missing_ok=True)
    with open(index, "r+b") as f:
        if how == "truncated":
            f.truncate(index.stat().st_size // 2)
        else:
            f.write(b"\xff" * 64)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    for foreground in ([], ["--foreground"]):
        done = subprocess.run(
            [*DOSFS, "mount", *foreground, "-o", f"fsname={FSNAME}", str(folder), str(mnt)],
            capture_output=True, text=True, timeout=60,
        )
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and len(lines) == 1, done.stderr
        assert lines[0].startswith("dosfs: error: ") and "packs.idx" in lines[0], lines
        assert str(mnt) not in fsname_mounts()


def test_read_only_mount_of_a_read_only_container(
    filled: tuple[Path, dict[str, bytes]], tmp_path: Path, mount: Callable[..., Mounted]
) -> None:
    """Another user's container (here: a read-only bind mount of it) mounts with -o ro."""
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root")
    folder, objects = filled
    for extra in ("-wal", "-shm"):
        Path(f"{folder}/packs.idx{extra}").unlink(missing_ok=True)
    view = tmp_path / "ro-view"
    view.mkdir()
    subprocess.run(["mount", "--bind", "-o", "ro", str(folder), str(view)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(view)], check=True)
        m = mount(view, "ro")
        try:
            for key, content in objects.items():
                assert (m.by_hash / key).read_bytes() == content
            text = m.log_text()
            assert "readonly database" not in text and "full disk" not in text, text
        finally:
            m.unmount()
    finally:
        subprocess.run(["umount", "-l", str(view)], capture_output=True)


def test_stats_watch_shows_rates_and_ends_quietly_on_ctrl_c(
    filled: tuple[Path, dict[str, bytes]], mount: Callable[..., Mounted]
) -> None:
    folder, objects = filled
    m = mount(folder)
    shown = subprocess.run([*DOSFS, "stats", str(m.path)], capture_output=True, text=True,
                           check=True).stdout
    assert "rates (mean since the mount)" in shown and "per s" in shown
    assert "bytes read" not in shown and " B read" in shown  # human sizes, as elsewhere
    for args in (["--watch", "0.3", str(m.path)], ["--watch", str(m.path)]):
        proc = subprocess.Popen([*DOSFS, "stats", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        for key in objects:
            (m.by_hash / key).read_bytes()
        time.sleep(2.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0 and err == "", (proc.returncode, err)
        assert "rates (last " in out and "/s read" in out, out


def test_stats_and_status_say_the_daemon_died(
    filled: tuple[Path, dict[str, bytes]], mount: Callable[..., Mounted]
) -> None:
    folder, _ = filled
    m = mount(folder, f"fsname={folder}")  # the mount table's source: how status finds it dead
    assert m.proc is not None
    m.proc.send_signal(signal.SIGKILL)
    m.proc.wait(timeout=20)
    m.expect_errors = True
    for command in ("stats", "status"):
        proc = subprocess.run([*DOSFS, command, str(m.path)], capture_output=True, text=True)
        assert proc.returncode == 1, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "daemon of" in lines[0] and "has died" in lines[0], lines
    proc = subprocess.run([*DOSFS, "status", str(folder)], capture_output=True, text=True)
    assert proc.returncode == 0 and "its daemon has died" in proc.stdout, proc
    subprocess.run([*DOSFS, "umount", str(m.path)], check=True, capture_output=True)
    assert not os.path.ismount(m.path)


def test_debug_logs_every_error_answered(
    filled: tuple[Path, dict[str, bytes]], mount: Callable[..., Mounted]
) -> None:
    folder, _ = filled
    m = mount(folder, "debug", background=True)  # -o debug: as --debug (fstab has no flags)
    assert not (m.by_hash / ("0" * 64)).exists()
    with pytest.raises(OSError):
        (m.path / "by-hash" / "new").write_bytes(b"refused")
    text = m.log_text()
    assert "DEBUG" in text and "lookup(" in text and "-> ENOENT" in text, text
    assert "-> EROFS" in text or "-> EACCES" in text, text


def test_what_the_daemon_would_fail_on_is_one_line_before_it_starts(
    filled: tuple[Path, dict[str, bytes]], tmp_path: Path, fuse: None
) -> None:
    import socket

    folder, _ = filled
    mp = tmp_path / "mp"
    mp.mkdir()
    proc = subprocess.run([*DOSFS, "mount", str(folder), str(mp), "--log-file",
                           str(tmp_path / "no-such-folder" / "log")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and not os.path.ismount(mp)
    assert proc.stderr.strip().splitlines() == [
        f"dosfs: error: cannot write the log file {tmp_path}/no-such-folder/log: "
        "No such file or directory"]
    pytest.importorskip("psycopg")
    with socket.socket() as silent:  # a "PostgreSQL server" that never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"postgresql://u:p@127.0.0.1:{silent.getsockname()[1]}/db"
        started = time.monotonic()
        proc = subprocess.run([*DOSFS, "mount", str(folder), str(mp), "--aiida-db", url],
                              capture_output=True, text=True, timeout=60)
    assert time.monotonic() - started < 20 and not os.path.ismount(mp)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"dosfs: error: cannot open the AiiDA database {url}: "), lines


def test_umount_after_verified_reads_is_prompt(
    make_container: Callable[..., Path], mount: Callable[..., Mounted]
) -> None:
    """The hash helper process is told to stop at exit (it used to hold the daemon 10 s)."""
    folder = make_container()
    blob = os.urandom(3 * 1024 * 1024)  # over SMALL_VERIFY: verified by the helper process
    with Container(folder) as c:
        key = c.add_objects_to_pack([blob])[0]
    m = mount(folder, background=True)
    assert (m.by_hash / key).read_bytes() == blob
    started = time.monotonic()
    subprocess.run([*DOSFS, "umount", str(m.path)], check=True, capture_output=True, timeout=60)
    assert time.monotonic() - started < 5
    assert not m.pids()
