"""Verify an object's bytes while they are being served: a hashing thread per object.

Why a thread: a server (the mount) hands out an object's bytes in pieces, in any order, and must
refuse the piece that completes the object unless the whole object hashed to its key. Hashing
on the serving thread would halve a big read's speed; here sha256 runs on another thread (hashlib
releases the GIL), so serving and hashing overlap on two cores.

How: the thread hashes the object front to back from its own reader (pinned like any reader, so
a concurrent repack changes nothing). Served pieces can be `feed()`-ed to it: a piece that starts
where hashing stands is hashed without being read again (the way for compressed objects, whose
bytes are expensive to produce twice); otherwise the thread reads what it needs itself. With
`eager`, it does not wait for feeds at all (uncompressed objects: re-reading from the page cache
costs less than waiting). `wait()` blocks until the verdict; `on_done` is called from the thread
once it is known (the mount turns it into a trio event).
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import Protocol

from dosfs.container.config import new_hasher
from dosfs.container.errors import CorruptObject
from dosfs.container.readers import HASH_CHUNK

#: bytes of fed pieces kept waiting for the hashing thread; past it, pieces are dropped and
#: read again by the thread when it gets there
MAX_FED = 32 << 20


class Readable(Protocol):
    """What the verifier reads with (an ObjectReader, or anything shaped like one)."""

    @property
    def hashkey(self) -> str: ...

    @property
    def size(self) -> int: ...

    def pread(self, offset: int, size: int) -> bytes: ...


class ObjectVerifier:
    """Hashes one object in a thread of its own; `ok` is the verdict once `done`."""

    def __init__(
        self,
        reader: Readable,
        hash_type: str,
        *,
        eager: bool,
        on_done: Callable[[ObjectVerifier], None] | None = None,
    ) -> None:
        self.reader = reader
        self.hashkey = reader.hashkey
        self.size = reader.size
        self.ok: bool | None = None
        self.reason = ""
        self._hasher = new_hasher(hash_type)
        self._eager = eager
        self._on_done = on_done
        self._cond = threading.Condition()
        self._fed: collections.deque[tuple[int, bytes]] = collections.deque()
        self._fed_bytes = 0
        self._hashed = 0
        self._finish = False
        self._cancelled = False
        self._thread = threading.Thread(target=self._run, name="dosfs-verify", daemon=True)
        self._thread.start()

    @property
    def done(self) -> bool:
        return self.ok is not None

    @property
    def hashed(self) -> int:
        """Bytes hashed so far (front to back)."""
        return self._hashed

    def feed(self, offset: int, data: bytes) -> None:
        """Bytes just served at `offset` (spares the thread reading them again)."""
        if self._eager or not data:
            return
        with self._cond:
            if self.ok is not None or self._fed_bytes + len(data) > MAX_FED:
                return
            if offset + len(data) <= self._hashed:
                return
            self._fed.append((offset, data))
            self._fed_bytes += len(data)
            self._cond.notify()

    def finish(self) -> None:
        """Hash whatever is missing now, without waiting for more feeds."""
        with self._cond:
            self._finish = True
            self._cond.notify()

    def wait(self, timeout: float | None = None) -> bool:
        """Finish and wait for the verdict; True if the object hashed to its key."""
        self.finish()
        self._thread.join(timeout)
        return bool(self.ok)

    def cancel(self) -> None:
        """Stop hashing (nobody wants the verdict any more)."""
        with self._cond:
            self._cancelled = True
            self._cond.notify()

    def _next_piece(self) -> bytes | None:
        """The next bytes to hash (from a feed or read by us), or None when cancelled."""
        with self._cond:
            while True:
                if self._cancelled:
                    return None
                while self._fed:
                    offset, data = self._fed[0]
                    if offset > self._hashed:
                        break  # a gap before it: read the gap below
                    self._fed.popleft()
                    self._fed_bytes -= len(data)
                    skip = self._hashed - offset
                    if skip < len(data):
                        return data[skip:] if skip else data
                if self._eager or self._finish or self._fed:
                    break
                self._cond.wait()
        return self.reader.pread(self._hashed, HASH_CHUNK)

    def _run(self) -> None:
        try:
            while self._hashed < self.size:
                piece = self._next_piece()
                if piece is None:
                    return
                if not piece:
                    raise CorruptObject(self.hashkey, f"no bytes at offset {self._hashed}")
                self._hasher.update(piece)
                self._hashed += len(piece)
            got = self._hasher.hexdigest()
            self.reason = "" if got == self.hashkey else f"content hashes to {got}"
            self._conclude(got == self.hashkey)
        except CorruptObject as exc:
            self.reason = exc.reason
            self._conclude(False)
        except Exception as exc:  # noqa: BLE001 - any read failure means "not verified"
            self.reason = f"{type(exc).__name__}: {exc}"
            self._conclude(False)
        finally:
            with self._cond:
                self._fed.clear()
                self._fed_bytes = 0

    def _conclude(self, ok: bool) -> None:
        self.ok = ok
        if self._on_done is not None:
            self._on_done(self)
