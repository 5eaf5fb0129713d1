"""The one place where exceptions become errno values, and the boundary every handler sits behind.

pyfuse3 lets only ``FUSEError`` out of a handler: anything else ends ``pyfuse3.main`` and leaves a
dead mount ("Transport endpoint is not connected"). So every handler is wrapped by ``boundary``
(``forget``, whose errors nobody can receive, by ``never_raises``), and the mapping lives in
``ERRNO_TABLE``, most specific class first (a test checks no row is shadowed by an earlier one).
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import pyfuse3

from dosfs.container.errors import (
    CorruptObject,
    InconsistentContent,
    InvalidContainer,
    InvalidHashKey,
    LockedError,
    ModificationNotAllowed,
    NotExistent,
    NotInitialised,
)
from dosfs.fs.stats import Stats

log = logging.getLogger("dosfs.fs")

#: (exception class, errno, log level). ``None`` as errno means "the OSError's own errno".
#: Levels: DEBUG for what users cause every day (misses), WARNING for environment problems,
#: ERROR for anything that means stored bytes are wrong.
ERRNO_TABLE: tuple[tuple[type[BaseException], int | None, int], ...] = (
    (InvalidHashKey, errno.ENOENT, logging.DEBUG),
    (NotExistent, errno.ENOENT, logging.DEBUG),
    (LockedError, errno.EBUSY, logging.INFO),
    (ModificationNotAllowed, errno.EROFS, logging.INFO),
    (CorruptObject, errno.EIO, logging.ERROR),
    (InconsistentContent, errno.EIO, logging.ERROR),
    (InvalidContainer, errno.EIO, logging.ERROR),
    (NotInitialised, errno.EIO, logging.ERROR),
    (FileNotFoundError, None, logging.DEBUG),
    (OSError, None, logging.WARNING),
)

#: Fallback for anything not in the table: logged with its traceback.
UNEXPECTED_ERRNO = errno.EIO


def errno_for(exc: BaseException) -> tuple[int, int, bool]:
    """Return ``(errno, log level, is_known)`` for an exception, using ERRNO_TABLE."""
    if isinstance(exc, pyfuse3.FUSEError):
        return exc.errno, logging.DEBUG, True
    for cls, code, level in ERRNO_TABLE:
        if isinstance(exc, cls):
            if code is None:
                code = getattr(exc, "errno", None) or errno.EIO
            return code, level, True
    return UNEXPECTED_ERRNO, logging.ERROR, False


def to_fuse_error(exc: BaseException, where: str) -> pyfuse3.FUSEError:
    """Log ``exc`` at the table's level and return the FUSEError to raise in its place."""
    code, level, known = errno_for(exc)
    if isinstance(exc, pyfuse3.FUSEError):
        return exc
    if not known:
        log.error("unexpected error in %s, answering EIO", where, exc_info=exc)
    elif isinstance(exc, CorruptObject):
        log.log(level, "%s: corrupt object %s: %s", where, exc.hashkey, exc.reason)
    elif log.isEnabledFor(level):
        log.log(level, "%s: %s -> %s", where, exc, errno.errorcode.get(code, code))
    return pyfuse3.FUSEError(code)


def _request_args(args: tuple[Any, ...]) -> str:
    """A request's arguments for a debug line (names decoded; the request context left out)."""
    shown = [os.fsdecode(a) if isinstance(a, bytes) else repr(a) for a in args[:3]
             if isinstance(a, (bytes, int, str))]
    return f"({', '.join(shown)})"


P = ParamSpec("P")
R = TypeVar("R")


def boundary(fn: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Wrap a request handler so that only FUSEError leaves it (trio.Cancelled passes through)."""
    where = fn.__name__

    clock = time.perf_counter_ns

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        stats: Stats | None = getattr(args[0], "stats", None) if args else None
        started = clock()
        try:
            result = await fn(*args, **kwargs)
        except pyfuse3.FUSEError as exc:
            if stats is not None:
                stats.record(where, started, exc.errno)
            if log.isEnabledFor(logging.DEBUG):  # --debug: every error answered leaves a line
                log.debug("%s%s -> %s", where, _request_args(args[1:]),
                          errno.errorcode.get(exc.errno, exc.errno))
            raise
        except Exception as exc:  # noqa: BLE001 - this is the error boundary
            error = to_fuse_error(exc, where)
            if stats is not None:
                stats.record(where, started, error.errno)
            raise error from None
        if stats is not None:
            stats.record(where, started, 0)
        return result

    return wrapper


def never_raises(fn: Callable[P, Awaitable[None]]) -> Callable[P, Coroutine[Any, Any, None]]:
    """Wrap a notification handler (forget, release) whose errors nobody can receive: log only."""
    where = fn.__name__

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            await fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - nothing may escape; the error is logged
            to_fuse_error(exc, where)

    return wrapper


def fuse_error(code: int) -> pyfuse3.FUSEError:
    """Shorthand used by the handlers for errors they decide themselves (EROFS, EISDIR, ...)."""
    return pyfuse3.FUSEError(code)
