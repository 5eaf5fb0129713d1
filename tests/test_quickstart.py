"""The README's quick start: exactly two commands, and the first one really mounts the demo."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from dosfs import Container

ROOT = Path(__file__).resolve().parent.parent


def quickstart_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None, "no sh block in the quick start"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_quickstart_is_two_commands_that_exist() -> None:
    commands = quickstart_commands()
    assert len(commands) == 2, commands
    for command in commands:
        script = ROOT / command.split()[0]
        assert script.is_file() and os.access(script, os.X_OK), command


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert quickstart_commands()[1] in ci


def test_scripts_run_mounts_the_demo(tmp_path: Path) -> None:
    if not os.path.exists("/dev/fuse"):
        pytest.skip("/dev/fuse is missing")
    container, mountpoint = tmp_path / "demo", tmp_path / "mnt"
    env = dict(os.environ, DOSFS_DEMO_CONTAINER=str(container))
    env["DOSFS_DEMO_MOUNTPOINT"] = str(mountpoint)
    try:
        proc = subprocess.run(
            [str(ROOT / "scripts" / "run")], env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert os.path.ismount(mountpoint)
        names = os.listdir(mountpoint / "by-hash")
        assert len(names) >= 40
        assert f"dosfs umount {mountpoint}" in proc.stdout
        for name in names:  # every demo object reads back as the bytes its name promises
            out = subprocess.run(
                ["sha256sum", str(mountpoint / "by-hash" / name)], capture_output=True, text=True
            )
            assert out.stdout.split()[0] == name
        again = subprocess.run(  # idempotent: the same banner, exit 0, the same mount
            [str(ROOT / "scripts" / "run")], env=env, capture_output=True, text=True, timeout=300
        )
        assert again.returncode == 0, again.stdout + again.stderr
        assert "(already mounted)" in again.stdout
        assert f"dosfs umount {mountpoint}" in again.stdout
        assert f"logs to {mountpoint}.log" in again.stdout and Path(f"{mountpoint}.log").is_file()
        other = tmp_path / "other"
        Container(other).init_container()
        refused = subprocess.run(  # issue 22: it said "(already mounted)", exit 0
            [str(ROOT / "scripts" / "run"), str(other), str(mountpoint)], env=env,
            capture_output=True, text=True, timeout=300,
        )
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert f"already serves {container}, not {other}" in refused.stderr, refused.stderr
        assert "(already mounted)" not in refused.stdout
        assert len(os.listdir(mountpoint / "by-hash")) == len(names)  # still the demo
        helped = subprocess.run([str(ROOT / "scripts" / "run"), "--help"], capture_output=True,
                                text=True, timeout=60)
        assert helped.returncode == 0 and "scripts/run CONTAINER" in helped.stdout
    finally:
        if os.path.ismount(mountpoint):
            done = subprocess.run(["fusermount3", "-u", str(mountpoint)], capture_output=True)
            if done.returncode != 0:
                subprocess.run(["fusermount3", "-uz", str(mountpoint)], capture_output=True)
    assert not os.path.ismount(mountpoint)
