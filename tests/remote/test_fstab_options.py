"""An s3:// line in /etc/fstab: mount(8) gives the helper no AWS variables, so the endpoint,
the profile and its credentials file come as -o endpoint=,profile=,credentials_file= (issue 22).
Through a real mount against the real gateway, with every AWS variable removed."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from dosfs.container import Container
from dosfs.remote.push import push
from tests.fs.conftest import Mounted
from tests.remote.conftest import S3Server


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
