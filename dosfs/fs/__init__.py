"""The pyfuse3 adapter: maps FUSE requests onto the container engine (no storage logic here).

`Operations` is imported lazily, so that the adapter's defaults (`dosfs.fs.limits`, read by
the option parser) can be imported without pyfuse3.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Operations"]


def __getattr__(name: str) -> Any:
    if name == "Operations":
        from dosfs.fs.operations import Operations

        return Operations
    raise AttributeError(name)
