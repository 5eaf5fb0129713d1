"""Verify an object's bytes while they are being served: off the serving thread.

Two verifiers with one surface: `ProcessVerifier` hands a stored range of a local file to a
helper process (hashworker.py: its own GIL, so a busy server does not slow it down) and is what
`verifier_for` picks for local objects; `ObjectVerifier`, a hashing thread, is the fallback
(bytes that only come through a reader, e.g. from a remote store).

Why off the serving thread: a server (the mount) hands out an object's bytes in pieces, in any
order, and must refuse the piece that completes the object unless the whole object hashed to
its key; hashing inline would halve a big read's speed. Why a process for local bytes: a hashing
*thread* needs the GIL between chunks, and a busy serving thread makes it wait (a 1 GiB
verification took 1.2 s instead of 0.7 s next to a busy FUSE loop).

ObjectVerifier hashes front to back from its own reader (pinned like any reader, so a concurrent
repack changes nothing). Served pieces can be `feed()`-ed to it: a piece that starts where
hashing stands is hashed without being read again; otherwise it reads what it needs. With
`eager`, it does not wait for feeds. `on_done` is called once the verdict is known (the mount
turns it into a trio event).

`copy_verified` is the same promise for a plain byte stream (`dosfs cat`): up to SMALL_VERIFY
bytes are hashed before the first byte goes out; a bigger object streams and its last piece is
held back until the whole object hashed to its key, so the output is never complete and wrong.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any, Protocol

from dosfs.container.blocksums import BlockSumIndex, BlockSummer
from dosfs.container.config import new_hasher
from dosfs.container.decoding import HASH_CHUNK, check_hash
from dosfs.container.errors import CorruptObject

#: Objects up to this size are hashed before their first byte is served (the mount's by-hash/
#: reads, `dosfs cat`); bigger ones are hashed while they are served.
SMALL_VERIFY = 1 << 20
#: bytes of fed pieces kept waiting for the hashing thread; past it, pieces are dropped and
#: read again by the thread when it gets there
MAX_FED = 8 << 20


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
        sums_folder: str | None = None,
    ) -> None:
        self.reader = reader
        self.hashkey = reader.hashkey
        self.size = reader.size
        self.ok: bool | None = None
        self.reason = ""
        #: the bytes could not be read (e.g. a server that did not answer): `ok` is False but
        #: says nothing about the object, which may hash fine once it can be read
        self.unreadable = False
        self._hasher = new_hasher(hash_type)
        #: block sums taken in the same pass, recorded in `sums_folder` if the object is good
        self._summer = BlockSummer() if sums_folder is not None else None
        self._sums_folder = sums_folder
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
                if self._summer is not None:
                    self._summer.update(piece)
                self._hashed += len(piece)
            got = self._hasher.hexdigest()
            self.reason = "" if got == self.hashkey else f"content hashes to {got}"
            if got == self.hashkey and self._summer is not None and self._sums_folder:
                BlockSumIndex(self._sums_folder).record(
                    [(self.hashkey, self.size, self._summer.sums())])
            self._conclude(got == self.hashkey)
        except CorruptObject as exc:
            self.reason = exc.reason
            self._conclude(False)
        except Exception as exc:  # noqa: BLE001 - any read failure means "not verified"
            self.reason = f"{type(exc).__name__}: {exc}"
            self.unreadable = isinstance(exc, OSError)
            self._conclude(False)
        finally:
            with self._cond:
                self._fed.clear()
                self._fed_bytes = 0

    def _conclude(self, ok: bool) -> None:
        self.ok = ok
        if self._on_done is not None:
            self._on_done(self)


class HashService:
    """One helper process (hashworker.py) that hashes byte ranges of open files for this
    process, started on first use; its verdicts come back on a reader thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[int, ProcessVerifier] = {}
        self._next = 0
        self._pid = -1
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def _ensure(self) -> socket.socket:
        if self._sock is not None and self._pid == os.getpid():
            return self._sock
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "dosfs.container.hashworker", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                close_fds=True,
            )
        finally:
            theirs.close()
        self._sock, self._pid = ours, os.getpid()
        threading.Thread(target=self._replies, args=(ours,), name="dosfs-hash", daemon=True).start()
        return ours

    def submit(self, verifier: ProcessVerifier, fd: int, job: dict[str, object]) -> None:
        """Send a job (raises OSError when the helper cannot be reached)."""
        with self._lock:
            sock = self._ensure()
            self._next += 1
            job["id"] = self._next
            verifier.job_id = self._next
            self._jobs[self._next] = verifier
            try:
                socket.send_fds(sock, [json.dumps(job).encode()], [fd])
            except OSError:
                self._jobs.pop(self._next, None)
                raise

    def cancel(self, job_id: int) -> None:
        with self._lock:
            if self._jobs.pop(job_id, None) is None or self._sock is None:
                return
            try:
                self._sock.send(json.dumps({"cancel": job_id}).encode())
            except OSError:
                pass

    def _replies(self, sock: socket.socket) -> None:
        while True:
            try:
                data = sock.recv(4096)
            except OSError:
                data = b""
            if not data:
                break
            message = json.loads(data)
            with self._lock:
                verifier = self._jobs.pop(message.get("id"), None)
            if verifier is not None:
                verifier.answer(message)
        with self._lock:  # the helper is gone: whoever waits hashes in-process instead
            orphans, self._jobs = list(self._jobs.values()), {}
            if self._sock is sock:
                self._sock = None
        for verifier in orphans:
            verifier.answer({"error": "hash helper exited"})

    def close(self) -> None:
        with self._lock:
            sock, self._sock = self._sock, None
            proc, self._proc = self._proc, None
        if sock is not None:
            # shutdown first: close() alone neither wakes the reply thread's recv() nor gives
            # the helper its EOF while that recv() holds the socket (a 10 s wait at every exit)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        if proc is not None:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


_SERVICE = HashService()
atexit.register(_SERVICE.close)


class ProcessVerifier:
    """Verification of a local, stored byte range by the helper process (no GIL shared with
    the server). Same surface as ObjectVerifier; a failure of the helper itself falls back to
    hashing on a thread here, so it never turns into a wrong verdict."""

    def __init__(
        self,
        reader: Readable,
        hash_type: str,
        fd: int,
        stored: tuple[int, int, bool],
        on_done: Callable[[Any], None] | None = None,
        service: HashService = _SERVICE,
        sums_folder: str | None = None,
    ) -> None:
        self.reader = reader
        self.hashkey = reader.hashkey
        self.size = reader.size
        self.ok: bool | None = None
        self.reason = ""
        self.unreadable = False
        self.job_id = 0
        self._hash_type = hash_type
        self._on_done = on_done
        self._service = service
        self._done = threading.Event()
        self._fallback: ObjectVerifier | None = None
        self._sums_folder = sums_folder
        offset, length, compressed = stored
        job: dict[str, object] = {
            "offset": offset,
            "length": length,
            "compressed": compressed,
            "size": self.size,
            "hash_type": hash_type,
        }
        if sums_folder is not None:  # the helper records the block sums of a good object
            job["sums_folder"] = sums_folder
            job["hashkey"] = self.hashkey
        service.submit(self, fd, job)

    @property
    def done(self) -> bool:
        return self.ok is not None

    def feed(self, offset: int, data: bytes) -> None:
        """Not needed: the helper reads the bytes itself."""

    def finish(self) -> None:
        """Nothing to do: the helper never waits for feeds."""

    def cancel(self) -> None:
        self._service.cancel(self.job_id)
        if self._fallback is not None:
            self._fallback.cancel()

    def wait(self, timeout: float | None = None) -> bool:
        self._done.wait(timeout)
        return bool(self.ok)

    def answer(self, message: dict[str, Any]) -> None:
        if "digest" in message:
            got = message["digest"]
            if message.get("size") != self.size:
                self.reason = f"stored bytes decode to {message.get('size')} bytes, not {self.size}"
                self._conclude(False)
            else:
                self.reason = "" if got == self.hashkey else f"content hashes to {got}"
                self._conclude(got == self.hashkey)
        elif message.get("error") == "hash helper exited":
            self._fallback = ObjectVerifier(
                self.reader, self._hash_type, eager=True, on_done=self._from_fallback,
                sums_folder=self._sums_folder,
            )
        else:
            self.reason = str(message.get("error"))
            self._conclude(False)

    def _from_fallback(self, verifier: ObjectVerifier) -> None:
        self.reason = verifier.reason
        self.unreadable = verifier.unreadable
        self._conclude(bool(verifier.ok))

    def _conclude(self, ok: bool) -> None:
        self.ok = ok
        self._done.set()
        if self._on_done is not None:
            self._on_done(self)


def verifier_for(
    reader: Readable,
    hash_type: str,
    *,
    eager: bool,
    on_done: Callable[[Any], None] | None = None,
    sums_folder: str | None = None,
) -> ObjectVerifier | ProcessVerifier:
    """The helper process for bytes in a local file (anything with `stored_range()`), a
    thread otherwise (e.g. bytes that come from a remote store). With `sums_folder`, a good
    object's block sums are recorded there (blocksums.py) from the same pass."""
    stored = getattr(reader, "stored_range", None)
    extent = stored() if stored is not None else None
    if extent is not None:
        fd, offset, length, compressed = extent
        try:
            return ProcessVerifier(reader, hash_type, fd, (offset, length, compressed), on_done,
                                   sums_folder=sums_folder)
        except OSError:
            pass  # no helper here: hash on a thread
    return ObjectVerifier(reader, hash_type, eager=eager, on_done=on_done,
                          sums_folder=sums_folder)


def _where(reader: Readable) -> str:
    where = getattr(reader, "where", None)
    return str(where()) if callable(where) else reader.hashkey


def copy_verified(
    reader: Readable,
    hash_type: str,
    write: Callable[[bytes], object],
    *,
    verify: bool = True,
    chunk: int = 1 << 20,
) -> None:
    """Write the object's bytes to `write`, front to back.

    With `verify`: an object of at most SMALL_VERIFY bytes is read and hashed whole before its
    first byte is written; a bigger one is hashed as it streams and its last piece is written
    only once the whole object hashed to its key. CorruptObject otherwise (what was written by
    then is an incomplete prefix). Without `verify`: the stored bytes as they decode."""
    size = reader.size
    if verify and size <= SMALL_VERIFY:
        whole = reader.pread(0, size)
        if len(whole) != size:
            raise CorruptObject(reader.hashkey, f"{len(whole)} of {size} bytes ({_where(reader)})")
        check_hash(reader.hashkey, hash_type, whole, _where(reader))
        if whole:
            write(whole)
        return
    hasher = new_hasher(hash_type) if verify else None
    offset = 0
    while offset < size:
        piece = reader.pread(offset, chunk)
        if not piece:
            raise CorruptObject(reader.hashkey, f"no bytes at offset {offset} ({_where(reader)})")
        offset += len(piece)
        if hasher is not None:
            hasher.update(piece)
            if offset >= size:
                got = hasher.hexdigest()
                if got != reader.hashkey:
                    raise CorruptObject(
                        reader.hashkey, f"content hashes to {got} ({_where(reader)})"
                    )
        write(piece)
