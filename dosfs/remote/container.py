"""RemoteContainer: the read API of Container over one published generation.

Why it is a Container and not a copy of its readers: the generation's index snapshot is
fetched into a private folder once (remote/generation.py), and the container engine reads it
with a RemotePackStore behind its pack-store seam, so resolve, streams, bulk reads and
verification are the same code as for a local container. Every read verifies by default:
bytes from a server are not trusted.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from dosfs.container.config import Layout
from dosfs.remote.cache import ExtentCache
from dosfs.remote.generation import OpenGeneration
from dosfs.remote.layout import Generation, read_head
from dosfs.remote.url import RemoteError, make_store, parse_url

#: the extent cache: on disk in cache_dir (as the s3 mount's), else in memory, kept small so
#: that reading any amount keeps the process small (a second pass then fetches again: give a
#: cache_dir, as big as what is read, to make it fetch nothing)
DEFAULT_DISK_CACHE = 1024 * 1024 * 1024
DEFAULT_MEMORY_CACHE = 32 * 1024 * 1024


class RemoteContainer:
    """Read-only access to `s3://bucket/prefix` as published by `dosfs push`.

    `cache_dir`: keep fetched bytes on disk there (shareable with s3 mounts of the same URL),
    at most `cache_size` bytes (default 1 GiB; without cache_dir, 32 MiB in memory).
    `timeout`: seconds a read waits for the server before RemoteIOError (a RemoteError)."""

    def __init__(
        self,
        target: str,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        cache_size: int | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.url = parse_url(target)
        self.store = make_store(self.url, timeout=timeout)
        generation = read_head(self.store, self.url)
        if generation is None:
            raise RemoteError(f"{self.url}: nothing published there (run 'dosfs push' first)")
        self.generation: Generation = generation
        folder = Path(cache_dir) if cache_dir is not None else None
        if cache_size is None:
            cache_size = DEFAULT_MEMORY_CACHE if folder is None else DEFAULT_DISK_CACHE
        self.cache = ExtentCache(cache_size, folder)
        self._open = OpenGeneration(self.store, self.url, generation, self.cache, timeout=timeout)
        self.packs = self._open.packs
        self._container = self._open.container

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
        self._open.close()
        self.packs.pool.close()

    def __enter__(self) -> RemoteContainer:
        return self

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
