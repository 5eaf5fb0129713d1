"""Repack: rewrite packs without holes (and optionally with another compression).

Safe for concurrent readers (dosfs ones; a disk-objectstore reader holding an old snapshot reads
b'' after a repack, see docs/format.md). Pack N is rewritten in these steps, each durable before
the next:

1. hold the container lock and `packs/N.lock` (no writer appends to N meanwhile);
2. write N's live objects, in offset order, into pack `-1` (under `-1.lock`), checking the hash
   of every object whose bytes are transformed (a compression change) so that corruption is
   never rewritten into a new, valid-looking zlib stream; fsync `-1`;
3. commit: N's rows now point into `-1` (whose bytes are on disk);
4. replace N by a hard link to `-1` (link to `N.dosfs-repack`, rename over N), fsync packs/;
5. commit: the rows point at N again; remove `-1`, fsync packs/.

Open readers keep their pinned file; a new read re-resolves its row (packstore.PackCache). A crash
leaves at most `-1` (+ rows on it, recovered at the next repack) or `N.dosfs-repack`, which
clean_storage removes and validate reports.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable

from dosfs.container.config import REPACK_PACK_ID, fsync_dir, new_hasher
from dosfs.container.db import write_transaction
from dosfs.container.errors import CorruptObject, InconsistentContent, LockedError
from dosfs.container.maintenance import REPACK_TMP_SUFFIX, remove_repack_leftovers
from dosfs.container.meta import CompressMode
from dosfs.container.packing import CHUNK, worth_compressing
from dosfs.container.packs import PackAppender, PackLock, list_pack_ids, remove_stale_pack_locks
from dosfs.container.packstore import PackSource
from dosfs.container.parts import Parts
from dosfs.container.progress import Callback, Progress
from dosfs.container.readers import reader_for
from dosfs.container.restarts import MIN_SIZE, Points, RestartingCompressor

#: moves buffered in Python before they go into the temp table
MOVES_BATCH = 10_000

_SQL_TO_REPACK = (
    "UPDATE db_object SET pack_id = ?, "
    "offset = (SELECT m.offset FROM temp.moves AS m WHERE m.id = db_object.id), "
    "length = (SELECT m.length FROM temp.moves AS m WHERE m.id = db_object.id), "
    "compressed = (SELECT m.compressed FROM temp.moves AS m WHERE m.id = db_object.id) "
    "WHERE pack_id = ? AND id IN (SELECT id FROM temp.moves)"
)


def repack(parts: Parts, mode: CompressMode, callback: Callback | None = None) -> None:
    """Repack every pack that has holes (or all of them when the compression changes)."""
    layout = parts.layout
    index = parts.index
    with parts.lock.hold("repack"):
        remove_stale_pack_locks(layout)
        if os.path.exists(layout.pack_lock_path(REPACK_PACK_ID)):
            raise LockedError(
                f"another repack is running (packs/{REPACK_PACK_ID}.lock exists); if no "
                "disk-objectstore or dosfs process is repacking, remove that file"
            )
        remove_repack_leftovers(parts)
        _recover_repack_pack(parts)
        stats = index.pack_stats()
        for pack_id in list_pack_ids(layout):
            count, total_length, end, total_size = stats.get(pack_id, (0, 0, 0, 0))
            if count == 0:
                with PackLock(layout, pack_id):
                    os.unlink(layout.pack_path(pack_id))
                    fsync_dir(layout.packs)
                continue
            size = os.stat(layout.pack_path(pack_id)).st_size
            if mode is CompressMode.KEEP and total_length == size == end:
                # no holes, nothing to change; progress still says the pack is done
                progress = Progress(callback)
                progress.init(total_size, f"Repack {pack_id}")
                progress.update(total_size)
                progress.close()
                continue
            repack_pack(parts, pack_id, mode, callback)
        parts.packs.clear()
        index.vacuum()


def repack_pack(
    parts: Parts, pack_id: int, mode: CompressMode, callback: Callback | None = None
) -> None:
    """Rewrite one pack (the steps in the module docstring)."""
    layout = parts.layout
    if pack_id == REPACK_PACK_ID:
        raise ValueError(f"pack {REPACK_PACK_ID} is the repack target; it cannot be repacked")
    with parts.lock.hold("repack"), PackLock(layout, pack_id):
        conn = parts.index.write_conn()
        try:
            conn.execute("DROP TABLE IF EXISTS temp.moves")
            conn.execute(
                "CREATE TEMP TABLE moves (id INTEGER PRIMARY KEY, offset INTEGER, "
                "length INTEGER, compressed INTEGER)"
            )
            with PackAppender(layout, REPACK_PACK_ID) as out:
                restarts = _copy_live_objects(parts, pack_id, mode, out, conn, callback)
                out.sync()
                with write_transaction(conn):  # step 3
                    conn.execute(_SQL_TO_REPACK, (REPACK_PACK_ID, pack_id))
                out.mark_committed()
                _replace_pack(parts, pack_id)  # step 4
                with write_transaction(conn):  # step 5
                    conn.execute(
                        "UPDATE db_object SET pack_id = ? WHERE pack_id = ?",
                        (pack_id, REPACK_PACK_ID),
                    )
            os.unlink(layout.pack_path(REPACK_PACK_ID))
            fsync_dir(layout.packs)
            parts.restarts.record(restarts)  # where the moved streams now lie
        finally:
            try:
                conn.execute("DROP TABLE IF EXISTS temp.moves")
            finally:
                conn.close()
        parts.packs.clear()


def _copy_live_objects(
    parts: Parts,
    pack_id: int,
    mode: CompressMode,
    out: PackAppender,
    conn: sqlite3.Connection,
    callback: Callback | None,
) -> list[tuple[str, int, int, int, Points]]:
    """Step 2: the live objects of `pack_id`, in offset order, into `out`; moves into
    temp.moves. Returns the restart points of the compressed ones at their new places."""
    src = parts.packs.open_uncached(pack_id)
    level = parts.layout.config.compression_level
    progress = Progress(callback)
    if callback:  # bytes of the objects (uncompressed), as disk-objectstore reports them
        total = parts.index.pack_stats().get(pack_id, (0, 0, 0, 0))[3]
        progress.init(total, f"Repack {pack_id}")
    batch: list[tuple[int, int, int, int]] = []
    restarts: list[tuple[str, int, int, int, Points]] = []
    for rowid, hashkey, compressed, size, offset, length in parts.index.iter_pack_rows(pack_id):
        dest = _destination(mode, compressed, size, length, src, offset)
        new_offset = out.tell()
        points: Points | None = None
        if dest == bool(compressed):
            _copy_range(src, offset, length, out.write, hashkey)
            if compressed and size >= MIN_SIZE:  # the same stream: its points move along
                points = parts.restarts.lookup(hashkey, pack_id, offset, length)
        else:
            points = _transform(parts, hashkey, src, (compressed, size, offset, length,
                                                      pack_id), dest, level, out)
        new_length = out.tell() - new_offset
        batch.append((rowid, new_offset, new_length, int(dest)))
        if points:
            restarts.append((hashkey, pack_id, new_offset, new_length, points))
        if len(batch) >= MOVES_BATCH:
            conn.executemany("INSERT INTO temp.moves VALUES (?, ?, ?, ?)", batch)
            batch = []
        progress.update(size)
    if batch:
        conn.executemany("INSERT INTO temp.moves VALUES (?, ?, ?, ?)", batch)
    progress.close()
    return restarts


def _destination(
    mode: CompressMode, compressed: int, size: int, length: int, src: PackSource, offset: int
) -> bool:
    """Whether the object is stored compressed after the repack."""
    if mode is CompressMode.KEEP:
        return bool(compressed)
    if mode is CompressMode.YES:
        return True
    if mode is CompressMode.NO:
        return False
    if compressed:
        return size > 0 and length < 0.9 * size
    return worth_compressing(src.read_at(offset, min(size, 64 * 1024)))


def _transform(
    parts: Parts,
    hashkey: str,
    src: PackSource,
    row: tuple[int, int, int, int, int],
    compress: bool,
    level: int,
    out: PackAppender,
) -> Points:
    """Re-encode one object (compress or decompress), refusing bytes that do not hash right;
    the restart points of what it wrote (none when decompressing)."""
    reader = reader_for(hashkey, src, row)
    hasher = new_hasher(parts.hash_type)
    cobj = RestartingCompressor(level) if compress else None
    pos = 0
    try:
        while pos < reader.size:
            chunk = reader.pread(pos, CHUNK)
            if not chunk:
                raise CorruptObject(hashkey, f"no bytes at offset {pos} ({reader.where()})")
            pos += len(chunk)
            hasher.update(chunk)
            out.write(cobj.compress(chunk) if cobj is not None else chunk)
    except CorruptObject as exc:
        raise InconsistentContent(
            f"cannot repack pack {row[4]}: {exc}; nothing was changed (run validate)"
        ) from exc
    if cobj is not None:
        out.write(cobj.flush())
    got = hasher.hexdigest()
    if got != hashkey:
        raise InconsistentContent(
            f"cannot repack pack {row[4]}: object {hashkey} is corrupt (its bytes hash to "
            f"{got}, {reader.where()}); nothing was changed (run validate)"
        )
    return cobj.points if cobj is not None else []


def _copy_range(
    src: PackSource, offset: int, length: int, write: Callable[[bytes], None], hashkey: str
) -> None:
    pos = 0
    while pos < length:
        chunk = src.read_at(offset + pos, min(CHUNK * 8, length - pos))
        if not chunk:
            raise CorruptObject(hashkey, "pack file ends before the object")
        write(chunk)
        pos += len(chunk)


def _replace_pack(parts: Parts, pack_id: int) -> None:
    """Step 4: pack N becomes (a hard link to) the new file; nothing references N now."""
    layout = parts.layout
    tmp = layout.pack_path(pack_id) + REPACK_TMP_SUFFIX
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    os.link(layout.pack_path(REPACK_PACK_ID), tmp)
    os.replace(tmp, layout.pack_path(pack_id))
    fsync_dir(layout.packs)


def _recover_repack_pack(parts: Parts) -> None:
    """Rows still on pack -1 (a repack interrupted between its commits): give the file a
    fresh pack number, move the rows there, drop -1."""
    layout = parts.layout
    path = layout.pack_path(REPACK_PACK_ID)
    if not os.path.exists(path):
        return
    index = parts.index
    new_id = max([*list_pack_ids(layout), *index.pack_ids(), -1]) + 1
    os.link(path, layout.pack_path(new_id))
    fsync_dir(layout.packs)
    index.execute_write(
        "UPDATE db_object SET pack_id = ? WHERE pack_id = ?", (new_id, REPACK_PACK_ID)
    )
    os.unlink(path)
    fsync_dir(layout.packs)
