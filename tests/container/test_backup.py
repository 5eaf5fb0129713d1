"""`dosfs backup`: dostore's backup layout, hard links across both tools, consistency while the
container is in use, interruption, --keep, the CLI, and the rsync/ssh path.

disk-objectstore 1.5 (`dostore`) is the other side: it writes into the same DEST and validates
what dosfs wrote. Real files, real processes (writers, packers, SIGKILL), a real sshd when one is
installed.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from dosfs import Container
from dosfs.cli import main
from dosfs.container.backup import (
    BackupError,
    _moved_pack,
    _pin_packs,
    _release_all,
    backup,
    backups_to_remove,
    choose_previous,
    new_backup_name,
    split_destination,
)

disk_objectstore = pytest.importorskip("disk_objectstore")
from disk_objectstore import Container as DosContainer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DOSTORE = shutil.which("dostore", path=os.path.dirname(sys.executable)) or "dostore"
NAME_RE = re.compile(r"backup_\d{14}_[a-z0-9]{4}")
needs_rsync = pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed")


# -- helpers ---------------------------------------------------------------------------------------
def _fill(folder: Path, packed: int, loose: int, seed: int = 0, target: int = 64 * 1024) -> None:
    c = Container(folder)
    if not c.is_initialised:
        c.init_container(pack_size_target=target)
    try:
        if packed:
            c.add_objects_to_pack(
                [b"packed %d %d " % (seed, i) * (i % 50 + 1) for i in range(packed)],
                compress=seed % 2 == 0,
            )
        for i in range(loose):
            c.add_object(b"loose %d %d " % (seed, i) * (i % 30 + 1))
    finally:
        c.close()


def _contents(folder: Path) -> dict[str, bytes]:
    c = Container(folder)
    try:
        keys = list(c.iter_hashkeys())
        got = c.get_objects_content(keys)
        return {k: v for k, v in got.items() if v is not None}
    finally:
        c.close()


def _check_backup(folder: Path, expected: dict[str, bytes] | None = None) -> None:
    """Valid for both tools, and (if given) holds exactly these objects."""
    c = Container(folder)
    try:
        report = c.validate_report()
        assert report.is_valid(), report.summary()
        assert not report.sandbox_leftovers and not report.pack_lock_files
    finally:
        c.close()
    d = DosContainer(folder)
    try:
        issues = d.validate()
        assert issues.is_valid(), issues
        if expected is not None:
            assert sorted(d.list_all_objects()) == sorted(expected)
            assert d.get_objects_content(list(expected)) == expected
    finally:
        d.close()


def _backups(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir() if p.is_dir() and not p.is_symlink()
                  and NAME_RE.fullmatch(p.name))


def _next_second() -> None:
    """Backup names have a resolution of one second and a random suffix: two backups in one
    second sort by chance. Wait until the clock is in the next second."""
    start = int(time.time())
    while int(time.time()) == start:
        time.sleep(0.01)


def _last(dest: Path) -> str:
    target = os.readlink(dest / "last-backup")
    assert "/" not in target  # relative, as dostore's `ln -sfn NAME last-backup`
    return target


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _ino(path: Path) -> int:
    return os.lstat(path).st_ino


def _dostore_backup(container: Path, dest: str, keep: int = 10,
                    env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(
        [DOSTORE, "-p", str(container), "backup", dest, "--keep", str(keep),
         "--verbosity", "silent"],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _write_loose_fast(folder: Path, n: int, seed: int) -> None:
    """Many valid loose objects without an fsync each (test set-up only)."""
    loose = folder / "loose"
    for i in range(n):
        data = b"bulk %d %d" % (seed, i)
        h = hashlib.sha256(data).hexdigest()
        shard = loose / h[:2]
        shard.mkdir(exist_ok=True)
        (shard / h[2:]).write_bytes(data)


# -- pure rules ------------------------------------------------------------------------------------
def test_names_and_rules() -> None:
    assert NAME_RE.fullmatch(new_backup_name())
    assert split_destination("/a/b") == (None, "/a/b")
    assert split_destination("rel/x:y") == (None, "rel/x:y")  # a '/' before the ':': local
    assert split_destination("me@host:/srv/b") == ("me@host", "/srv/b")
    assert split_destination("host:~/b") == ("host", "b")
    assert split_destination("host:") == ("host", ".")
    with pytest.raises(ValueError):
        split_destination(":/x")
    names = ["backup_20240101000000_aaaa", "backup_20250101000000_bbbb"]
    assert choose_previous(names, "backup_20240101000000_aaaa") == names[0]
    assert choose_previous(names, "gone") == names[1]
    assert choose_previous([], None) is None
    new = "backup_20260101000000_cccc"
    assert backups_to_remove([*names, new], 1, new) == names[:1]
    assert backups_to_remove([*names, new], 0, new) == names
    assert backups_to_remove([*names, new], None, new) == []
    # the new one is never removed, even when a clock step made it sort first
    assert backups_to_remove(["backup_19990101000000_zzzz", *names], 0,
                             "backup_19990101000000_zzzz") == names


# -- the chain: dosfs -> dostore -> dosfs in one DEST ----------------------------------------------
def test_chain_dosfs_dostore_dosfs(tmp_path: Path) -> None:
    src, dest = tmp_path / "c", tmp_path / "dest"
    _fill(src, packed=400, loose=60, seed=1)

    r1 = backup(src, dest, keep=None)
    b1 = Path(r1.folder)
    assert r1.previous is None and r1.copied_files > 60 and r1.linked_files == 0
    assert _backups(dest) == [b1.name] and _last(dest) == b1.name
    assert not (dest / "live-backup").exists()
    _check_backup(b1, _contents(src))
    for f in [*(src / "loose").rglob("*"), *(src / "packs").iterdir(), src / "config.json"]:
        a, b = f.stat(), (b1 / f.relative_to(src)).stat()  # what rsync -a keeps, to the ns
        assert (a.st_mode, a.st_uid, a.st_gid, a.st_size) == (b.st_mode, b.st_uid, b.st_gid,
                                                              b.st_size), f
        assert f.is_dir() or a.st_mtime_ns == b.st_mtime_ns, f

    # dostore on top: hard-links what dosfs copied (it keeps mode, owner and mtime like rsync -a)
    _fill(src, packed=0, loose=20, seed=2)
    _dostore_backup(src, str(dest))
    b2 = dest / _last(dest)
    assert set(_backups(dest)) == {b1.name, b2.name}
    _check_backup(b2, _contents(src))
    for pack in (src / "packs").iterdir():
        assert _ino(b2 / "packs" / pack.name) == _ino(b1 / "packs" / pack.name)
    assert _ino(b2 / "config.json") == _ino(b1 / "config.json")

    # dosfs again, nothing changed: the same tree as dostore's (minus dosfs's lock file, which
    # dostore copies) and every file a hard link to dostore's
    r3 = backup(src, dest, keep=None)
    b3 = Path(r3.folder)
    assert r3.previous == str(b2) and _last(dest) == b3.name and r3.copied_files == 0
    assert _tree(b3) == _tree(b2) - {".dosfs-pack.lock", "packs.idx-wal", "packs.idx-shm"}
    for rel in _tree(b3):
        if (b3 / rel).is_file():
            assert _ino(b3 / rel) == _ino(b2 / rel), rel

    # packing changes pack files: the grown pack is copied, the loose objects stay linked by name
    c = Container(src)
    before = {p.name: p.stat().st_size for p in (src / "packs").iterdir()}
    c.pack_all_loose()  # keeps the loose copies
    c.close()
    grown = {p.name for p in (src / "packs").iterdir()
             if p.name in before and before[p.name] != p.stat().st_size}
    assert grown
    r4 = backup(src, dest, keep=None)
    b4 = Path(r4.folder)
    _check_backup(b4, _contents(src))
    for name in grown:
        assert _ino(b4 / "packs" / name) != _ino(b3 / "packs" / name)
    for shard in (b3 / "loose").iterdir():
        for f in shard.iterdir():
            assert _ino(b4 / "loose" / shard.name / f.name) == _ino(f)
    assert set(_backups(dest)) == {b1.name, b2.name, b3.name, b4.name}


# -- consistency while the container is in use -----------------------------------------------------
_WRITER = """
import sys
from dosfs import Container
c = Container(sys.argv[1])
i = 0
with open(sys.argv[2], "a") as log:
    while True:
        h = c.add_object(b"live object %d " % i * (i % 40 + 1))
        log.write(h + "\\n")
        log.flush()
        i += 1
"""

_MAINTAINER = """
import os, sys
from dosfs import Container
c = Container(sys.argv[1])
rounds = 0
while not os.path.exists(sys.argv[2]):
    c.pack_all_loose(compress="auto", clean_loose_per_pack=True)
    c.clean_storage()
    # objects of our own, deleted again, so that repack has holes to remove: it replaces packs
    victims = c.add_objects_to_pack([b"victim %d %d" % (rounds, j) * 200 for j in range(30)])
    c.delete_objects(victims)
    c.repack()
    rounds += 1
print(rounds)
"""


def _spawn(code: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _committed(log: Path) -> list[str]:
    return [line for line in log.read_text().split("\n")[:-1] if len(line) == 64]


def test_backup_while_writers_packer_and_repack_run(tmp_path: Path) -> None:
    src, dest, log, stop = tmp_path / "c", tmp_path / "dest", tmp_path / "log", tmp_path / "stop"
    _fill(src, packed=300, loose=30, seed=3, target=32 * 1024)
    initial = set(_contents(src))
    writer = _spawn(_WRITER, str(src), str(log))
    maintainer = _spawn(_MAINTAINER, str(src), str(stop))
    try:
        deadline = time.monotonic() + 20
        while (not log.exists() or len(_committed(log)) < 50) and time.monotonic() < deadline:
            time.sleep(0.05)
        attempts = []
        for _round in range(4):
            before = initial | set(_committed(log))  # committed before this backup started
            result = backup(src, dest, keep=None)
            attempts.append(result.pin_attempts)
            folder = Path(result.folder)
            c = Container(folder)
            try:
                got = c.get_objects_content(sorted(before))
                missing = [h for h, v in got.items() if v is None]
                assert not missing, f"{len(missing)} committed objects missing from the backup"
                assert all(hashlib.sha256(v).hexdigest() == h for h, v in got.items() if v)
            finally:
                c.close()
            _check_backup(folder)
            time.sleep(0.2)
        assert writer.poll() is None and maintainer.poll() is None, (
            writer.stderr.read() if writer.poll() is not None else maintainer.communicate())
    finally:
        stop.touch()
        writer.kill()
        out, err = maintainer.communicate(timeout=60)
        writer.wait()
    assert maintainer.returncode == 0, err
    assert int(out.strip()) >= 1  # packs were packed and replaced while backups ran
    assert len(_backups(dest)) == 4


def test_replaced_pack_is_detected(tmp_path: Path) -> None:
    """The rule behind the snapshot: a pack pinned before it and replaced after it is caught."""
    src = tmp_path / "c"
    _fill(src, packed=200, loose=0, seed=4)
    c = Container(src)
    try:
        pins = _pin_packs(c.layout, None)
        assert _moved_pack(c.layout, pins) is None
        victims = c.add_objects_to_pack([b"gone %d" % i * 100 for i in range(20)])
        c.delete_objects(victims)
        c.repack()
        assert "replaced" in (_moved_pack(c.layout, pins) or "")
        _release_all(pins)
    finally:
        c.close()
    result = backup(src, tmp_path / "dest")
    assert result.pin_attempts == 1
    _check_backup(Path(result.folder), _contents(src))


# -- interruption ----------------------------------------------------------------------------------
_BACKUP = """
import sys
from dosfs.container.backup import backup
backup(sys.argv[1], sys.argv[2], keep=None)
"""


def test_sigkill_never_becomes_last_backup(tmp_path: Path) -> None:
    src, dest = tmp_path / "c", tmp_path / "dest"
    _fill(src, packed=0, loose=0, seed=5)
    _write_loose_fast(src, 1500, seed=5)
    c = Container(src)
    c.add_objects_to_pack([os.urandom(2 * 1024 * 1024) for _ in range(5)])
    c.close()
    good = Path(backup(src, dest, keep=None).folder)
    _write_loose_fast(src, 1500, seed=6)  # new objects: the next backup has work to do
    expected = _contents(src)
    files = len([p for p in _tree(good) if (good / p).is_file()]) + 1500
    finished = {good.name}
    killed = 0
    for delay in (0.0, 0.02, 0.06, 0.12):
        proc = _spawn(_BACKUP, str(src), str(dest))
        live = dest / "live-backup"
        deadline = time.monotonic() + 20
        while not live.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed += proc.returncode == -signal.SIGKILL
        # a folder with a final name is complete (renamed after syncfs); last-backup only ever
        # names a complete one
        for name in set(_backups(dest)) - finished:
            assert len([p for p in _tree(dest / name) if (dest / name / p).is_file()]) == files
            finished.add(name)
        assert _last(dest) in finished
    assert killed >= 2
    # dostore copes with a leftover live-backup (it rsyncs into it): its result is valid
    if (dest / "live-backup").exists():
        _dostore_backup(src, str(dest))
        _check_backup(dest / _last(dest), expected)
    (dest / "live-backup").mkdir(exist_ok=True)  # a leftover, as a killed dostore leaves one
    (dest / "live-backup" / "junk").write_text("partial")
    result = backup(src, dest, keep=None)
    assert not (dest / "live-backup").exists()
    assert _last(dest) == Path(result.folder).name
    _check_backup(Path(result.folder), expected)
    assert not (Path(result.folder) / "junk").exists()


def test_failure_removes_live_backup(tmp_path: Path) -> None:
    src, dest = tmp_path / "c", tmp_path / "dest"
    _fill(src, packed=50, loose=5, seed=7)
    good = Path(backup(src, dest).folder)

    def failing(action: str, value: object) -> None:
        if action == "init" and "Pack" in str(value):
            raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="on fire"):
        backup(src, dest, callback=failing)
    assert not (dest / "live-backup").exists()
    assert _backups(dest) == [good.name] and _last(dest) == good.name

    # a last-backup that is a real folder cannot be replaced by the symlink: a warning
    os.unlink(dest / "last-backup")
    (dest / "last-backup").mkdir()
    result = backup(src, dest)
    assert any("last-backup" in w for w in result.warnings)
    _check_backup(Path(result.folder))
    with pytest.raises(BackupError, match="cannot create"):
        backup(src, tmp_path / "no" / "such" / "dest")
    with pytest.raises(ValueError):
        backup(src, dest, keep=-1)


# -- keep ------------------------------------------------------------------------------------------
def test_keep_prunes_like_dostore(tmp_path: Path) -> None:
    src, dest = tmp_path / "c", tmp_path / "dest"
    _fill(src, packed=30, loose=5, seed=8)
    first = Path(backup(src, dest).folder)
    olds = [f"backup_2020010100000{i}_old{i}" for i in range(3)]
    for name in olds:  # older backups (copies by hard links, as a backup chain is)
        subprocess.run(["cp", "-al", str(first), str(dest / name)], check=True)
    (dest / "notes").mkdir()
    (dest / "backup_not_a_folder").write_text("x")
    assert _backups(dest) == [*olds, first.name]

    r = backup(src, dest, keep=2)  # keeps 2 previous + the new one
    assert _backups(dest) == sorted([olds[2], first.name, Path(r.folder).name])
    assert sorted(Path(p).name for p in r.removed) == olds[:2]
    assert _last(dest) == Path(r.folder).name
    r0 = backup(src, dest, keep=0)
    assert _backups(dest) == [Path(r0.folder).name] and _last(dest) == Path(r0.folder).name
    assert (dest / "notes").is_dir() and (dest / "backup_not_a_folder").is_file()
    _check_backup(Path(r0.folder), _contents(src))


# -- CLI -------------------------------------------------------------------------------------------
def test_cli(tmp_path: Path) -> None:
    src, dest = tmp_path / "c", tmp_path / "dest"
    _fill(src, packed=20, loose=3, seed=9)
    runner = CliRunner()
    out = runner.invoke(main, ["backup", str(src), str(dest), "--keep", "0"])
    assert out.exit_code == 0, out.output
    folder = out.stdout.strip().splitlines()[0]
    assert Path(folder).parent == dest and NAME_RE.fullmatch(Path(folder).name)
    assert "hard-linked" in out.stderr
    out = runner.invoke(main, ["backup", str(dest)], env={"DOSFS_CONTAINER": str(src)})
    assert out.exit_code == 0, out.output
    assert _backups(dest) == sorted([Path(folder).name, Path(out.stdout.split()[0]).name])
    out = runner.invoke(main, ["backup", str(dest)], env={"DOSFS_CONTAINER": ""})
    assert out.exit_code == 2 and "missing CONTAINER" in out.output
    out = runner.invoke(main, ["backup", str(src), str(dest), "--keep", "-1"])
    assert out.exit_code == 2
    out = runner.invoke(main, ["backup", str(tmp_path), str(dest)])
    assert out.exit_code == 1 and out.stderr.count("\n") == 1 and "dosfs: error:" in out.stderr
    out = runner.invoke(main, ["backup", str(src), str(dest), "--rsync-exe", "/no/rsync"])
    assert out.exit_code == 1 and "not found" in out.stderr


# -- rsync: a local DEST, then a real ssh DEST -----------------------------------------------------
@needs_rsync
def test_rsync_path_local_dest(tmp_path: Path) -> None:
    src, dest = tmp_path / "c", tmp_path / "dest"
    _fill(src, packed=200, loose=40, seed=10)
    r1 = backup(src, dest, rsync_exe="rsync", keep=None)
    b1 = Path(r1.folder)
    assert r1.method == "rsync" and _last(dest) == b1.name
    _check_backup(b1, _contents(src))
    assert not [p for p in src.iterdir() if p.name.startswith(".dosfs-backup-")]
    _fill(src, packed=0, loose=5, seed=11)
    b2 = Path(backup(src, dest, keep=None).folder)  # dosfs's own copier on top of rsync's
    _check_backup(b2, _contents(src))
    for f in (b1 / "loose").rglob("*"):
        if f.is_file():
            assert _ino(b2 / f.relative_to(b1)) == _ino(f)
    assert _tree(b2) == _tree(b1) | {str(p.relative_to(src)) for p in (src / "loose").rglob("*")}


@pytest.fixture
def ssh_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A private sshd on a free localhost port (key auth, our own host and user keys), and a PATH
    whose `ssh` uses it for the host alias `backuphost`: dostore and dosfs call plain `ssh`."""
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not os.path.exists(sshd) or shutil.which("ssh") is None or shutil.which("rsync") is None:
        pytest.skip("openssh-server, openssh-client and rsync are needed for the ssh test")
    d = Path(tempfile.mkdtemp(prefix="dosfs-ssh-"))  # short: it holds the ControlPath socket
    for key in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)],
                       check=True)
    (d / "authorized_keys").write_text((d / "user_key.pub").read_text())
    os.chmod(d / "authorized_keys", 0o600)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n"
        f"AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nUsePAM no\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\n"
    )
    (d / "ssh_config").write_text(
        f"Host backuphost\n  HostName 127.0.0.1\n  Port {port}\n  User {getpass.getuser()}\n"
        f"  IdentityFile {d}/user_key\n  IdentitiesOnly yes\n  StrictHostKeyChecking no\n"
        "  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n  BatchMode yes\n"
        # one TCP+ssh handshake for the whole test (each new one costs about 0.5 s here)
        f"  ControlMaster auto\n  ControlPath {d}/cm-%C\n  ControlPersist 60\n"
    )
    bindir = d / "bin"
    bindir.mkdir()
    (bindir / "ssh").write_text(f'#!/bin/sh\nexec {shutil.which("ssh")} -F {d}/ssh_config "$@"\n')
    os.chmod(bindir / "ssh", 0o755)
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege separation folder
    proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(d / "sshd_config")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ.get('PATH', '')}"}
    try:
        deadline = time.monotonic() + 10
        while True:
            ok = subprocess.run(["ssh", "backuphost", "true"], env=env, capture_output=True,
                                timeout=10).returncode == 0
            if ok:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.skip(f"sshd did not come up: {proc.communicate()[1][-300:]}")
            time.sleep(0.1)
        yield env
    finally:
        subprocess.run(["ssh", "-O", "exit", "backuphost"], env=env, capture_output=True,
                       timeout=10)
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(d, ignore_errors=True)


def test_ssh_dest_chain_with_dostore(
    tmp_path: Path, ssh_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", ssh_env["PATH"])
    src, dest = tmp_path / "c", tmp_path / "remote"
    _fill(src, packed=150, loose=30, seed=12)
    r1 = backup(src, f"backuphost:{dest}", keep=None)
    assert r1.folder.startswith("backuphost:") and r1.method == "rsync"
    b1 = Path(r1.folder.split(":", 1)[1])
    assert _last(dest) == b1.name
    _check_backup(b1, _contents(src))
    _fill(src, packed=0, loose=4, seed=13)
    _next_second()
    _dostore_backup(src, f"backuphost:{dest}", env=ssh_env)
    b2 = dest / _last(dest)
    _check_backup(b2, _contents(src))
    assert _ino(b2 / "config.json") == _ino(b1 / "config.json")
    _next_second()  # keep=1 keeps the newest by name
    r3 = backup(src, f"backuphost:{dest}", keep=1)
    b3 = Path(r3.folder.split(":", 1)[1])
    assert _backups(dest) == [b2.name, b3.name] and _last(dest) == b3.name
    _check_backup(b3, _contents(src))
    for f in (b2 / "loose").rglob("*"):  # over ssh too, loose objects are linked
        if f.is_file():
            assert _ino(b3 / f.relative_to(b2)) == _ino(f)
    with pytest.raises(BackupError, match="not accessible"):
        backup(src, "nosuchhost.invalid:/x")


def test_overlapping_destination_is_refused_up_front(tmp_path: Path) -> None:
    """Issue 22: `dosfs backup C C/bk` recursed without end and left C/bk behind."""
    src = tmp_path / "c"
    _fill(src, packed=3, loose=2, seed=22)
    (tmp_path / "link").symlink_to(src)
    before = _tree(src)
    cases = [
        (str(src / "bk"), "inside the container"),
        (str(src / "loose" / "deeper" / "bk"), "inside the container"),
        (str(src), "inside the container"),
        (str(tmp_path / "link" / "bk"), "inside the container"),  # through a symlink
        (str(tmp_path), "is inside the destination"),
    ]
    for dest, words in cases:
        for extra in ([], ["--rsync-exe", "rsync"]):
            proc = subprocess.run(
                [sys.executable, "-m", "dosfs.cli", "backup", str(src), dest, *extra],
                capture_output=True, text=True, timeout=60,
            )
            lines = proc.stderr.strip().splitlines()
            assert proc.returncode == 1 and len(lines) == 1, (dest, proc.stderr)
            assert lines[0].startswith("dosfs: error: ") and words in lines[0], lines[0]
    assert _tree(src) == before  # nothing left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "link"]
    with pytest.raises(BackupError, match="inside the container"):
        backup(src, src / "x")
