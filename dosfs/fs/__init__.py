"""The pyfuse3 adapter: maps FUSE requests onto the container engine (no storage logic here)."""

from __future__ import annotations

from dosfs.fs.operations import Operations

__all__ = ["Operations"]
