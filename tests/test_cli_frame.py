"""The command-line frame: version, help, and the one-line error boundary."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from dosfs import __version__
from dosfs.cli import main


def test_version_matches_package() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_help_lists_the_commands() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("init", "add", "cat", "status", "pack", "validate", "mount", "umount"):
        assert command in result.output, command


def test_errors_are_one_line_without_traceback(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "dosfs.cli", "status", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("dosfs: error:")
    assert "nowhere" in lines[0]
    assert "Traceback" not in proc.stderr


def test_debug_shows_the_traceback(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "dosfs.cli", "--debug", "status", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr
