"""Issue 22's remote papercuts, through the real CLI against the real gateway: an s3:// line in
/etc/fstab (mount(8) gives the helper no AWS variables, so the endpoint, the profile and its
credentials file come as -o endpoint=,profile=,credentials_file=), and pull's progress bar."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from dosfs.container import Container
from dosfs.remote.push import push
from tests.fs.conftest import DOSFS, Mounted
from tests.remote.conftest import S3Server
from tests.terminal import on_a_terminal


def test_endpoint_profile_and_credentials_file_as_mount_options(
    tmp_path: Path, bucket: str, s3_server: S3Server, aws_env: None,
    mount: Callable[..., Mounted], monkeypatch: pytest.MonkeyPatch,
) -> None:
    with Container(tmp_path / "c") as c:
        c.init_container()
        key = c.add_objects_to_pack([b"from fstab"])[0]
    target = f"s3://{bucket}/fstab"
    push(tmp_path / "c", target)
    creds = tmp_path / "credentials"
    creds.write_text(f"[archive]\naws_access_key_id = {s3_server.access_key}\n"
                     f"aws_secret_access_key = {s3_server.secret_key}\n"
                     f"region = {s3_server.region}\n")
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.aws of this machine
    m = mount(target, f"endpoint={s3_server.endpoint}", "profile=archive",
              f"credentials_file={creds}", f"cache_dir={tmp_path / 'cache'}", "refresh=0",
              background=True)
    assert (m.by_hash / key).read_bytes() == b"from fstab"


def _on_a_terminal(*args: str) -> tuple[int, bytes]:
    return on_a_terminal([*DOSFS, *args])


def test_pull_draws_a_progress_bar_on_a_terminal_only(
    tmp_path: Path, bucket: str, aws_env: None
) -> None:
    with Container(tmp_path / "c") as c:
        c.init_container()
        c.add_objects_to_pack([os.urandom(300_000), b"small"])
    target = f"s3://{bucket}/bar"
    push(tmp_path / "c", target)
    piped = subprocess.run([*DOSFS, "pull", target, str(tmp_path / "piped")],
                           capture_output=True, text=True)
    assert piped.returncode == 0 and piped.stderr == "", piped.stderr  # no bar into a pipe
    code, seen = _on_a_terminal("pull", target, str(tmp_path / "tty"))
    assert code == 0 and b"fetching" in seen and b"100%" in seen, seen
    code, seen = _on_a_terminal("pull", target, str(tmp_path / "tty"))  # nothing left to fetch
    assert code == 0 and b"fetched 0 objects" in seen, seen
    assert seen.rsplit(b"%", 1)[0].endswith(b"100"), seen  # the bar ends full, not at 0%
