"""The public facade: `Container`, with disk-objectstore's method names.

Threading: one Container may be shared by any number of threads. Per-thread state (SQLite read
connection, pack descriptor cache) lives in thread-locals; writers use their own connections;
packers and maintenance serialise on the container lock (locks.py).

Read protocol (the concurrency contract, docs/format.md): look in the index; if absent, open the
loose file; if that is gone too, look in the index again (a packer commits rows before it removes
loose files, so the object was packed in between).
"""

from __future__ import annotations

import io
import os
import shutil
import zlib
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from dosfs.container import loose as _loose
from dosfs.container.config import (
    DUPLICATES_NAME,
    INDEX_NAME,
    LOOSE_NAME,
    PACKS_NAME,
    SANDBOX_NAME,
    ContainerConfig,
    Layout,
    read_config,
    write_config,
)
from dosfs.container.errors import CorruptObject, NotExistent, NotInitialised
from dosfs.container.index import Index, create_schema
from dosfs.container.locks import ContainerLock
from dosfs.container.meta import (
    MISSING_META,
    CompressMode,
    ObjectCount,
    ObjectMeta,
    ObjectType,
    TotalSize,
    ValidationReport,
)
from dosfs.container.packs import PackChooser, PackFd, PackFiles, list_pack_ids
from dosfs.container.streams import (
    CompressedReader,
    ObjectReader,
    ObjectStream,
    RawReader,
    pread_exact,
)

#: how often a read re-resolves an object that moved under it before giving up
_RETRIES = 20

Callback = Callable[[str, Any], None]


class Container:
    """A disk-objectstore 1.x compatible container in `folder`."""

    def __init__(self, folder: str | os.PathLike[str], *, index_cache_kib: int = 8192) -> None:
        """`index_cache_kib`: SQLite page cache per reading thread; long-running services with
        many threads (the FUSE daemon) want it small, batch jobs large."""
        self._folder = Path(folder).absolute()
        self._index_cache_kib = index_cache_kib
        self._layout: Layout | None = None
        self._index: Index | None = None
        self._packs: PackFiles | None = None
        self._chooser: PackChooser | None = None
        self._lock: ContainerLock | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def folder(self) -> Path:
        return self._folder

    def get_folder(self) -> Path:
        return self._folder

    def _load(self) -> Layout:
        config = read_config(self._folder)
        layout = Layout(self._folder, config)
        self._index = Index(layout.index, self._index_cache_kib)
        self._packs = PackFiles(layout)
        self._chooser = PackChooser(layout)
        self._lock = ContainerLock(layout.pack_lock)
        self._layout = layout
        return layout

    @property
    def layout(self) -> Layout:
        return self._layout or self._load()

    def _part(self, name: str) -> Any:
        """One of the parts `_load` builds together (loading the container on first use)."""
        if self._layout is None:
            self._load()
        return getattr(self, name)

    @property
    def index(self) -> Index:
        return cast(Index, self._part("_index"))

    @property
    def pack_files(self) -> PackFiles:
        return cast(PackFiles, self._part("_packs"))

    @property
    def lock(self) -> ContainerLock:
        return cast(ContainerLock, self._part("_lock"))

    @property
    def chooser(self) -> PackChooser:
        return cast(PackChooser, self._part("_chooser"))

    def close(self) -> None:
        """Close SQLite connections and cached descriptors (the object stays usable)."""
        if self._index is not None:
            self._index.close()
        if self._packs is not None:
            self._packs.clear()

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
        if clear:
            self.close()
            if self._folder.exists():
                shutil.rmtree(self._folder)
        elif self.is_initialised:
            raise FileExistsError(
                f"{self._folder} is already a container; use clear=True to wipe it"
            )
        self._folder.mkdir(parents=True, exist_ok=True)
        if any(self._folder.iterdir()):
            raise FileExistsError(f"{self._folder} is not empty; refusing to initialise it")
        for name in (LOOSE_NAME, SANDBOX_NAME, DUPLICATES_NAME, PACKS_NAME):
            (self._folder / name).mkdir()
        create_schema(str(self._folder / INDEX_NAME))
        write_config(self._folder, config)  # last: only now is the folder a container
        self._layout = None
        self._index = None
        self._packs = None
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
        return (self._layout or self._load()).is_valid_hashkey(name)

    # -- single-object reads -------------------------------------------------------------------
    def _resolve_packed(
        self, hashkey: str, row: tuple[int, int, int, int, int, int]
    ) -> PackFd | None:
        """The pinned pack descriptor for a row, or None if the row must be read again."""
        index = self._index
        packs = self._packs
        assert index is not None and packs is not None
        pack_id, version = row[4], row[5]
        try:
            return packs.get(pack_id, version, index.data_version)
        except FileNotFoundError:
            if index.data_version() != version:
                return None
            raise CorruptObject(hashkey, f"pack file {pack_id} is missing") from None

    def get_object_content(self, hashkey: str) -> bytes:
        """The whole object; a few microseconds for a small packed one."""
        layout = self._layout or self._load()
        layout.check_hashkey(hashkey)
        index = self._index
        assert index is not None
        for _ in range(_RETRIES):
            row = index.lookup(hashkey)
            if row is None:
                try:
                    with open(layout.loose_path(hashkey), "rb", buffering=0) as handle:
                        return handle.read()  # type: ignore[no-any-return]
                except FileNotFoundError:
                    pass
                row = index.lookup(hashkey)
                if row is None:
                    raise NotExistent(f"no object with hash key {hashkey}")
            pfd = self._resolve_packed(hashkey, row)
            if pfd is None:
                continue
            compressed, size, offset, length = row[0], row[1], row[2], row[3]
            data = pread_exact(pfd.fd, length, offset)
            if len(data) != length:
                assert self._packs is not None
                self._packs.forget(row[4])
                if index.data_version() != row[5]:
                    continue
                raise CorruptObject(
                    hashkey, f"pack {row[4]} ends before the object ({offset}+{length})"
                )
            if compressed:
                try:
                    data = zlib.decompress(data)
                except zlib.error as exc:
                    raise CorruptObject(hashkey, f"zlib error: {exc}") from None
            if len(data) != size:
                raise CorruptObject(hashkey, f"read {len(data)} bytes, index says {size}")
            return data
        raise CorruptObject(hashkey, "the object kept moving while being read")

    def open_object(self, hashkey: str) -> ObjectReader:
        """A reader pinned to the object's bytes as they are now (see streams.py)."""
        layout = self._layout or self._load()
        layout.check_hashkey(hashkey)
        index = self._index
        assert index is not None
        for _ in range(_RETRIES):
            row = index.lookup(hashkey)
            if row is None:
                try:
                    fd = os.open(layout.loose_path(hashkey), os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    row = index.lookup(hashkey)
                    if row is None:
                        raise NotExistent(f"no object with hash key {hashkey}") from None
                else:
                    st = os.fstat(fd)
                    pinned = PackFd(fd, st.st_dev, st.st_ino, None)
                    meta = ObjectMeta(ObjectType.LOOSE, st.st_size)
                    return RawReader(hashkey, pinned, 0, st.st_size, meta)
            pfd = self._resolve_packed(hashkey, row)
            if pfd is None:
                continue
            return self._reader_for(hashkey, pfd, row)
        raise CorruptObject(hashkey, "the object kept moving while being opened")

    @staticmethod
    def _reader_for(hashkey: str, pfd: PackFd, row: Sequence[int]) -> ObjectReader:
        compressed, size, offset, length, pack_id = row[0], row[1], row[2], row[3], row[4]
        meta = ObjectMeta(ObjectType.PACKED, size, pack_id, bool(compressed), offset, length)
        if compressed:
            return CompressedReader(hashkey, pfd, offset, length, size, meta)
        if length != size:
            raise CorruptObject(hashkey, f"uncompressed but length {length} != size {size}")
        return RawReader(hashkey, pfd, offset, size, meta)

    def get_object_meta(self, hashkey: str) -> ObjectMeta:
        layout = self._layout or self._load()
        layout.check_hashkey(hashkey)
        index = self._index
        assert index is not None
        row = index.lookup(hashkey)
        if row is None:
            try:
                return ObjectMeta(ObjectType.LOOSE, os.stat(layout.loose_path(hashkey)).st_size)
            except FileNotFoundError:
                pass
            row = index.lookup(hashkey)
            if row is None:
                raise NotExistent(f"no object with hash key {hashkey}")
        return ObjectMeta(ObjectType.PACKED, row[1], row[4], bool(row[0]), row[2], row[3])

    def has_object(self, hashkey: str) -> bool:
        try:
            self.get_object_meta(hashkey)
        except NotExistent:
            return False
        return True

    def has_objects(self, hashkeys: Sequence[str]) -> list[bool]:
        from dosfs.container.bulk import iter_objects

        present = {h for batch in iter_objects(self, hashkeys, True, False) for h, _p, _i in batch}
        return [h in present for h in hashkeys]

    @contextmanager
    def get_object_stream(self, hashkey: str) -> Iterator[ObjectStream]:
        """Context manager: a seekable stream (read/seek incl. SEEK_END/tell)."""
        stream = ObjectStream(self.open_object(hashkey))
        try:
            yield stream
        finally:
            stream.close()

    @contextmanager
    def get_object_stream_and_meta(self, hashkey: str) -> Iterator[tuple[ObjectStream, ObjectMeta]]:
        reader = self.open_object(hashkey)
        stream = ObjectStream(reader)
        try:
            yield stream, reader.meta
        finally:
            stream.close()

    # -- bulk reads ----------------------------------------------------------------------------
    @contextmanager
    def get_objects_stream_and_meta(
        self, hashkeys: Iterable[str], skip_if_missing: bool = True
    ) -> Iterator[Generator[tuple[str, Any, ObjectMeta], None, None]]:
        """Context manager -> generator of (hashkey, stream, meta), grouped by pack and sorted by
        offset; each stream is valid until the next item is requested."""
        from dosfs.container.bulk import as_meta, iter_objects

        def gen() -> Generator[tuple[str, Any, ObjectMeta], None, None]:
            for batch in iter_objects(self, hashkeys, skip_if_missing, True):
                for h, payload, info in batch:
                    if payload is None:
                        yield h, None, as_meta(info)
                    elif isinstance(payload, ObjectReader):
                        stream = ObjectStream(payload)
                        try:
                            yield h, stream, payload.meta
                        finally:
                            stream.close()
                    else:
                        small = io.BytesIO(payload)  # C-speed read/seek/tell
                        try:
                            yield h, small, as_meta(info)
                        finally:
                            small.close()

        generator = gen()
        try:
            yield generator
        finally:
            generator.close()

    def get_objects_content(
        self, hashkeys: Iterable[str], skip_if_missing: bool = True
    ) -> dict[str, bytes | None]:
        """Many objects at once: one index query per 900 keys, packs read sequentially."""
        from dosfs.container.bulk import iter_objects

        out: dict[str, bytes | None] = {}
        for batch in iter_objects(self, hashkeys, skip_if_missing, True):
            for h, payload, _info in batch:
                if payload is None:
                    out[h] = None
                elif isinstance(payload, ObjectReader):
                    try:
                        out[h] = payload.pread(0, payload.size)
                    finally:
                        payload.close()
                else:
                    out[h] = bytes(payload)
        return out

    def get_objects_meta(
        self, hashkeys: Iterable[str], skip_if_missing: bool = True
    ) -> Iterator[tuple[str, ObjectMeta]]:
        from dosfs.container.bulk import as_meta, iter_objects

        for batch in iter_objects(self, hashkeys, skip_if_missing, False):
            for h, _payload, info in batch:
                yield h, as_meta(info)

    # -- listing and counting ------------------------------------------------------------------
    def iter_hashkeys(self, after: str | None = None) -> Iterator[str]:
        """Every object (loose or packed) once, ascending, strictly after `after`; streaming."""
        from dosfs.container.bulk import iter_hashkeys

        return iter_hashkeys(self, after)

    def list_all_objects(self) -> Iterator[str]:
        """All hash keys (ascending order; memory flat)."""
        return self.iter_hashkeys()

    def count_objects(self) -> ObjectCount:
        """Like disk-objectstore: loose counts loose files (also those already packed)."""
        layout = self.layout
        loose = sum(len(_loose.list_shard(layout, s)) for s in _loose.list_shards(layout))
        return ObjectCount(
            packed=self.index.count(), loose=loose, pack_files=len(list_pack_ids(layout))
        )

    def get_total_size(self) -> TotalSize:
        layout = self.layout
        packed, packed_on_disk = self.index.sizes()
        packfiles = 0
        for pack_id in list_pack_ids(layout):
            try:
                packfiles += os.stat(layout.pack_path(pack_id)).st_size
            except FileNotFoundError:
                pass
        loose_total = 0
        for shard in _loose.list_shards(layout):
            for h in _loose.list_shard(layout, shard):
                try:
                    loose_total += os.stat(layout.loose_path(h)).st_size
                except FileNotFoundError:
                    pass
        try:
            index_size = os.stat(layout.index).st_size
        except FileNotFoundError:
            index_size = 0
        return TotalSize(
            total_size_packed=packed,
            total_size_packed_on_disk=packed_on_disk,
            total_size_packfiles_on_disk=packfiles,
            total_size_packindexes_on_disk=index_size,
            total_size_loose=loose_total,
        )

    # -- loose writes --------------------------------------------------------------------------
    def new_staged_object(self) -> _loose.StagedObject:
        """A writable staging file in sandbox/; commit() makes it a loose object."""
        return _loose.StagedObject(self.layout)

    def add_object(self, content: bytes) -> str:
        """Store bytes as a loose object (durable when this returns)."""
        return _loose.write_bytes(self.layout, content)

    def add_streamed_object(self, stream: Any) -> str:
        """Store a stream (read in 1 MiB chunks, hashed on the fly) as a loose object."""
        return _loose.write_stream(self.layout, stream)

    # -- pack writes and maintenance (packing.py / maintenance.py) ------------------------------
    def add_objects_to_pack(
        self,
        content_list: Sequence[bytes],
        compress: bool | str | CompressMode = False,
        **_ignored: Any,
    ) -> list[str]:
        """Write objects straight into packs (maintenance: takes the container lock).
        Returns hash keys in input order. disk-objectstore's tuning kwargs are accepted."""
        from dosfs.container.packing import add_bytes_to_packs

        return add_bytes_to_packs(self, content_list, CompressMode.coerce(compress))

    def add_streamed_objects_to_pack(
        self,
        stream_list: Sequence[Any],
        compress: bool | str | CompressMode = False,
        open_streams: bool = False,
        **_ignored: Any,
    ) -> list[str]:
        """Like add_objects_to_pack, from streams (with open_streams=True, each item is entered
        as a context manager to get the stream, as disk-objectstore's LazyOpener)."""
        from dosfs.container.packing import add_streams_to_packs

        return add_streams_to_packs(self, stream_list, CompressMode.coerce(compress), open_streams)

    def add_streamed_object_to_pack(
        self, stream: Any, compress: bool | str | CompressMode = False, **kwargs: Any
    ) -> str:
        return self.add_streamed_objects_to_pack([stream], compress=compress, **kwargs)[0]

    def pack_all_loose(
        self,
        compress: bool | str | CompressMode = False,
        validate_objects: bool = True,
        callback: Callback | None = None,
        clean_loose_per_pack: bool = False,
        **_ignored: Any,
    ) -> None:
        """Move loose objects into packs (the one packer; readers and loose writers may run).
        With clean_loose_per_pack, loose copies are removed after their rows are committed."""
        from dosfs.container.packing import pack_all_loose

        pack_all_loose(
            self,
            CompressMode.coerce(compress),
            validate_objects=validate_objects,
            callback=callback,
            clean_loose=clean_loose_per_pack,
        )

    def clean_storage(self, vacuum: bool = False, sandbox_max_age: float = 3600.0) -> None:
        """Remove loose copies of packed objects, resolve duplicates/, remove abandoned sandbox
        files older than sandbox_max_age seconds, stale dosfs pack locks and a leftover `-1`."""
        from dosfs.container.maintenance import clean_storage

        clean_storage(self, vacuum=vacuum, sandbox_max_age=sandbox_max_age)

    def repack(
        self,
        compress_mode: str | CompressMode = CompressMode.KEEP,
        callback: Callback | None = None,
    ) -> None:
        """Rewrite packs without holes (exclusive maintenance operation)."""
        from dosfs.container.maintenance import repack

        repack(self, CompressMode.coerce(compress_mode), callback=callback)

    def delete_objects(self, hashkeys: Sequence[str]) -> list[str]:
        """Delete objects (loose files and index rows; pack bytes become holes until repack)."""
        from dosfs.container.maintenance import delete_objects

        return delete_objects(self, hashkeys)

    def validate(self, callback: Callback | None = None) -> ValidationReport:
        """Re-hash every object and check the packs; see ValidationReport."""
        from dosfs.container.maintenance import validate

        return validate(self, callback=callback)


__all__ = ["Container", "MISSING_META", "NotInitialised"]
