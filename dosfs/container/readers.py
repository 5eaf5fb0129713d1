"""Readers over one object's bytes (pinned at open), a seekable stream on top, and the one place
that decodes and checks stored bytes.

- `RawReader`: a loose file or an uncompressed packed object; `pread` is one read on a source
  the reader keeps alive itself, so it keeps reading the bytes it resolved even after the loose
  file is removed or the pack file is replaced.
- `CompressedReader`: one zlib stream inside a pack, with random access. Seeking backwards must
  not decompress from zero each time: the reader keeps decompressor checkpoints
  (`zlib.decompressobj().copy()`) every `interval` output bytes (interval = max(1 MiB, size/64),
  so at most ~65 per handle, each the zlib state plus at most FEED bytes of input, about 80 KiB)
  plus the live cursor for sequential reads. A checkpoint re-reads its input from the pack. A read
  at offset X restarts from the nearest checkpoint at or before X. Reaching the end always
  consumes the zlib trailer, so the adler32 checksum is verified.
- `ObjectStream`: `read/readinto/seek/tell` (SEEK_SET/CUR/END) over any reader, an io.RawIOBase;
  with `verify`, the read that reaches the end raises CorruptObject unless the whole object
  hashed to its key (in-order reads are hashed as they pass; otherwise the object is re-read).

Bytes that cannot be right (short reads, zlib errors, wrong sizes) raise CorruptObject(hashkey).
"""

from __future__ import annotations

import bisect
import io
import threading
import zlib
from collections.abc import Sequence
from typing import Any

from dosfs.container.checkpoints import SHARED, Cursor
from dosfs.container.config import new_hasher
from dosfs.container.decoding import HASH_CHUNK
from dosfs.container.errors import CorruptObject
from dosfs.container.index_sql import L_COMPRESSED, L_LENGTH, L_OFFSET, L_PACK, L_SIZE
from dosfs.container.meta import ObjectMeta, ObjectType, new_meta
from dosfs.container.packstore import PackSource
from dosfs.container.restarts import MARKER, MIN_SIZE, RESTART_EVERY, Lookup

#: compressed bytes read from the pack at a time when decompressing
COMPRESSED_CHUNK = 256 * 1024
#: compressed bytes handed to zlib per call (bounds the input a checkpoint keeps alive)
FEED = 64 * 1024
#: at most this many checkpoints per compressed reader
MAX_CHECKPOINTS = 64
MIN_CHECKPOINT_INTERVAL = 1024 * 1024


def packed_meta(row: Sequence[int]) -> ObjectMeta:
    """Meta of a packed object from (compressed, size, offset, length, pack_id, ...)."""
    return new_meta(ObjectType.PACKED, row[L_SIZE], row[L_PACK], bool(row[L_COMPRESSED]),
                    row[L_OFFSET], row[L_LENGTH])


class ObjectReader:
    """Random access to one object's bytes. Thread-safe. Use as a context manager or close()."""

    hashkey: str
    size: int
    meta: ObjectMeta
    compressed: bool = False
    #: the loose file the bytes come from (None for packed objects)
    loose_path: str | None = None
    #: where the bytes are read from (None once closed)
    _source: PackSource | None = None

    def pread(self, offset: int, size: int) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        """Release the pinned source."""

    def sequential(self) -> None:
        """This reader will only be read front to back: keep no random-access state."""

    @property
    def may_block(self) -> bool:
        """Whether `pread` may wait on the network (its source is remote): a server then reads
        it inside packstore.local_only() or on a thread that may wait, never inline."""
        source = self._source
        return source is not None and source.blocking

    def stored_range(self) -> tuple[int, int, int, bool] | None:
        """(fd, offset, length, compressed) of the stored bytes when they lie in a local file
        (a helper process can read them itself), else None."""
        return None

    def clone(self) -> ObjectReader:  # pragma: no cover - abstract
        """Another reader of the very same bytes (same pinned source), with its own state."""
        raise NotImplementedError

    def where(self) -> str:  # pragma: no cover - abstract
        """Where the bytes live (for error messages)."""
        raise NotImplementedError

    def digest(self, hash_type: str) -> str:
        """Hash of the whole object, read in chunks (memory flat)."""
        hasher = new_hasher(hash_type)
        offset = 0
        while offset < self.size:
            chunk = self.pread(offset, HASH_CHUNK)
            if not chunk:
                raise CorruptObject(self.hashkey, f"no bytes at offset {offset} ({self.where()})")
            hasher.update(chunk)
            offset += len(chunk)
        return str(hasher.hexdigest())

    def verify(self, hash_type: str) -> None:
        """CorruptObject unless the whole object hashes to its key."""
        got = self.digest(hash_type)
        if got != self.hashkey:
            raise CorruptObject(self.hashkey, f"content hashes to {got} ({self.where()})")

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
    """Uncompressed bytes at [base, base + size) of a pinned source."""

    def __init__(
        self, hashkey: str, source: PackSource, base: int, size: int, meta: ObjectMeta
    ) -> None:
        self.hashkey = hashkey
        self._source: PackSource | None = source
        self._base = base
        self.size = size
        self.meta = meta
        self._where = source.describe() if meta.type is ObjectType.LOOSE else ""
        self.loose_path = self._where or None

    def pread(self, offset: int, size: int) -> bytes:
        offset, end = self._span(offset, size)
        if offset >= end:
            return b""
        source = self._source
        if source is None:
            raise ValueError("read from a closed object reader")
        n = end - offset
        data = source.read_at(self._base + offset, n, self._base + self.size)
        if len(data) != n:
            raise CorruptObject(
                self.hashkey,
                f"file ends early: got {len(data)} of {n} bytes at object offset {offset} "
                f"({self.where()})",
            )
        return data

    def stored_range(self) -> tuple[int, int, int, bool] | None:
        fd = getattr(self._source, "fd", None)
        return None if fd is None else (fd, self._base, self.size, False)

    def clone(self) -> RawReader:
        source = self._source
        if source is None:
            raise ValueError("clone of a closed object reader")
        return RawReader(self.hashkey, source, self._base, self.size, self.meta)

    def where(self) -> str:
        if self._where:
            return f"loose file {self._where}"
        return f"pack {self.meta.pack_id} offset {self._base} length {self.size}"

    def close(self) -> None:
        self._source = None


class CompressedReader(ObjectReader):
    """Random access inside one zlib stream stored at [base, base + length) of a pack."""

    compressed = True

    def __init__(
        self,
        hashkey: str,
        source: PackSource,
        base: int,
        length: int,
        size: int,
        meta: ObjectMeta,
        restarts: Lookup | None = None,
    ) -> None:
        """`restarts`: gives the restart points dosfs recorded when it compressed the object
        (restarts.py), asked on the first read that would otherwise inflate from far back."""
        self.hashkey = hashkey
        self._source: PackSource | None = source
        self._base = base
        self._length = length
        self.size = size
        self.meta = meta
        self.interval = max(MIN_CHECKPOINT_INTERVAL, -(-size // MAX_CHECKPOINTS))
        # the key as well as the place: a pack file's inode number may be reused by another
        self._shared_key = (hashkey, source.identity, base, length)
        known = SHARED.get(self._shared_key) if size > self.interval else {}
        known[0] = Cursor()
        self._cp_pos: list[int] = sorted(known)
        self._cps: list[Cursor] = [known[u] for u in self._cp_pos]
        self._live: Cursor | None = None
        self._lock = threading.Lock()
        self._verified = False
        self._max_checkpoints = MAX_CHECKPOINTS
        self._restarts = restarts if size >= MIN_SIZE else None
        self._points: list[tuple[int, int]] = []  # restart points (uncompressed, compressed)

    def sequential(self) -> None:
        self._max_checkpoints = 0

    def stored_range(self) -> tuple[int, int, int, bool] | None:
        fd = getattr(self._source, "fd", None)
        return None if fd is None else (fd, self._base, self._length, True)

    def clone(self) -> CompressedReader:
        source = self._source
        if source is None:
            raise ValueError("clone of a closed object reader")
        return CompressedReader(
            self.hashkey, source, self._base, self._length, self.size, self.meta,
            self._restarts,
        )

    def where(self) -> str:
        return (
            f"pack {self.meta.pack_id} offset {self._base} length {self._length} (zlib stream)"
        )

    def _fail(self, reason: str) -> CorruptObject:
        return CorruptObject(self.hashkey, f"{reason} ({self.where()})")

    def _step(self, cur: Cursor, want: int) -> bytes:
        """Produce at most `want` (>0) more bytes, never crossing a checkpoint boundary."""
        boundary = (cur.upos // self.interval + 1) * self.interval
        limit = min(want, boundary - cur.upos)
        if cur.off >= len(cur.buf) and not cur.dobj.eof:
            pos = cur.base + len(cur.buf)
            if pos < self._length:
                source = self._source
                if source is None:
                    raise ValueError("read from a closed object reader")
                n = min(COMPRESSED_CHUNK, self._length - pos)
                chunk = source.read_at(self._base + pos, n, self._base + self._length)
                if len(chunk) != n:
                    raise self._fail(f"pack file ends early (compressed offset {pos})")
                cur.base, cur.buf, cur.off = pos, chunk, 0
        # feed zlib a slice at a time: what it leaves unconsumed (kept by the decompressor and by
        # every copy of it) is then at most FEED bytes
        feed = memoryview(cur.buf)[cur.off : cur.off + FEED]
        try:
            out: bytes = cur.dobj.decompress(feed, limit)
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
            and len(self._cps) <= self._max_checkpoints
        ):
            i = bisect.bisect_left(self._cp_pos, cur.upos)
            if i == len(self._cp_pos) or self._cp_pos[i] != cur.upos:
                checkpoint = cur.checkpoint()
                self._cp_pos.insert(i, cur.upos)
                self._cps.insert(i, checkpoint)
                SHARED.add(self._shared_key, cur.upos, checkpoint)
        return out

    def _start(self, offset: int) -> Cursor:
        if self._restarts is not None and offset >= RESTART_EVERY:
            lookup, self._restarts = self._restarts, None
            self._points = self._usable(lookup())
        i = bisect.bisect_right(self._cp_pos, offset) - 1
        live = self._live
        if live is not None and not self._cp_pos[i] <= live.upos <= offset:
            live = None
        nearest = live.upos if live is not None else self._cp_pos[i]
        j = bisect.bisect_right(self._points, (offset, self._length)) - 1
        if j >= 0 and self._points[j][0] > nearest:
            upos, cpos = self._points[j]
            if self._marker_at(cpos):
                return Cursor(upos, cpos, raw=True)
            self._points = []  # no full flush there: the points are not for these bytes
        return live if live is not None else self._cps[i].copy()

    def _usable(self, points: list[tuple[int, int]] | None) -> list[tuple[int, int]]:
        """Recorded restart points, if they can describe this stream at all."""
        # strictly increasing in both (restarts.decode): the ends bound every point
        if not points or not (points[0][0] > 0 and points[-1][0] < self.size
                              and points[0][1] >= 4 and points[-1][1] < self._length):
            return []
        return points

    def _marker_at(self, cpos: int) -> bool:
        source = self._source
        if source is None:
            raise ValueError("read from a closed object reader")
        return source.read_at(self._base + cpos - 4, 4) == MARKER

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
                # consume the trailer: verifies adler32 of the whole object (of the rest, from a
                # restart point; the sha256 of a whole read covers everything)
                while not cur.dobj.eof:
                    self._step(cur, 1)
                self._verified = not cur.raw
            self._live = cur
            return b"".join(parts)

    def close(self) -> None:
        with self._lock:
            self._source = None
            self._live = None
            self._cps = self._cps[:1]
            self._cp_pos = [0]

    @property
    def checkpoints(self) -> int:
        """How many checkpoints this handle holds (for tests and diagnostics)."""
        return len(self._cps)


def reader_for(
    hashkey: str, source: PackSource, row: Sequence[int], restarts: Lookup | None = None
) -> ObjectReader:
    """The reader of a packed row (compressed, size, offset, length, pack_id, ...)."""
    compressed, size, offset = row[L_COMPRESSED], row[L_SIZE], row[L_OFFSET]
    length = row[L_LENGTH]
    meta = packed_meta(row)
    if compressed:
        return CompressedReader(hashkey, source, offset, length, size, meta, restarts)
    if length != size:
        raise CorruptObject(hashkey, f"uncompressed but length {length} != size {size}")
    return RawReader(hashkey, source, offset, size, meta)


def loose_reader(hashkey: str, source: PackSource, size: int) -> RawReader:
    return RawReader(hashkey, source, 0, size, new_meta(ObjectType.LOOSE, size))


class ObjectStream(io.RawIOBase):
    """A read-only, seekable file object over an ObjectReader (closes the reader on close).

    With `verify` (the container's hash type), reaching the end checks the whole object."""

    def __init__(self, reader: ObjectReader, verify: str | None = None) -> None:
        super().__init__()
        self._reader = reader
        self._pos = 0
        self.hashkey = reader.hashkey
        self.size = reader.size
        self._verify = verify or ""
        self._hasher: Any = new_hasher(verify) if verify else None
        self._hashed = 0

    @property
    def meta(self) -> ObjectMeta:
        return self._reader.meta

    @property
    def name(self) -> str:
        """The loose file's path, as disk-objectstore's loose streams (plain files) have it;
        the hash key for a packed object."""
        path = self._reader.loose_path
        return path if path is not None else self.hashkey

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
        start = self._pos
        self._pos += len(data)
        if self._hasher is not None:
            self._check(start, data)
        return data

    def _check(self, start: int, data: bytes) -> None:
        if start == self._hashed and data:
            self._hasher.update(data)
            self._hashed += len(data)
        if self._pos < self.size:
            return
        hasher, self._hasher = self._hasher, None
        if self._hashed == self.size:
            got = hasher.hexdigest()
            if got != self.hashkey:
                raise CorruptObject(
                    self.hashkey, f"content hashes to {got} ({self._reader.where()})"
                )
        else:
            self._reader.verify(self._verify)

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
