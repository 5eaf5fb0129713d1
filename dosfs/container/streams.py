"""Readers over one object's bytes (pinned at open) and a seekable file-like stream on top.

- `RawReader`: a loose file or an uncompressed packed object; `pread` is one `os.pread` on a
  descriptor the reader keeps alive itself, so it keeps reading the bytes it resolved even after
  the loose file is removed or the pack file is replaced.
- `CompressedReader`: one zlib stream inside a pack, with random access. Seeking backwards must
  not decompress from zero each time: the reader keeps decompressor checkpoints
  (`zlib.decompressobj().copy()`) every `interval` output bytes (interval = max(1 MiB, size/64),
  so at most ~65 per handle, each the zlib state plus at most FEED bytes of input, about 80 KiB)
  plus the live cursor for sequential reads. A checkpoint re-reads its input from the pack. A read
  at offset X restarts from the nearest checkpoint at or before X. Reaching the end always
  consumes the zlib trailer, so the adler32 checksum is verified.
- `BytesReader`: bytes already in memory (bulk reads slice objects out of one big pack read).
- `ObjectStream`: `read/readinto/seek/tell` (SEEK_SET/CUR/END) over any reader, an io.RawIOBase.

Bytes that cannot be right (short reads, zlib errors, wrong sizes) raise CorruptObject(hashkey).
"""

from __future__ import annotations

import bisect
import io
import os
import threading
import zlib
from typing import Any

from dosfs.container.errors import CorruptObject
from dosfs.container.meta import ObjectMeta
from dosfs.container.packs import PackFd

#: compressed bytes read from the pack at a time when decompressing
COMPRESSED_CHUNK = 256 * 1024
#: compressed bytes handed to zlib per call (bounds the input a checkpoint keeps alive)
FEED = 64 * 1024
#: at most this many checkpoints per compressed reader
MAX_CHECKPOINTS = 64
MIN_CHECKPOINT_INTERVAL = 1024 * 1024


def pread_exact(fd: int, size: int, offset: int) -> bytes:
    """os.pread that loops on partial reads; may return fewer bytes only at end of file."""
    data = os.pread(fd, size, offset)
    if len(data) == size or not data:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = os.pread(fd, size - got, offset + got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


class ObjectReader:
    """Random access to one object's bytes. Thread-safe. Use as a context manager or close()."""

    hashkey: str
    size: int
    meta: ObjectMeta
    compressed: bool = False

    def pread(self, offset: int, size: int) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        """Release the pinned descriptor."""

    def _span(self, offset: int, size: int) -> tuple[int, int]:
        if offset < 0 or size < 0:
            raise ValueError("offset and size must be >= 0")
        return offset, min(offset + size, self.size)

    def __enter__(self) -> ObjectReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.hashkey} size={self.size}>"


class RawReader(ObjectReader):
    """Uncompressed bytes at [base, base + size) of a pinned file descriptor."""

    def __init__(self, hashkey: str, fd: PackFd, base: int, size: int, meta: ObjectMeta) -> None:
        self.hashkey = hashkey
        self._fd: PackFd | None = fd
        self._base = base
        self.size = size
        self.meta = meta

    def pread(self, offset: int, size: int) -> bytes:
        offset, end = self._span(offset, size)
        if offset >= end:
            return b""
        pfd = self._fd
        if pfd is None:
            raise ValueError("read from a closed object reader")
        n = end - offset
        data = pread_exact(pfd.fd, n, self._base + offset)
        if len(data) != n:
            raise CorruptObject(
                self.hashkey,
                f"file ends early: got {len(data)} of {n} bytes at object offset {offset}",
            )
        return data

    def close(self) -> None:
        self._fd = None


class BytesReader(ObjectReader):
    """An object whose bytes are already in memory."""

    def __init__(self, hashkey: str, data: bytes | memoryview, meta: ObjectMeta) -> None:
        self.hashkey = hashkey
        self._data = memoryview(data)
        self.size = len(self._data)
        self.meta = meta

    def pread(self, offset: int, size: int) -> bytes:
        offset, end = self._span(offset, size)
        return bytes(self._data[offset:end]) if offset < end else b""

    def close(self) -> None:
        self._data = memoryview(b"")


class _Cursor:
    """A decompressor and where it stands in the compressed bytes and in the output."""

    __slots__ = ("dobj", "upos", "base", "buf", "off")

    def __init__(self) -> None:
        self.dobj: Any = zlib.decompressobj()
        self.upos = 0  # uncompressed bytes produced so far
        self.base = 0  # compressed offset (relative to the object start) of buf[0]
        self.buf = b""  # compressed bytes fetched from the pack
        self.off = 0  # how much of buf the decompressor has consumed

    def copy(self) -> _Cursor:
        other = _Cursor.__new__(_Cursor)
        other.dobj = self.dobj.copy()
        other.upos = self.upos
        other.base = self.base
        other.buf = self.buf
        other.off = self.off
        return other

    def checkpoint(self) -> _Cursor:
        """A copy that keeps no fetched bytes (only the compressed position to re-read from),
        so a checkpoint costs the decompressor state and at most FEED bytes of its input."""
        other = self.copy()
        other.base = self.base + self.off
        other.buf = b""
        other.off = 0
        return other


class CompressedReader(ObjectReader):
    """Random access inside one zlib stream stored at [base, base + length) of a pack."""

    compressed = True

    def __init__(
        self, hashkey: str, fd: PackFd, base: int, length: int, size: int, meta: ObjectMeta
    ) -> None:
        self.hashkey = hashkey
        self._fd: PackFd | None = fd
        self._base = base
        self._length = length
        self.size = size
        self.meta = meta
        self.interval = max(MIN_CHECKPOINT_INTERVAL, -(-size // MAX_CHECKPOINTS))
        self._cp_pos: list[int] = [0]
        self._cps: list[_Cursor] = [_Cursor()]
        self._live: _Cursor | None = None
        self._lock = threading.Lock()
        self._verified = False

    def _fail(self, reason: str) -> CorruptObject:
        return CorruptObject(self.hashkey, reason)

    def _step(self, cur: _Cursor, want: int) -> bytes:
        """Produce at most `want` (>0) more bytes, never crossing a checkpoint boundary."""
        boundary = (cur.upos // self.interval + 1) * self.interval
        limit = min(want, boundary - cur.upos)
        if cur.off >= len(cur.buf) and not cur.dobj.eof:
            pos = cur.base + len(cur.buf)
            if pos < self._length:
                pfd = self._fd
                if pfd is None:
                    raise ValueError("read from a closed object reader")
                n = min(COMPRESSED_CHUNK, self._length - pos)
                chunk = pread_exact(pfd.fd, n, self._base + pos)
                if len(chunk) != n:
                    raise self._fail(f"pack file ends early (compressed offset {pos})")
                cur.base, cur.buf, cur.off = pos, chunk, 0
        # feed zlib a slice at a time: what it leaves unconsumed (kept by the decompressor and by
        # every copy of it) is then at most FEED bytes
        feed = memoryview(cur.buf)[cur.off : cur.off + FEED]
        try:
            out = cur.dobj.decompress(feed, limit)
        except zlib.error as exc:
            raise self._fail(f"zlib error: {exc}") from None
        consumed = len(feed) - len(cur.dobj.unconsumed_tail)
        if cur.dobj.eof:
            consumed -= len(cur.dobj.unused_data)
        cur.off += consumed
        cur.upos += len(out)
        if cur.upos > self.size:
            raise self._fail(f"decompresses to more than its size {self.size}")
        if cur.dobj.eof:
            cur.buf, cur.off = b"", 0
            if cur.upos != self.size:
                raise self._fail(f"zlib stream ends at {cur.upos}, size is {self.size}")
        elif not out and not consumed:
            raise self._fail(f"zlib stream truncated at output offset {cur.upos}")
        if (
            out
            and cur.upos % self.interval == 0
            and cur.upos < self.size
            and len(self._cps) <= MAX_CHECKPOINTS
        ):
            i = bisect.bisect_left(self._cp_pos, cur.upos)
            if i == len(self._cp_pos) or self._cp_pos[i] != cur.upos:
                self._cp_pos.insert(i, cur.upos)
                self._cps.insert(i, cur.checkpoint())
        return out

    def _start(self, offset: int) -> _Cursor:
        i = bisect.bisect_right(self._cp_pos, offset) - 1
        live = self._live
        if live is not None and self._cp_pos[i] <= live.upos <= offset:
            return live
        return self._cps[i].copy()

    def pread(self, offset: int, size: int) -> bytes:
        offset, end = self._span(offset, size)
        if offset >= end:
            return b""
        with self._lock:
            cur = self._start(offset)
            while cur.upos < offset:
                self._step(cur, offset - cur.upos)
            parts = []
            while cur.upos < end:
                parts.append(self._step(cur, end - cur.upos))
            if end == self.size and not self._verified:
                # consume the trailer: verifies adler32 of the whole object
                while not cur.dobj.eof:
                    self._step(cur, 1)
                self._verified = True
            self._live = cur
            return b"".join(parts)

    def close(self) -> None:
        with self._lock:
            self._fd = None
            self._live = None
            self._cps = self._cps[:1]
            self._cp_pos = [0]

    @property
    def checkpoints(self) -> int:
        """How many checkpoints this handle holds (for tests and diagnostics)."""
        return len(self._cps)


class ObjectStream(io.RawIOBase):
    """A read-only, seekable file object over an ObjectReader (closes the reader on close)."""

    def __init__(self, reader: ObjectReader) -> None:
        super().__init__()
        self._reader = reader
        self._pos = 0
        self.hashkey = reader.hashkey
        self.size = reader.size

    @property
    def meta(self) -> ObjectMeta:
        return self._reader.meta

    @property
    def mode(self) -> str:
        return "rb"

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("I/O operation on closed stream")
        if size is None or size < 0:
            size = max(0, self.size - self._pos)
        data = self._reader.pread(self._pos, size)
        self._pos += len(data)
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed stream")
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence!r}")
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        if not self.closed:
            self._reader.close()
        super().close()

    def __repr__(self) -> str:
        return f"<ObjectStream {self.hashkey} size={self.size} pos={self._pos}>"
