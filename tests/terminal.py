"""Run a command with a pseudo-terminal as its stdout and stderr (progress bars are drawn only
on a terminal) and collect everything it wrote there."""

from __future__ import annotations

import os
import pty
import subprocess


def on_a_terminal(argv: list[str], timeout: float = 120) -> tuple[int, bytes]:
    """(exit status, bytes written to the terminal) of `argv`."""
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(argv, stdout=secondary, stderr=secondary, stdin=subprocess.DEVNULL)
    os.close(secondary)
    seen = b""
    while True:
        try:
            chunk = os.read(primary, 4096)
        except OSError:  # EIO: the other side closed
            break
        if not chunk:
            break
        seen += chunk
    os.close(primary)
    return proc.wait(timeout=timeout), seen
