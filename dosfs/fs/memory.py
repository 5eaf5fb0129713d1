"""Give freed heap memory back to the OS after big compressed reads (glibc ``malloc_trim``).

Why: decompressing a big object in the worker threads leaves megabytes of freed chunks in the
threads' malloc arenas; glibc keeps them mapped, so the daemon's RSS stays at its peak long
after the reader is closed. ``malloc_trim(0)`` returns those free pages (well under a
millisecond here). Rate-limited, since a burst of closes needs only one trim.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from collections.abc import Callable
from typing import cast

#: Least seconds between two trims.
MIN_INTERVAL = 1.0


def _load() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None. libc.so.6 first: find_library runs `ldconfig -p` in a
    child process, on the daemon's way to answering its mount."""
    try:
        try:
            fn = ctypes.CDLL("libc.so.6").malloc_trim
        except OSError:  # pragma: no cover - another libc name
            fn = ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
    except (OSError, AttributeError):  # pragma: no cover - not glibc (musl, macOS)
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return cast(Callable[[int], int], fn)


_malloc_trim = _load()


class Trimmer:
    """``maybe_trim()`` calls ``malloc_trim(0)`` unless it ran less than MIN_INTERVAL ago."""

    def __init__(self) -> None:
        self._last = float("-inf")
        self.trims = 0

    def maybe_trim(self) -> bool:
        if _malloc_trim is None:
            return False
        now = time.monotonic()
        if now - self._last < MIN_INTERVAL:
            return False
        self._last = now
        _malloc_trim(0)
        self.trims += 1
        return True
