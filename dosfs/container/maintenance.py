"""Maintenance: clean_storage, repack, delete_objects, validate.

clean_storage, repack and delete_objects hold the container lock. All of them are safe for
concurrent readers and loose writers (dosfs ones; disk-objectstore readers are safe too except
during a repack, as with disk-objectstore itself):
- clean_storage removes a loose copy only when its packed copy is committed and lies inside an
  existing pack file;
- repack never changes bytes a row points to: it writes the live objects into pack `-1`, fsyncs,
  commits the rows to `-1`, replaces pack N by a hard link to `-1`, commits the rows back to N,
  and removes `-1` (disk-objectstore's sequence, plus fsyncs). Open readers keep their pinned
  descriptor; a new read re-resolves its row (see packs.PackFiles).
"""

from __future__ import annotations

import os
import sqlite3
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from dosfs.container import loose as _loose
from dosfs.container.config import REPACK_PACK_ID, fsync_dir, new_hasher
from dosfs.container.errors import (
    CorruptObject,
    InconsistentContent,
    LockedError,
    NotExistent,
)
from dosfs.container.index import IN_CHUNK
from dosfs.container.meta import CompressMode, ValidationReport
from dosfs.container.packing import CHUNK, worth_compressing
from dosfs.container.packs import (
    TMP_LOCK_PREFIX,
    PackAppender,
    list_pack_ids,
    remove_stale_pack_locks,
)
from dosfs.container.streams import CompressedReader, RawReader

if TYPE_CHECKING:
    from dosfs.container.container import Container

Callback = Callable[[str, Any], None]


# -- delete ----------------------------------------------------------------------------------------
def delete_objects(container: Container, hashkeys: Sequence[str]) -> list[str]:
    """Remove duplicates, loose copies, then index rows; returns the keys that existed."""
    layout = container.layout
    keys = [h for h in dict.fromkeys(hashkeys) if layout.is_valid_hashkey(h)]
    with container.lock.hold("delete objects"):
        wanted = set(keys)
        for name in os.listdir(layout.duplicates):
            if name.partition(".")[0] in wanted and not name.startswith("."):
                os.unlink(os.path.join(layout.duplicates, name))
        deleted: set[str] = set()
        for h in keys:
            try:
                os.unlink(layout.loose_path(h))
                deleted.add(h)
            except FileNotFoundError:
                pass
        conn = container.index.write_conn()
        try:
            deleted |= container.index.delete_hashkeys(keys, conn)
        finally:
            conn.close()
    return [h for h in keys if h in deleted]


# -- clean_storage ---------------------------------------------------------------------------------
def _resolve_duplicates(container: Container) -> None:
    layout = container.layout
    groups: dict[str, list[str]] = defaultdict(list)
    for name in os.listdir(layout.duplicates):
        if "." in name and not name.startswith("."):
            groups[name.partition(".")[0]].append(name)
    for hashkey, names in groups.items():
        paths = [os.path.join(layout.duplicates, n) for n in names]
        good = False
        if layout.is_valid_hashkey(hashkey):
            try:
                with container.get_object_stream(hashkey) as stream:
                    good = _hash_stream(container, stream.read) == hashkey
            except (NotExistent, InconsistentContent):
                good = False
        if not good:
            for path in paths:
                with open(path, "rb") as handle:
                    if _hash_stream(container, handle.read) == hashkey:
                        os.replace(path, layout.loose_path(hashkey))
                        good = True
                        break
            if not good:
                raise InconsistentContent(
                    f"duplicates of {hashkey} exist but neither they nor the object are intact"
                )
        for path in paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


def _hash_stream(container: Container, read: Callable[[int], bytes]) -> str:
    hasher = new_hasher(container.layout.config.hash_type)
    while True:
        chunk = read(CHUNK)
        if not chunk:
            return str(hasher.hexdigest())
        hasher.update(chunk)


def clean_storage(
    container: Container, vacuum: bool = False, sandbox_max_age: float = 3600.0
) -> None:
    layout = container.layout
    index = container.index
    with container.lock.hold("clean storage"):
        if vacuum:
            index.vacuum()
        _resolve_duplicates(container)
        # loose copies of packed objects (only when the packed copy is inside its pack file)
        pack_sizes: dict[int, int] = {}

        def pack_size(pack_id: int) -> int:
            if pack_id not in pack_sizes:
                try:
                    pack_sizes[pack_id] = os.stat(layout.pack_path(pack_id)).st_size
                except FileNotFoundError:
                    pack_sizes[pack_id] = -1
            return pack_sizes[pack_id]

        for shard in _loose.list_shards(layout):
            names = _loose.list_shard(layout, shard)
            for start in range(0, len(names), IN_CHUNK * 10):
                rows, _version = index.lookup_many(names[start : start + IN_CHUNK * 10])
                for h, _c, _s, offset, length, pack_id in rows:
                    if offset + length <= pack_size(pack_id):
                        try:
                            os.unlink(layout.loose_path(h))
                        except FileNotFoundError:
                            pass
        # abandoned sandbox files (their writer is gone: no flock, old enough)
        now = time.time()
        for name in _loose.sandbox_entries(layout):
            path = os.path.join(layout.sandbox, name)
            if os.path.isfile(path) and _loose.is_abandoned(path, sandbox_max_age, now):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
        remove_stale_pack_locks(layout)
        _remove_unreferenced_repack_pack(container)
        container.pack_files.clear()


def _remove_unreferenced_repack_pack(container: Container) -> None:
    layout = container.layout
    path = layout.pack_path(REPACK_PACK_ID)
    if not os.path.exists(path) or os.path.exists(layout.pack_lock_path(REPACK_PACK_ID)):
        return
    conn = container.index.conn()
    if conn.execute(
        "SELECT 1 FROM db_object WHERE pack_id = ? LIMIT 1", (REPACK_PACK_ID,)
    ).fetchone():
        return
    os.unlink(path)
    fsync_dir(layout.packs)


def _recover_repack_pack(container: Container) -> None:
    """Rows still on pack -1 (a repack interrupted between its commits): give the file a
    fresh pack number, move the rows there, drop -1."""
    layout = container.layout
    path = layout.pack_path(REPACK_PACK_ID)
    if not os.path.exists(path):
        return
    index = container.index
    new_id = max([*list_pack_ids(layout), *index.pack_ids(), -1]) + 1
    os.link(path, layout.pack_path(new_id))
    fsync_dir(layout.packs)
    conn = index.write_conn()
    try:
        _commit(
            conn, "UPDATE db_object SET pack_id = ? WHERE pack_id = ?", (new_id, REPACK_PACK_ID)
        )
    finally:
        conn.close()
    os.unlink(path)
    fsync_dir(layout.packs)


# -- repack ----------------------------------------------------------------------------------------
def repack(container: Container, mode: CompressMode, callback: Callback | None = None) -> None:
    layout = container.layout
    index = container.index
    with container.lock.hold("repack"):
        remove_stale_pack_locks(layout)
        if os.path.exists(layout.pack_lock_path(REPACK_PACK_ID)):
            raise LockedError(
                f"another repack is running (packs/{REPACK_PACK_ID}.lock exists); if no "
                "disk-objectstore or dosfs process is repacking, remove that file"
            )
        _remove_unreferenced_repack_pack(container)
        _recover_repack_pack(container)
        stats = index.pack_stats()
        for pack_id in list_pack_ids(layout):
            if os.path.exists(layout.pack_lock_path(pack_id)):
                raise LockedError(f"pack {pack_id} is being written (its .lock file exists)")
            count, total_length, end = stats.get(pack_id, (0, 0, 0))
            path = layout.pack_path(pack_id)
            if count == 0:
                os.unlink(path)
                fsync_dir(layout.packs)
                continue
            size = os.stat(path).st_size
            if mode is CompressMode.KEEP and total_length == size == end:
                continue  # no holes, nothing to change
            _repack_one(container, pack_id, mode, callback)
        container.pack_files.clear()
        index.vacuum()


def _repack_one(
    container: Container, pack_id: int, mode: CompressMode, callback: Callback | None
) -> None:
    layout = container.layout
    index = container.index
    level = layout.config.compression_level
    conn = index.write_conn()
    try:
        conn.execute("DROP TABLE IF EXISTS temp.moves")
        conn.execute(
            "CREATE TEMP TABLE moves (id INTEGER PRIMARY KEY, offset INTEGER, length INTEGER, "
            "compressed INTEGER)"
        )
        src = container.pack_files.open_uncached(pack_id)
        if callback:
            callback(
                "init",
                {"total": stats_count(container, pack_id), "description": f"Repack {pack_id}"},
            )
        with PackAppender(layout, REPACK_PACK_ID) as out:
            batch: list[tuple[int, int, int, int]] = []
            for rowid, hashkey, compressed, size, offset, length in index.iter_pack_rows(pack_id):
                if mode is CompressMode.KEEP:
                    dest = bool(compressed)
                elif mode is CompressMode.YES:
                    dest = True
                elif mode is CompressMode.NO:
                    dest = False
                else:
                    dest = _auto(compressed, size, length, src.fd, offset)
                new_offset = out.tell()
                if dest == bool(compressed):
                    _copy_range(src.fd, offset, length, out.write, hashkey)
                else:
                    reader: Any
                    meta: Any = None
                    if compressed:
                        reader = CompressedReader(hashkey, src, offset, length, size, meta)
                    else:
                        reader = RawReader(hashkey, src, offset, size, meta)
                    cobj = zlib.compressobj(level) if dest else None
                    pos = 0
                    while pos < size:
                        chunk = reader.pread(pos, CHUNK)
                        pos += len(chunk)
                        out.write(cobj.compress(chunk) if cobj is not None else chunk)
                    if cobj is not None:
                        out.write(cobj.flush())
                batch.append((rowid, new_offset, out.tell() - new_offset, int(dest)))
                if len(batch) >= 10_000:
                    conn.executemany("INSERT INTO temp.moves VALUES (?, ?, ?, ?)", batch)
                    batch = []
                if callback:
                    callback("update", 1)
            if batch:
                conn.executemany("INSERT INTO temp.moves VALUES (?, ?, ?, ?)", batch)
            out.sync()
            # 1. rows -> pack -1 (whose bytes are durable)
            _commit(
                conn,
                "UPDATE db_object SET pack_id = ?, offset = m.offset, length = m.length, "
                "compressed = m.compressed FROM temp.moves AS m WHERE db_object.id = m.id "
                "AND db_object.pack_id = ?",
                (REPACK_PACK_ID, pack_id),
            )
            out.mark_committed()
            # 2. replace pack N by the new file (nothing references N now)
            tmp = layout.pack_path(pack_id) + ".dosfs-repack"
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            os.link(layout.pack_path(REPACK_PACK_ID), tmp)
            os.replace(tmp, layout.pack_path(pack_id))
            fsync_dir(layout.packs)
            # 3. rows back to N
            _commit(
                conn,
                "UPDATE db_object SET pack_id = ? WHERE pack_id = ?",
                (pack_id, REPACK_PACK_ID),
            )
        os.unlink(layout.pack_path(REPACK_PACK_ID))
        fsync_dir(layout.packs)
        if callback:
            callback("close", None)
    finally:
        try:
            conn.execute("DROP TABLE IF EXISTS temp.moves")
        finally:
            conn.close()


def stats_count(container: Container, pack_id: int) -> int:
    return container.index.pack_stats().get(pack_id, (0, 0, 0))[0]


def _commit(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(sql, params)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _auto(compressed: int, size: int, length: int, fd: int, offset: int) -> bool:
    if compressed:
        return size > 0 and length < 0.9 * size
    return worth_compressing(os.pread(fd, min(size, 64 * 1024), offset))


def _copy_range(fd: int, offset: int, length: int, write: Callable[[bytes], None], h: str) -> None:
    pos = 0
    while pos < length:
        chunk = os.pread(fd, min(CHUNK * 8, length - pos), offset + pos)
        if not chunk:
            raise CorruptObject(h, "pack file ends before the object")
        write(chunk)
        pos += len(chunk)


# -- validate --------------------------------------------------------------------------------------
def validate(container: Container, callback: Callback | None = None) -> ValidationReport:
    layout = container.layout
    index = container.index
    report = ValidationReport()
    report.invalid_loose_names = list(_loose.invalid_loose_names(layout))
    if callback:
        total = sum(len(_loose.list_shard(layout, s)) for s in _loose.list_shards(layout))
        callback("init", {"total": total, "description": "Loose objects"})
    for shard in _loose.list_shards(layout):
        for h in _loose.list_shard(layout, shard):
            try:
                with open(layout.loose_path(h), "rb") as handle:
                    if _hash_stream(container, handle.read) != h:
                        report.invalid_hashes_loose.append(h)
            except FileNotFoundError:
                continue  # packed and cleaned meanwhile
            report.checked_loose += 1
            if callback:
                callback("update", 1)
    if callback:
        callback("close", None)

    referenced = index.pack_ids()
    on_disk = set(list_pack_ids(layout))
    if os.path.exists(layout.pack_path(REPACK_PACK_ID)):
        on_disk.add(REPACK_PACK_ID)
    for pack_id in referenced:
        _validate_pack(container, pack_id, report, callback)
    report.unreferenced_pack_files = [str(p) for p in sorted(on_disk - set(referenced))]
    report.sandbox_leftovers = _loose.sandbox_entries(layout)
    report.pack_lock_files = sorted(
        n for n in os.listdir(layout.packs) if n.endswith(".lock") or n.startswith(TMP_LOCK_PREFIX)
    )
    report.duplicates = sorted(n for n in os.listdir(layout.duplicates) if not n.startswith("."))
    return report


def _validate_pack(
    container: Container, pack_id: int, report: ValidationReport, callback: Callback | None
) -> None:
    """validate() takes no lock, so a repack may replace a pack while it is being checked: if
    problems show up and the index changed meanwhile, check that pack again (a few times)."""
    index = container.index
    for _attempt in range(3):
        version = index.data_version()
        partial = ValidationReport()
        _validate_pack_once(container, pack_id, partial, callback)
        clean = partial.is_valid()
        if clean or index.data_version() == version:
            break
    for name in ValidationReport.ERRORS:
        getattr(report, name).extend(getattr(partial, name))
    report.checked_packed += partial.checked_packed


def _validate_pack_once(
    container: Container, pack_id: int, report: ValidationReport, callback: Callback | None
) -> None:
    layout = container.layout
    try:
        src = container.pack_files.open_uncached(pack_id)
    except FileNotFoundError:
        still_used = container.index.conn().execute(
            "SELECT 1 FROM db_object WHERE pack_id = ? LIMIT 1", (pack_id,)
        ).fetchone()
        if still_used:  # (else a concurrent repack removed it with its last rows)
            report.missing_pack_files.append(pack_id)
        return
    file_size = os.fstat(src.fd).st_size
    if callback:
        callback(
            "init", {"total": stats_count(container, pack_id), "description": f"Pack {pack_id}"}
        )
    hash_type = layout.config.hash_type
    current = 0
    for _rowid, h, compressed, size, offset, length in container.index.iter_pack_rows(pack_id):
        report.checked_packed += 1
        if offset < current and length:
            report.overlapping_packed.append(h)
        current = max(current, offset + length)
        if offset + length > file_size:
            report.rows_past_end_of_pack.append(h)
            continue
        hasher = new_hasher(hash_type)
        got = 0
        try:
            if compressed:
                # bounded output per step: a tiny compressed chunk may inflate enormously
                dobj = zlib.decompressobj()
                pos = 0
                pending = b""
                while not dobj.eof:
                    if not pending:
                        if pos >= length:
                            break
                        pending = os.pread(src.fd, min(CHUNK, length - pos), offset + pos)
                        if not pending:
                            break
                        pos += len(pending)
                    data = dobj.decompress(pending, CHUNK)
                    pending = dobj.unconsumed_tail
                    hasher.update(data)
                    got += len(data)
                    if got > size:
                        break  # more than promised: wrong size (and hash)
                if not dobj.eof and got <= size:
                    raise zlib.error("incomplete zlib stream")
            else:
                pos = 0
                while pos < length:
                    chunk = os.pread(src.fd, min(CHUNK * 8, length - pos), offset + pos)
                    hasher.update(chunk)
                    pos += len(chunk)
                got = pos
        except zlib.error:
            report.unreadable_packed.append(h)
            report.invalid_hashes_packed.append(h)
            continue
        if hasher.hexdigest() != h:
            report.invalid_hashes_packed.append(h)
        if got != size:
            report.invalid_sizes_packed.append(h)
        if callback:
            callback("update", 1)
    if callback:
        callback("close", None)
