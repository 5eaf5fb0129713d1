"""Where the real AiiDA lives for tests and benchmarks: aiida-core in its own virtualenv (it pins
click < 8.3, which dosfs's environment does not), installed on first use and reused (stamped).
Shared by tests/views and the bench smoke test, so whichever runs first installs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
AIIDA_VENV = Path(os.environ.get("DOSFS_AIIDA_VENV", ROOT / ".venv-aiida"))
AIIDA_SPEC = "aiida-core>=2.6,<3"


def ensure_aiida_venv() -> Path | None:
    """The aiida venv's python, installing it when missing (idempotent); None if impossible."""
    python = AIIDA_VENV / "bin" / "python"
    stamp = AIIDA_VENV / ".dosfs-aiida-installed"
    if stamp.is_file() and stamp.read_text() == AIIDA_SPEC:
        return python
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(AIIDA_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        AIIDA_SPEC], check=True, timeout=900)
    except (subprocess.SubprocessError, OSError):
        return None
    stamp.write_text(AIIDA_SPEC)
    return python
