"""Restart points in the zlib streams dosfs writes, so a read in the middle of a large compressed
object starts near its offset instead of inflating from the object's start.

Why: a new stream (every open through the mount) of a 64 MiB compressed object had to inflate up
to the offset asked for: 120-200 ms for a 128 KiB read near the end. When dosfs compresses an
object of at least MIN_SIZE bytes it ends a deflate block with a full flush every RESTART_EVERY
input bytes: the output stays one standard zlib stream (disk-objectstore and `zlib` read it as
before; it costs ~0.1% of size), and at each such point a raw inflater can start afresh with no
history. The points, (uncompressed offset, compressed offset) pairs, go to a side file that dosfs
owns, `dosfs-restarts.sqlite` beside `packs.idx` (never in `packs.idx`), keyed by the hash and
where the stream lies (pack, offset, length).

The side file is advisory: absent, unreadable, or naming a place where the object no longer is
(another tool repacked it), it is ignored and the reader inflates from the start as before. A
point is used only when the four bytes before it are a full flush's marker; the bytes served
are verified as ever (sha256 at the end of a whole read, the mount's verify-on-read).
"""

from __future__ import annotations

import array
import collections
import logging
import os
import sqlite3
import sys
import threading
import zlib
from collections.abc import Callable, Iterable

from dosfs.container.db import sqlite_uri

log = logging.getLogger("dosfs.container")

#: input bytes between two restart points
RESTART_EVERY = 128 * 1024
#: objects smaller than this get no restart points (inflating them whole is cheap)
MIN_SIZE = 2 * RESTART_EVERY
#: what a full flush leaves in the stream, right before a restart point (an empty stored block)
MARKER = b"\x00\x00\xff\xff"
FILE_NAME = "dosfs-restarts.sqlite"
#: objects whose decoded points a RestartIndex remembers
RECENT = 256

Points = list[tuple[int, int]]
#: what a reader calls to get an object's points: None when there are none
Lookup = Callable[[], "Points | None"]

_SCHEMA = """CREATE TABLE IF NOT EXISTS restarts (
    hashkey TEXT NOT NULL, pack_id INTEGER NOT NULL, offset INTEGER NOT NULL,
    length INTEGER NOT NULL, points BLOB NOT NULL,
    PRIMARY KEY (pack_id, offset, hashkey)) WITHOUT ROWID"""


class RestartingCompressor:
    """zlib.compressobj with a full flush every RESTART_EVERY input bytes; `points` lists where
    a raw inflater may start, relative to the stream's first byte."""

    def __init__(self, level: int) -> None:
        self._cobj = zlib.compressobj(level)
        self._in = 0  # input bytes so far
        self._out = 0  # output bytes so far
        self.points: Points = []

    def compress(self, data: bytes | memoryview) -> bytes:
        view = memoryview(data)
        out: list[bytes] = []
        while view.nbytes:
            room = RESTART_EVERY - self._in % RESTART_EVERY
            piece, view = view[:room], view[room:]
            out.append(self._cobj.compress(piece))
            self._in += piece.nbytes
            self._out += len(out[-1])
            if self._in % RESTART_EVERY == 0:
                out.append(self._cobj.flush(zlib.Z_FULL_FLUSH))
                self._out += len(out[-1])
                self.points.append((self._in, self._out))
        return b"".join(out)

    def flush(self) -> bytes:
        tail = self._cobj.flush()
        self._out += len(tail)
        # a point at the very end starts nothing
        while self.points and self.points[-1][0] >= self._in:
            self.points.pop()
        return tail


def compress_whole(content: bytes, level: int) -> tuple[bytes, Points]:
    """One object in memory: plain zlib.compress when it is small (no points)."""
    if len(content) < MIN_SIZE:
        return zlib.compress(content, level), []
    c = RestartingCompressor(level)
    data = c.compress(content) + c.flush()
    return data, c.points


def encode(points: Points) -> bytes:
    flat = array.array("q", (v for p in points for v in p))
    if sys.byteorder != "little":  # pragma: no cover - stored little-endian everywhere
        flat.byteswap()
    return flat.tobytes()


def decode(blob: bytes) -> Points | None:
    if len(blob) % 16:
        return None
    flat = array.array("q")
    flat.frombytes(blob)
    if sys.byteorder != "little":  # pragma: no cover
        flat.byteswap()
    points = list(zip(flat[0::2], flat[1::2], strict=True))
    last_u = last_c = 0
    for u, c in points:  # strictly increasing, or not ours
        if u <= last_u or c <= last_c:
            return None
        last_u, last_c = u, c
    return points


class RestartIndex:
    """The side file of one container: written by the packer, read by any reader."""

    def __init__(self, folder: str) -> None:
        self.path = os.path.join(folder, FILE_NAME)
        self._local = threading.local()
        #: decoded points of recent lookups: every open of a compressed object asks, and
        #: decoding ~1,000 points costs more than the read that follows
        self._recent: collections.OrderedDict[tuple[str, int, int, int], Points | None] = (
            collections.OrderedDict())
        self._recent_lock = threading.Lock()

    def record(self, rows: Iterable[tuple[str, int, int, int, Points]]) -> None:
        """Store points of objects just committed (hashkey, pack id, offset, length, points).
        A failure is logged and forgotten: the points only make reads faster."""
        batch = [(h, p, o, n, encode(pts)) for h, p, o, n, pts in rows if pts]
        if not batch:
            return
        with self._recent_lock:
            self._recent.clear()
        try:
            conn = sqlite3.connect(self.path, timeout=30)
            try:
                with conn:
                    conn.execute(_SCHEMA)
                    conn.executemany("INSERT OR REPLACE INTO restarts VALUES (?, ?, ?, ?, ?)",
                                     batch)
            finally:
                conn.close()
        except (sqlite3.Error, OSError) as exc:
            log.warning("could not record restart points in %s: %s", self.path, exc)

    def prune(self, index_path: str) -> int:
        """Forget points of rows the index no longer has (deleted or moved objects: their
        keys never match again, they only take room); returns how many went. Safe beside a
        packer: points are recorded only after their rows are committed."""
        if not os.path.exists(self.path):
            return 0
        conn = sqlite3.connect(sqlite_uri(self.path, ""), uri=True, timeout=30)
        try:
            conn.execute("ATTACH DATABASE ? AS idx", (sqlite_uri(index_path, "mode=ro"),))
            with conn:
                gone = conn.execute(
                    "DELETE FROM restarts WHERE NOT EXISTS (SELECT 1 FROM idx.db_object o "
                    "WHERE o.hashkey = restarts.hashkey AND o.pack_id = restarts.pack_id AND "
                    "o.offset = restarts.offset AND o.length = restarts.length)").rowcount
            return int(gone)
        except sqlite3.Error as exc:
            log.warning("could not prune restart points in %s: %s", self.path, exc)
            return 0
        finally:
            conn.close()

    def lookup(self, hashkey: str, pack_id: int, offset: int, length: int) -> Points | None:
        key = (hashkey, pack_id, offset, length)
        with self._recent_lock:
            if key in self._recent:
                self._recent.move_to_end(key)
                return self._recent[key]
        conn = self._conn()
        if conn is None:
            return None
        try:
            row = conn.execute(
                "SELECT length, points FROM restarts WHERE pack_id = ? AND offset = ? "
                "AND hashkey = ?", (pack_id, offset, hashkey)).fetchone()
        except sqlite3.Error:
            return None
        points = None if row is None or row[0] != length else decode(row[1])
        with self._recent_lock:
            self._recent[key] = points
            if len(self._recent) > RECENT:
                self._recent.popitem(last=False)
        return points

    def _conn(self) -> sqlite3.Connection | None:
        """A read-only connection of this thread, or None while the file does not exist."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():  # never across a fork
            return conn
        if not os.path.exists(self.path):
            return None
        try:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True,
                                   check_same_thread=False)
        except sqlite3.Error:
            return None
        self._local.conn = conn
        self._local.pid = os.getpid()
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            conn.close()
        self._local.conn = None
