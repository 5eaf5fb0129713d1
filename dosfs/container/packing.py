"""Writing packs: direct pack writes (add_objects_to_pack & co) and pack_all_loose.

All of them hold the container lock (one packer / maintenance operation at a time) and append
through a `PackSession`: buffered appends to the current pack, rollover to a new pack once the
current one has reached pack_size_target, and commits in batches — each commit is *fsync the pack
bytes, then one executemany of the rows in one transaction*. So the index never points at bytes
that are not durable; a crash leaves at most unreferenced bytes at a pack's end (a harmless
hole that repack removes; see docs/format.md).

No holes from duplicates: keys already in the index are not written; a streamed object whose key
turns out to be known is cut off again before anything references it.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import operator
import os
import threading
import zlib
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import accumulate, repeat
from typing import Any

from dosfs.container import loose as _loose
from dosfs.container.blocksums import MIN_SIZE as SUMS_MIN_SIZE
from dosfs.container.blocksums import BlockSummer
from dosfs.container.config import new_hasher
from dosfs.container.db import write_transaction
from dosfs.container.errors import InconsistentContent
from dosfs.container.index_sql import SQL_INSERT
from dosfs.container.meta import CompressMode
from dosfs.container.packs import IOV_MAX, PackAppender
from dosfs.container.parts import Parts
from dosfs.container.progress import Callback, Progress
from dosfs.container.restarts import MIN_SIZE, Points, RestartingCompressor, compress_whole

log = logging.getLogger("dosfs.container")

CHUNK = 1024 * 1024
SAMPLE = 64 * 1024
#: compress (mode auto) when a level-1 sample shrinks below this ratio
AUTO_RATIO = 0.9
#: commit (fsync + index rows) at least this often
BATCH_ROWS = 200_000
BATCH_BYTES = 1024 * 1024 * 1024
#: loose keys handled per round of pack_all_loose (memory bound)
LOOSE_ROUND = 20_000


_hexdigest = operator.methodcaller("hexdigest")


class _Background:
    """One call on a thread of its own; `result()` waits and re-raises what it raised."""

    def __init__(self, fn: Callable[[], None]) -> None:
        self._fn = fn
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="dosfs-fsync", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            self._error = exc

    def join(self) -> None:
        self._thread.join()

    def result(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error


def worth_compressing(sample: bytes | memoryview) -> bool:
    """Cheap guess for mode 'auto': does zlib level 1 save at least 10% on a sample?"""
    if not len(sample):
        return False
    return len(zlib.compress(sample, 1)) < AUTO_RATIO * len(sample)


class PackSession:
    """Appends objects to packs with rollover and batched durable commits."""

    def __init__(
        self,
        parts: Parts,
        on_commit: Callable[[list[str]], None] | None = None,
        fsync: bool = True,
    ) -> None:
        """`fsync=False` (disk-objectstore's do_fsync=False): pack bytes are not fsynced before
        the index commit, so a power loss can leave rows that point at lost bytes."""
        self.parts = parts
        self.fsync = fsync
        self.layout = parts.layout
        self.index = parts.index
        self.level = self.layout.config.compression_level
        self.target = self.layout.config.pack_size_target
        self.conn = self.index.write_conn()
        self.app: PackAppender | None = None
        self.rows: list[tuple[str, int, int, int, int, int]] = []
        #: restart points of compressed objects in `rows` (dosfs-restarts.sqlite)
        self.restart_rows: list[tuple[str, int, int, int, Points]] = []
        #: block sums of big streamed objects in `rows` (dosfs-blocksums.sqlite)
        self.sum_rows: list[tuple[str, int, bytes]] = []
        self.pending: set[str] = set()
        self.uncommitted_bytes = 0
        self.on_commit = on_commit

    # -- pack management -----------------------------------------------------------------------
    def appender(self) -> PackAppender:
        app = self.app
        if app is not None and app.tell() >= self.target:
            self.finish_pack()
            app = None
        if app is None:
            app = PackAppender(self.layout, self.parts.chooser.choose())
            self.app = app
        return app

    def commit(self) -> None:
        """Make appended bytes durable, then publish their rows (one transaction).

        The fsync runs on a helper thread while this one inserts the rows into the open
        write transaction; COMMIT waits for it. Nothing is visible, nor durable, before the
        COMMIT (a crash before it rolls the rows back), so the index still never points at
        bytes that are not on disk; the two waits (the disk, SQLite's B-trees) overlap."""
        app = self.app
        if app is None or not self.rows:
            return
        app.flush()
        syncing = _Background(app.sync_flushed) if self.fsync else None
        conn = self.conn
        try:
            # (rows stay in offset order: ids then follow offsets, which keeps
            # disk-objectstore's validate, ordering by offset, happy about empty objects
            # sharing an offset)
            with write_transaction(conn):
                conn.executemany(SQL_INSERT, self.rows)
                if syncing is not None:
                    syncing.result()
        finally:
            if syncing is not None:
                syncing.join()
        app.mark_committed()
        if self.restart_rows:
            self.parts.restarts.record(self.restart_rows)
            self.restart_rows = []
        if self.sum_rows and self.parts.blocksums is not None:
            self.parts.blocksums.record(self.sum_rows)
        self.sum_rows = []
        keys = [r[0] for r in self.rows]
        self.rows = []
        self.pending.clear()
        self.uncommitted_bytes = 0
        if self.on_commit is not None:
            self.on_commit(keys)

    def finish_pack(self) -> None:
        self.commit()
        if self.app is not None:
            self.app.close()
            self.app = None

    def close(self, ok: bool) -> None:
        try:
            if ok:
                self.finish_pack()
            elif self.app is not None:
                self.app.abort()
                self.app = None
        finally:
            self.conn.close()

    def __enter__(self) -> PackSession:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.close(ok=exc_type is None)

    def _added(
        self, app: PackAppender, hashkey: str, compressed: bool, size: int, offset: int,
        points: Points | None = None,
    ) -> None:
        length = app.tell() - offset
        self.rows.append((hashkey, int(compressed), size, offset, length, app.pack_id))
        if points:
            self.restart_rows.append((hashkey, app.pack_id, offset, length, points))
        self.pending.add(hashkey)
        self.uncommitted_bytes += length
        if len(self.rows) >= BATCH_ROWS or self.uncommitted_bytes >= BATCH_BYTES:
            self.commit()

    # -- writing objects -----------------------------------------------------------------------
    def write_many(self, items: Iterable[tuple[str, bytes, bool]]) -> None:
        """(hashkey, content, compress) items, in a tight loop: one buffered append stream,
        one row tuple per object; rollover and batch commits as in write_bytes."""
        level = self.level
        target = self.target
        compress_fn = zlib.compress
        app = self.appender()
        pack_id = app.pack_id
        pos = app.tell()
        rows = self.rows
        for hashkey, content, compress in items:
            if pos >= target:
                self.finish_pack()
                app = self.appender()
                pack_id = app.pack_id
                pos = app.tell()
                rows = self.rows
            if not compress:
                data = content
            elif len(content) < MIN_SIZE:
                data = compress_fn(content, level)
            else:
                data, points = compress_whole(content, level)
                self.restart_rows.append((hashkey, pack_id, pos, len(data), points))
            n = len(data)
            app.write(data)
            rows.append((hashkey, int(compress), len(content), pos, n, pack_id))
            pos += n
            self.uncommitted_bytes += n
            if len(rows) >= BATCH_ROWS or self.uncommitted_bytes >= BATCH_BYTES:
                self.commit()
                rows = self.rows

    def write_plain(
        self, keys: Sequence[str], contents: Sequence[bytes], progress: Progress
    ) -> None:
        """Uncompressed objects (distinct, not yet stored), in bulk: per run of up to IOV_MAX
        objects, one writev and rows built by zip, with rollover and batch commits as in
        write_many, and no Python step per object (it was most of a direct pack write)."""
        n = len(keys)
        i = 0
        while i < n:
            app = self.appender()  # a new pack once this one has reached its target
            pos = app.tell()
            chunk = contents[i : i + IOV_MAX]
            sizes = list(map(len, chunk))
            starts = list(accumulate(sizes, initial=pos))
            # objects that start below the target go into this pack (it may end past it)
            cut = bisect_left(starts, self.target, 1, len(chunk))
            if cut < len(chunk):
                chunk, sizes = chunk[:cut], sizes[:cut]
            app.write_all(list(chunk))
            pack_id = app.pack_id
            self.rows.extend(
                zip(keys[i : i + cut], repeat(0), sizes, starts, sizes, repeat(pack_id))
            )
            self.uncommitted_bytes += starts[cut] - pos
            i += cut
            progress.update(cut)
            if len(self.rows) >= BATCH_ROWS or self.uncommitted_bytes >= BATCH_BYTES:
                self.commit()

    def write_bytes(self, hashkey: str, content: bytes, compress: bool) -> None:
        app = self.appender()
        offset = app.tell()
        data, points = compress_whole(content, self.level) if compress else (content, [])
        app.write(data)
        self._added(app, hashkey, compress, len(content), offset, points)

    def write_stream(
        self,
        read: Callable[[int], bytes],
        mode: CompressMode,
        name: str | None = None,
        verify: bool = True,
    ) -> str:
        """Stream an object into the pack, hashing (and maybe compressing) on the fly.
        `name`: the key the object is known by (a loose file); with verify, a content whose
        hash differs raises InconsistentContent; without, the name is trusted."""
        first = read(SAMPLE)
        if mode is CompressMode.AUTO:
            compress = worth_compressing(first)
        else:
            compress = mode is CompressMode.YES
        app = self.appender()
        offset = app.tell()
        hasher = new_hasher(self.layout.config.hash_type) if verify or name is None else None
        summer = BlockSummer() if hasher is not None else None
        cobj = RestartingCompressor(self.level) if compress else None
        size = 0
        chunk = first
        while chunk:
            if hasher is not None:
                hasher.update(chunk)
            if summer is not None:
                summer.update(chunk)
            size += len(chunk)
            app.write(cobj.compress(chunk) if cobj is not None else chunk)
            chunk = read(CHUNK)
        if cobj is not None:
            app.write(cobj.flush())
        hashkey = str(hasher.hexdigest()) if hasher is not None else str(name)
        if name is not None and hashkey != name:
            app.truncate_to(offset)
            raise InconsistentContent(
                f"loose object {name} has content with hash {hashkey}; not packed (run validate)"
            )
        if hashkey in self.pending or self.index.lookup(hashkey) is not None:
            app.truncate_to(offset)  # already stored: leave no hole
            return hashkey
        self._added(app, hashkey, compress, size, offset,
                    cobj.points if cobj is not None else None)
        if summer is not None and size > SUMS_MIN_SIZE:
            self.sum_rows.append((hashkey, size, summer.sums()))
        return hashkey


def add_bytes_to_packs(
    parts: Parts,
    contents: Sequence[bytes],
    mode: CompressMode,
    *,
    callback: Callback | None = None,
    fsync: bool = True,
) -> list[str]:
    """Hash all, skip known keys, append the rest in one buffered pass, one fsync per commit.
    Progress: objects, as disk-objectstore's 'Bulk storing'."""
    hash_fn = getattr(hashlib, parts.hash_type)
    keys = list(map(_hexdigest, map(hash_fn, contents)))
    if not keys:
        return keys
    known = parts.index.existing(keys)

    progress = Progress(callback)
    if mode is CompressMode.NO:
        # distinct keys in first-seen order, minus those stored already (same key, same bytes)
        fresh = dict(zip(keys, contents, strict=True))
        for hashkey in known:
            fresh.pop(hashkey, None)
        with parts.lock.hold("write objects to packs"), PackSession(parts, fsync=fsync) as session:
            progress.init(len(keys), "Bulk storing")
            session.write_plain(list(fresh), list(fresh.values()), progress)
            progress.update(len(keys) - len(fresh))
        progress.close()
        return keys

    def todo() -> Iterator[tuple[str, bytes, bool]]:
        fixed = mode is CompressMode.YES
        for hashkey, content in zip(keys, contents, strict=True):
            progress.update(1)
            if hashkey in known:
                continue
            known.add(hashkey)
            if mode is CompressMode.AUTO:
                yield hashkey, content, worth_compressing(memoryview(content)[:SAMPLE])
            else:
                yield hashkey, content, fixed

    with parts.lock.hold("write objects to packs"), PackSession(parts, fsync=fsync) as session:
        progress.init(len(keys), "Bulk storing")
        session.write_many(todo())
    progress.close()
    return keys


def add_streams_to_packs(
    parts: Parts,
    streams: Sequence[Any],
    mode: CompressMode,
    open_streams: bool,
    *,
    callback: Callback | None = None,
    fsync: bool = True,
    bytes_callback: Callback | None = None,
    size_hint: int = 0,
) -> list[str]:
    """Streams straight into packs; each is read in 1 MiB chunks (memory flat). Progress:
    `callback` counts streams ('Bulk storing'); `bytes_callback` counts the bytes read, of
    `size_hint` expected (disk-objectstore's single streamed object, 'Streamed object')."""
    keys: list[str] = []
    progress = Progress(callback)
    read_progress = Progress(bytes_callback)

    def counted(read: Callable[[int], bytes]) -> Callable[[int], bytes]:
        if bytes_callback is None:
            return read

        def read_counted(n: int) -> bytes:
            data = read(n)
            read_progress.update(len(data))
            return data

        return read_counted

    with parts.lock.hold("write objects to packs"), PackSession(parts, fsync=fsync) as session:
        progress.init(len(streams), "Bulk storing")
        read_progress.init(size_hint, "Streamed object")
        for item in streams:
            if open_streams:
                with item as stream:
                    keys.append(session.write_stream(counted(stream.read), mode))
            else:
                keys.append(session.write_stream(counted(item.read), mode))
            progress.update(1)
    progress.close()
    read_progress.close()
    return keys


def _remove_loose(parts: Parts, keys: Iterable[str]) -> None:
    layout = parts.layout
    for hashkey in keys:
        try:
            os.unlink(layout.loose_path(hashkey))
        except FileNotFoundError:
            pass


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def pack_all_loose(
    parts: Parts,
    mode: CompressMode,
    validate_objects: bool = True,
    *,
    fsync: bool = True,
    callback: Callback | None = None,
    clean_loose: bool = False,
) -> None:
    """Pack every loose object not yet packed, in rounds (memory flat for millions).
    Loose files are removed (with clean_loose) only after their rows are committed. A loose file
    that cannot be read (permissions) is skipped, as disk-objectstore does. Progress: bytes of
    the loose files (the total is their size, as disk-objectstore's)."""
    layout = parts.layout
    if mode is CompressMode.KEEP:
        mode = CompressMode.NO  # loose objects are never compressed
    on_commit = (lambda keys: _remove_loose(parts, keys)) if clean_loose else None
    progress = Progress(callback)
    with parts.lock.hold("pack loose objects"):
        if callback:
            total = sum(_size(layout.loose_path(h)) for h in _loose.iter_loose(layout))
            progress.init(total, "Packing loose objects")
        with PackSession(parts, on_commit=on_commit, fsync=fsync) as session:
            round_keys: list[str] = []

            def run_round() -> None:
                known = parts.index.existing(round_keys, session.conn)
                if clean_loose and known:
                    _remove_loose(parts, known)
                for hashkey in round_keys:
                    path = layout.loose_path(hashkey)
                    if hashkey in known:
                        if callback:
                            progress.update(_size(path))
                        continue
                    try:
                        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                    except FileNotFoundError:
                        continue  # removed meanwhile (e.g. by another container's delete)
                    except PermissionError as exc:
                        log.warning("not packing %s: %s (it stays loose)", hashkey, exc)
                        continue
                    try:
                        size = os.fstat(fd).st_size
                        session.write_stream(
                            functools.partial(os.read, fd),
                            mode,
                            name=hashkey,
                            verify=validate_objects,
                        )
                    finally:
                        os.close(fd)
                    progress.update(size)
                round_keys.clear()

            for shard in _loose.list_shards(layout):
                round_keys.extend(_loose.list_shard(layout, shard))
                if len(round_keys) >= LOOSE_ROUND:
                    run_round()
            if round_keys:
                run_round()
    progress.close()
