"""RemoteContainer: the read API of Container over one published generation.

Why it is a Container and not a copy of its readers: the generation's index snapshot is
fetched into a private folder once, and the container engine reads it with a RemotePackStore
behind its pack-store seam, so resolve, streams, bulk reads and verification are the same code
as for a local container. Every read verifies by default: bytes from a server are not trusted.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import obstore

from dosfs.container import Container
from dosfs.container.config import Layout
from dosfs.remote.cache import BlockCache
from dosfs.remote.layout import Generation, read_head, remote_error
from dosfs.remote.packstore import RemotePackStore
from dosfs.remote.url import RemoteError, make_store, parse_url

#: in-memory block cache when no cache_dir is given
DEFAULT_CACHE = 256 * 1024 * 1024


class RemoteContainer:
    """Read-only access to `s3://bucket/prefix` as published by `dosfs push`."""

    def __init__(
        self,
        target: str,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        cache_size: int = DEFAULT_CACHE,
        timeout: float = 30.0,
    ) -> None:
        self.url = parse_url(target)
        self.store = make_store(self.url, timeout=timeout)
        generation = read_head(self.store, self.url)
        if generation is None:
            raise RemoteError(f"{self.url}: nothing published there (run 'dosfs push' first)")
        self.generation: Generation = generation
        self._tmp = tempfile.mkdtemp(prefix="dosfs-remote-")
        folder = Path(self._tmp) / "container"
        self._fetch_index(folder)
        blocks = Path(cache_dir) if cache_dir is not None else None
        self.cache = BlockCache(cache_size, blocks)
        self.packs = RemotePackStore(self.store, self.url, generation, self.cache)
        self._container = Container(folder, pack_store=lambda _layout: self._pack_store())

    def _pack_store(self) -> RemotePackStore:
        return self.packs

    def _fetch_index(self, folder: Path) -> None:
        for sub in ("loose", "packs", "sandbox", "duplicates"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(self.generation.config))
        try:
            data = obstore.get(self.store, self.url.key(self.generation.index_key)).bytes()
        except Exception as exc:
            raise remote_error(exc, self.url) from exc
        (folder / "packs.idx").write_bytes(zlib.decompress(bytes(data)))

    # the read API (verify on by default: remote bytes are checked against their names)
    def get_object_content(self, hashkey: str, *, verify: bool = True) -> bytes:
        return self._container.get_object_content(hashkey, verify=verify)

    @contextmanager
    def get_object_stream(self, hashkey: str, *, verify: bool = True) -> Iterator[Any]:
        with self._container.get_object_stream(hashkey, verify=verify) as stream:
            yield stream

    def get_objects_content(
        self, hashkeys: list[str], skip_if_missing: bool = True, *, verify: bool = True
    ) -> dict[str, bytes | None]:
        return self._container.get_objects_content(hashkeys, skip_if_missing, verify=verify)

    @contextmanager
    def get_objects_stream_and_meta(
        self, hashkeys: list[str], skip_if_missing: bool = True, *, verify: bool = True
    ) -> Iterator[Any]:
        with self._container.get_objects_stream_and_meta(
            hashkeys, skip_if_missing, verify=verify
        ) as triplets:
            yield triplets

    def get_objects_meta(self, hashkeys: Iterable[str]) -> Any:
        return self._container.get_objects_meta(list(hashkeys))

    def has_objects(self, hashkeys: list[str]) -> list[bool]:
        return self._container.has_objects(hashkeys)

    def count_objects(self) -> Any:
        return self._container.count_objects()

    def list_all_objects(self) -> Iterator[str]:
        return self._container.list_all_objects()

    @property
    def layout(self) -> Layout:
        return self._container.layout

    def close(self) -> None:
        self._container.close()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> RemoteContainer:
        return self

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
