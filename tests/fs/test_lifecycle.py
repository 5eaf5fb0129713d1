"""Mount lifecycle pieces that need no mount: option parsing, checks, notify, unmount errors."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from dosfs import daemon
from dosfs import mount as lifecycle
from dosfs.mount import MountError, MountOptions, parse_options


def test_parse_options() -> None:
    opts = parse_options(["ro,allow_other", "nolisting,max_names=5", "fsname=x,readahead_kb=0"])
    assert opts.read_only and opts.allow_other and not opts.listing
    assert (opts.max_names, opts.fsname, opts.readahead_kb) == (5, "x", 0)
    assert parse_options([opts.to_args()]) == opts  # the daemon gets the same options back
    assert parse_options([]) == MountOptions()
    for bad, words in [
        ("max_read=4096", "unknown mount option"),
        ("big_writes", "unknown mount option"),
        ("max_names=abc", "needs an integer"),
        ("max_names=0", ">= 1"),
        ("ro=1", "takes no value"),
        ("fsname=", "fsname"),
    ]:
        with pytest.raises(MountError, match=words):
            parse_options([bad])


def test_mountpoint_checks(tmp_path: Path) -> None:
    with pytest.raises(MountError, match="does not exist"):
        lifecycle.check_mountpoint(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(MountError, match="not a directory"):
        lifecycle.check_mountpoint(tmp_path / "file")
    with pytest.raises(MountError, match="not empty"):
        lifecycle.check_mountpoint(tmp_path)
    if os.path.ismount("/proc"):
        with pytest.raises(MountError, match="already a mount point"):
            lifecycle.check_mountpoint(Path("/proc"))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert lifecycle.check_mountpoint(empty) == empty


def test_container_checks(tmp_path: Path) -> None:
    with pytest.raises(MountError, match="does not exist"):
        lifecycle.open_container(tmp_path / "nothing")
    with pytest.raises(MountError, match="not a usable container"):
        lifecycle.open_container(tmp_path)


def test_fuse_unavailable_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    real_exists = os.path.exists
    monkeypatch.setattr(os.path, "exists", lambda p: False if p == "/dev/fuse" else real_exists(p))
    with pytest.raises(MountError, match="modprobe fuse"):
        lifecycle.check_fuse()
    monkeypatch.setattr(os.path, "exists", real_exists)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(lifecycle.shutil, "which", lambda name: None)
    with pytest.raises(MountError, match="apt install fuse3"):
        lifecycle.check_fuse()


def test_sd_notify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert daemon.sd_notify("READY=1") is False
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        assert daemon.sd_notify("READY=1") is True
        assert sock.recv(64) == b"READY=1"


def test_proc_mounts_unescape() -> None:
    assert lifecycle._unescape(r"/mnt/with\040space\011tab") == "/mnt/with space\ttab"
    assert lifecycle._unescape("/plain") == "/plain"


def test_umount_refuses_what_is_not_a_dosfs_mount(tmp_path: Path) -> None:
    with pytest.raises(MountError, match="is not mounted"):
        lifecycle.umount(tmp_path)
    if os.path.ismount("/proc"):
        with pytest.raises(MountError, match="not a dosfs mount"):
            lifecycle.umount(Path("/proc"))
