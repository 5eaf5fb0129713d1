"""The public facade: `Container`, with disk-objectstore's method names.

It composes and carries no logic: each method validates its key(s) once and calls the module
that does the work on the container's `Parts` (parts.py): the read protocol (resolve.py), bulk
reads (bulk.py), loose writes (loose.py), pack writes (packing.py), maintenance, repack,
validate, counts (stats.py).

Threading: one Container may be shared by any number of threads. Per-thread state (SQLite read
connection, pack cache) lives in thread-locals; writers use their own connections; packers and
maintenance serialise on the container lock (locks.py). The parts are built once, on first use,
under a lock. After `os.fork()` the child opens its own connections and descriptors.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import IO, Any

from dosfs.container import bulk, compat, loose, maintenance, packing, repack, stats, validate
from dosfs.container.changes import Changes, Watermark, take_changes
from dosfs.container.config import ContainerConfig, Layout, create_container, read_config
from dosfs.container.index_contract import IndexAPI
from dosfs.container.locks import ContainerLock
from dosfs.container.meta import (
    MISSING_META,
    CleanReport,
    CompressMode,
    ObjectCount,
    ObjectMeta,
    TotalSize,
    ValidationIssues,
    ValidationReport,
)
from dosfs.container.packs import PackChooser
from dosfs.container.packstore import PackCache, PackStore
from dosfs.container.parts import Parts, open_parts
from dosfs.container.private_paths import DiskObjectstorePaths
from dosfs.container.readers import ObjectReader, ObjectStream
from dosfs.container.server_api import ServerAPI
from dosfs.container.snapshot import Snapshot, take_snapshot

Callback = Callable[[str, Any], None]


class Container(ServerAPI, DiskObjectstorePaths):
    """A disk-objectstore 1.x compatible container in `folder`."""

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        index_cache_kib: int = 8192,
        pack_store: Callable[[Layout], PackStore] | None = None,
        index: Callable[[Layout], IndexAPI] | None = None,
        index_mmap_kib: int = 256 * 1024,
    ) -> None:
        """`index_cache_kib`: SQLite page cache per reading thread; long-running services with
        many threads (the FUSE daemon) want it small, batch jobs large. `index_mmap_kib`: how
        much of packs.idx reads map instead of copying pages (a lookup ~2 µs faster of ~10;
        the pages read count in RSS: a server with an RSS budget passes 0). `pack_store`:
        makes the source of pack bytes for this container's layout (default: its packs/
        files), `index` the index (default: its packs.idx; see index_contract.py)."""
        self._folder = Path(folder).absolute()
        self._index_cache_kib = index_cache_kib
        self._index_mmap_kib = index_mmap_kib
        self._pack_store = pack_store
        self._index_factory = index
        self._parts: Parts | None = None
        self._load_lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------------------
    def _load(self) -> Parts:
        with self._load_lock:
            if self._parts is None:
                store = index = None
                if self._pack_store is not None or self._index_factory is not None:
                    layout = Layout(self._folder, read_config(self._folder))
                    if self._pack_store is not None:
                        store = self._pack_store(layout)
                    if self._index_factory is not None:
                        index = self._index_factory(layout)
                self._parts = open_parts(
                    self._folder, self._index_cache_kib, store, index, self._index_mmap_kib
                )
            return self._parts

    @property
    def parts(self) -> Parts:
        return self._parts or self._load()

    @property
    def folder(self) -> Path:
        return self._folder

    def get_folder(self) -> Path:
        return self._folder

    @property
    def layout(self) -> Layout:
        return self.parts.layout

    @property
    def index(self) -> IndexAPI:
        return self.parts.index

    @property
    def packs(self) -> PackCache:
        return self.parts.packs

    @property
    def lock(self) -> ContainerLock:
        return self.parts.lock

    @property
    def chooser(self) -> PackChooser:
        return self.parts.chooser

    def close(self) -> None:
        """Close SQLite connections and cached descriptors (the object stays usable)."""
        parts = self._parts
        if parts is not None:
            parts.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finaliser
            pass

    def __enter__(self) -> Container:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Container({str(self._folder)!r})"

    @property
    def is_initialised(self) -> bool:
        try:
            read_config(self._folder)
        except Exception:  # noqa: BLE001 - any problem means "not a usable container"
            return False
        return True

    def init_container(
        self,
        clear: bool = False,
        pack_size_target: int = 4 * 1024 * 1024 * 1024,
        loose_prefix_len: int = 2,
        hash_type: str = "sha256",
        compression_algorithm: str = "zlib+1",
    ) -> None:
        """Create an empty container (the folder must be empty or absent, unless clear=True)."""
        config = ContainerConfig.new(
            pack_size_target=pack_size_target,
            loose_prefix_len=loose_prefix_len,
            hash_type=hash_type,
            compression_algorithm=compression_algorithm,
        )
        self.close()
        with self._load_lock:
            self._parts = None
        create_container(self._folder, config, clear=clear)
        self._load()

    # -- configuration -------------------------------------------------------------------------
    @property
    def config(self) -> ContainerConfig:
        return self.layout.config

    @property
    def container_id(self) -> str:
        return self.layout.config.container_id

    @property
    def loose_prefix_len(self) -> int:
        return self.layout.config.loose_prefix_len

    @property
    def pack_size_target(self) -> int:
        return self.layout.config.pack_size_target

    @property
    def hash_type(self) -> str:
        return self.layout.config.hash_type

    @property
    def compression_algorithm(self) -> str:
        return self.layout.config.compression_algorithm

    @property
    def hash_length(self) -> int:
        return self.layout.hash_length

    def is_valid_hashkey(self, name: str) -> bool:
        """Exact length, lowercase hex (cheap: the FUSE layer calls it on every lookup)."""
        return (self._parts or self._load()).layout.is_valid_hashkey(name)

    # -- single-object reads -------------------------------------------------------------------
    def get_object_content(self, hashkey: str, *, verify: bool = False) -> bytes:
        """The whole object; a few microseconds for a small packed one. `verify`: hash it and
        raise CorruptObject unless it hashes to `hashkey`."""
        parts = self._parts or self._load()
        parts.layout.check_hashkey(hashkey)
        return parts.resolver.content(hashkey, verify)

    def open_object(self, hashkey: str) -> ObjectReader:
        """A reader pinned to the object's bytes as they are now (see readers.py)."""
        parts = self._parts or self._load()
        parts.layout.check_hashkey(hashkey)
        return parts.resolver.reader(hashkey)

    def get_object_meta(self, hashkey: str) -> ObjectMeta:
        parts = self._parts or self._load()
        parts.layout.check_hashkey(hashkey)
        return parts.resolver.meta(hashkey)

    def has_object(self, hashkey: str) -> bool:
        return self.has_objects([hashkey])[0]

    def has_objects(self, hashkeys: Sequence[str]) -> list[bool]:
        present = {h for h, meta in self.get_objects_meta(hashkeys)}
        return [h in present for h in hashkeys]

    @contextmanager
    def get_object_stream(self, hashkey: str, *, verify: bool = False) -> Iterator[ObjectStream]:
        """Context manager: a seekable stream (read/seek incl. SEEK_END/tell). `verify`: the read
        that reaches the end raises CorruptObject unless the object hashed to `hashkey`."""
        stream = ObjectStream(self.open_object(hashkey), self.hash_type if verify else None)
        try:
            yield stream
        finally:
            stream.close()

    @contextmanager
    def get_object_stream_and_meta(
        self, hashkey: str, *, verify: bool = False
    ) -> Iterator[tuple[ObjectStream, ObjectMeta]]:
        reader = self.open_object(hashkey)
        stream = ObjectStream(reader, self.hash_type if verify else None)
        try:
            yield stream, reader.meta
        finally:
            stream.close()

    # -- bulk reads ----------------------------------------------------------------------------
    @contextmanager
    def get_objects_stream_and_meta(
        self, hashkeys: Iterable[str], skip_if_missing: bool = True, *, verify: bool = False
    ) -> Iterator[Generator[tuple[str, Any, ObjectMeta], None, None]]:
        """Context manager -> generator of (hashkey, stream, meta), grouped by pack and sorted by
        offset; each stream is valid until the next item is requested."""
        generator = bulk.streams_and_meta(self.parts.resolver, hashkeys, skip_if_missing, verify)
        try:
            yield generator
        finally:
            generator.close()

    def get_objects_content(
        self, hashkeys: Iterable[str], skip_if_missing: bool = True, *, verify: bool = False
    ) -> dict[str, bytes | None]:
        """Many objects at once: one index query per 900 keys, packs read sequentially."""
        return bulk.get_contents(self.parts.resolver, hashkeys, skip_if_missing, verify)

    def get_objects_meta(
        self, hashkeys: Iterable[str], skip_if_missing: bool = True
    ) -> Iterator[tuple[str, ObjectMeta]]:
        for batch in bulk.iter_objects(self.parts.resolver, hashkeys, skip_if_missing, False):
            for h, info in zip(batch.keys, batch.infos, strict=True):
                yield h, bulk.as_meta(info)

    # -- listing and counting ------------------------------------------------------------------
    def iter_hashkeys(self, after: str | None = None) -> Iterator[str]:
        """Every object (loose or packed) once, ascending, strictly after `after`; streaming."""
        parts = self.parts
        return bulk.iter_hashkeys(parts.layout, parts.index, after)

    def list_all_objects(self) -> Iterator[str]:
        """All hash keys (ascending order; memory flat)."""
        return self.iter_hashkeys()

    def count_objects(self) -> ObjectCount:
        """Like disk-objectstore: loose counts loose files (also those already packed)."""
        return stats.count_objects(self.parts)

    def get_total_size(self) -> TotalSize:
        return stats.total_size(self.parts)

    # -- loose writes --------------------------------------------------------------------------
    def new_staged_object(self) -> loose.StagedObject:
        """A writable staging file in sandbox/; commit() makes it a loose object."""
        return loose.StagedObject(self.layout)

    def add_object(self, content: bytes) -> str:
        """Store bytes as a loose object (durable when this returns)."""
        return loose.write_bytes(self.layout, content)

    def add_streamed_object(self, stream: Any) -> str:
        """Store a stream (read in 1 MiB chunks, hashed on the fly) as a loose object."""
        return loose.write_stream(self.layout, stream)

    # -- pack writes and maintenance -----------------------------------------------------------
    # disk-objectstore's parameters, in its order and with its defaults (tests compare the
    # signatures); where dosfs's design makes one moot, it is accepted and said so.
    def add_objects_to_pack(
        self,
        content_list: Sequence[bytes],
        compress: bool | str | CompressMode = False,
        no_holes: bool = False,
        no_holes_read_twice: bool = True,
        callback: Callback | None = None,
        do_fsync: bool = True,
        do_commit: bool = True,
    ) -> list[str]:
        """Write objects straight into packs (maintenance: takes the container lock); their keys
        in input order. dosfs never writes a known object again, so `no_holes` is always in
        effect and `no_holes_read_twice` is moot; rows are committed per pack and at the end
        whatever `do_commit` says (there is no session to commit later). `do_fsync=False`
        skips the fsync before each commit (faster; a power loss can then lose indexed bytes)."""
        return packing.add_bytes_to_packs(
            self.parts, content_list, CompressMode.coerce(compress), callback=callback,
            fsync=do_fsync,
        )

    def add_streamed_object_to_pack(
        self,
        stream: Any,
        compress: bool | str | CompressMode = False,
        open_streams: bool = False,
        no_holes: bool = False,
        no_holes_read_twice: bool = True,
        callback: Callback | None = None,
        callback_size_hint: int = 0,
        do_fsync: bool = True,
        do_commit: bool = True,
    ) -> str:
        """One stream into a pack; `callback` reports its bytes (`callback_size_hint` is the
        total it announces). Other parameters as add_objects_to_pack."""
        return packing.add_streams_to_packs(
            self.parts, [stream], CompressMode.coerce(compress), open_streams, fsync=do_fsync,
            bytes_callback=callback, size_hint=callback_size_hint,
        )[0]

    def add_streamed_objects_to_pack(
        self,
        stream_list: Sequence[Any],
        compress: bool | str | CompressMode = False,
        open_streams: bool = False,
        no_holes: bool = False,
        no_holes_read_twice: bool = True,
        callback: Callback | None = None,
        do_fsync: bool = True,
        do_commit: bool = True,
    ) -> list[str]:
        """Like add_objects_to_pack, from streams read in 1 MiB chunks (with open_streams=True,
        each item is entered as a context manager to get the stream, as disk-objectstore's
        LazyOpener); `callback` counts streams."""
        if no_holes:
            compat.report_listing_existing(self.parts, callback)
        return packing.add_streams_to_packs(
            self.parts, stream_list, CompressMode.coerce(compress), open_streams,
            callback=callback, fsync=do_fsync,
        )

    def pack_all_loose(
        self,
        compress: bool | str | CompressMode = CompressMode.NO,
        validate_objects: bool = True,
        do_fsync: bool = True,
        callback: Callback | None = None,
        clean_loose_per_pack: bool = False,
    ) -> None:
        """Move loose objects into packs (the one packer; readers and loose writers may run).
        `validate_objects`: re-hash each one while packing (InconsistentContent if it differs);
        `callback` reports bytes; with clean_loose_per_pack, loose copies are removed after their
        rows are committed. An unreadable loose file is skipped (it stays loose)."""
        packing.pack_all_loose(
            self.parts,
            CompressMode.coerce(compress),
            validate_objects=validate_objects,
            fsync=do_fsync,
            callback=callback,
            clean_loose=clean_loose_per_pack,
        )

    def clean_storage(
        self, vacuum: bool = False, *, sandbox_max_age: float = 3600.0
    ) -> CleanReport:
        """Remove loose copies of packed objects, resolve duplicates/, remove abandoned sandbox
        files older than sandbox_max_age seconds, stale dosfs pack locks and repack leftovers;
        commit staging files a dead writer declared complete. Returns what it did."""
        return maintenance.clean_storage(self.parts, vacuum=vacuum, sandbox_max_age=sandbox_max_age)

    def repack(
        self,
        compress_mode: str | CompressMode = CompressMode.KEEP,
        callback: Callback | None = None,
    ) -> None:
        """Rewrite packs without holes (exclusive maintenance operation); packs without holes
        are left as they are (their progress is still reported). Ends with a VACUUM."""
        repack.repack(self.parts, CompressMode.coerce(compress_mode), callback=callback)

    def repack_pack(
        self,
        pack_id: str | int,
        compress_mode: str | CompressMode = CompressMode.KEEP,
        callback: Callback | None = None,
    ) -> None:
        """Rewrite one pack (even without holes), `callback` reporting bytes."""
        repack.repack_pack(self.parts, int(pack_id), CompressMode.coerce(compress_mode), callback)

    def delete_objects(self, hashkeys: Sequence[str]) -> list[str]:
        """Delete objects (loose files and index rows; pack bytes become holes until repack)."""
        return maintenance.delete_objects(self.parts, hashkeys)

    def validate(self, callback: Callback | None = None) -> ValidationIssues:
        """disk-objectstore's answer: lists of problem keys, all empty when the container is
        valid (`result.is_valid()`, or `not any(result.values())`). See validate_report for the
        whole report (warnings and counters)."""
        return ValidationIssues.of(self.validate_report(callback=callback))

    def validate_report(self, callback: Callback | None = None) -> ValidationReport:
        """Re-hash every object and check the packs; errors, warnings and counters."""
        return validate.validate(self.parts, callback=callback)

    def changes(self, since: Watermark | None, keys: Iterable[str] = ()) -> Changes:
        """Pinned packs and the index rows added since `since`, in O(change) when nothing was
        removed or moved (changes.py); `keys` are checked for rows in the same read."""
        parts = self.parts
        return take_changes(parts.layout, parts.packs.store.list_ids, since, keys)

    def snapshot(self, index_path: str) -> Snapshot:
        """The storage as it is now, for publishing or inspecting it whole: every pack file
        pinned open and a copy of the index at `index_path` naming only bytes they hold (see
        snapshot.py). Close it when done."""
        parts = self.parts
        return take_snapshot(parts.layout, parts.packs.store.list_ids, index_path)

    # -- disk-objectstore's other public methods (compat.py) ---------------------------------
    def lock_pack(
        self, pack_id: str, allow_repack_pack: bool = False
    ) -> AbstractContextManager[IO[bytes]]:
        """Context manager: `packs/<id>.lock` held, an append handle to the pack."""
        return compat.lock_pack(self.parts, pack_id, allow_repack_pack)

    def loosen_object(self, hashkey: str) -> Path:
        """Also store a packed object as a loose file; its path."""
        parts = self._parts or self._load()
        parts.layout.check_hashkey(hashkey)
        return compat.loosen_object(parts, hashkey)

    def get_lazy_loose_stream(self, hashkey: str) -> compat.LazyObjectStream:
        """A seekable stream of the object, opened on `with`. A malformed or unknown key raises
        NotExistent there, at `open_stream()`, as in disk-objectstore, not at this call."""
        parts = self._parts or self._load()

        def open_stream() -> ObjectStream:
            parts.layout.check_hashkey(hashkey)
            return ObjectStream(parts.resolver.reader(hashkey))

        return compat.LazyObjectStream(open_stream)

    def import_objects(
        self,
        hashkeys: Iterable[str],
        source_container: Any,
        compress: bool | str | CompressMode = False,
        target_memory_bytes: int = 104857600,
        callback: Callback | None = None,
        do_fsync: bool = True,
    ) -> dict[str, str]:
        """Copy objects from another container (dosfs or disk-objectstore) into packs; returns
        old key -> new key."""
        return compat.import_objects(
            self.parts, hashkeys, source_container, compress, target_memory_bytes, callback,
            do_fsync,
        )


__all__ = ["MISSING_META", "Container"]
