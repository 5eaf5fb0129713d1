"""One published generation opened for reading: a dosfs Container whose pack store is remote
and whose index is the generation's tables read on demand (remote/tableindex.py), or, for a
generation published before tables existed (format 1), its index snapshot fetched whole into a
private folder.

Why a Container: resolve, streams, bulk reads and verification are then the same code as for a
local container (the engine's readers never fork into a remote copy). RemoteContainer opens one
generation; the s3 mount (remote/engine.py) opens each new one it sees and retires the old.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import zlib
from pathlib import Path

import obstore
from obstore.store import S3Store

from dosfs.container import Container
from dosfs.remote.cache import ExtentCache
from dosfs.remote.fetch import FetchPool
from dosfs.remote.layout import Generation, remote_error
from dosfs.remote.packstore import RemotePackStore
from dosfs.remote.tableindex import TableIndex
from dosfs.remote.url import RemoteError, RemoteURL

#: SQLite page cache per connection of a generation's index (KiB), as the local daemon's
INDEX_CACHE_KIB = 1024


class OpenGeneration:
    """A generation's index (a private copy) and the Container reading it."""

    def __init__(
        self,
        store: S3Store,
        url: RemoteURL,
        generation: Generation,
        cache: ExtentCache,
        *,
        timeout: float,
        pool: FetchPool | None = None,
        index_cache_kib: int | None = None,
    ) -> None:
        self.generation = generation
        self.number = generation.number
        self._tmp = tempfile.mkdtemp(prefix=f"dosfs-remote-{generation.number}-")
        folder = Path(self._tmp) / "container"
        self.packs = RemotePackStore(store, url, generation, cache, timeout=timeout, pool=pool)
        self.index: TableIndex | None = None
        try:
            _make_folder(generation, folder)
            if generation.tables:  # opened here, not on first use: it may wait on the server
                self.index = TableIndex(generation, self.packs)
            else:
                _fetch_index(store, url, generation, folder)
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise
        index = self.index
        kwargs = {} if index_cache_kib is None else {"index_cache_kib": index_cache_kib}
        self.container = Container(
            folder,
            pack_store=lambda _layout: self.packs,
            index=None if index is None else (lambda _layout: index),
            **kwargs,
        )

    def close(self) -> None:
        try:
            self.container.close()
        finally:
            shutil.rmtree(self._tmp, ignore_errors=True)


def _make_folder(generation: Generation, folder: Path) -> None:
    for sub in ("loose", "packs", "sandbox", "duplicates"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(generation.config))


def _fetch_index(store: S3Store, url: RemoteURL, generation: Generation, folder: Path) -> None:
    # Streamed and inflated piece by piece: the snapshot is ~100 B per object zlib'ed (94 MiB
    # at 10^6), and holding it whole (blob, copy, inflated) cost 530 MiB per 10^6 objects.
    inflate = zlib.decompressobj()
    try:
        with open(folder / "packs.idx", "wb") as out:
            for chunk in obstore.get(store, url.key(generation.index_key)).stream(
                min_chunk_size=1 << 20
            ):
                out.write(inflate.decompress(chunk))
            out.write(inflate.flush())
    except Exception as exc:  # the server's errors, and a local disk that is full
        raise remote_error(exc, url) from exc
    if not inflate.eof:
        raise RemoteError(f"{url}: the index snapshot of generation {generation.number} is cut")
