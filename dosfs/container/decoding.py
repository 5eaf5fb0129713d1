"""The one place stored bytes are decoded and checked: a packed row read in one piece
(`decode`), a row streamed in bounded chunks (`iter_stored`), and the hash check itself.
The random-access decoder of big compressed objects is readers.CompressedReader."""

from __future__ import annotations

import zlib
from collections.abc import Iterator

from dosfs.container.config import new_hasher
from dosfs.container.errors import CorruptObject
from dosfs.container.packstore import PackSource

#: bytes per read when hashing a whole object
HASH_CHUNK = 1024 * 1024


def decode(hashkey: str, compressed: int, size: int, length: int, data: bytes) -> bytes:
    """The object's bytes from the `length` stored bytes of a packed row, or CorruptObject."""
    if compressed:
        try:
            data = zlib.decompress(data)
        except zlib.error as exc:
            raise CorruptObject(hashkey, f"zlib error: {exc}") from None
    elif length != size:
        raise CorruptObject(hashkey, f"uncompressed but length {length} != size {size}")
    if len(data) != size:
        raise CorruptObject(hashkey, f"read {len(data)} bytes, index says {size}")
    return data


def iter_stored(
    hashkey: str, source: PackSource, compressed: int, offset: int, length: int
) -> Iterator[bytes]:
    """The object's bytes from its `length` stored bytes at `offset`, in chunks of at most
    HASH_CHUNK (a tiny compressed chunk may inflate enormously: output is bounded per step).
    Raises CorruptObject for short reads and broken zlib streams; the caller checks the size."""
    pos = 0
    if not compressed:
        while pos < length:
            chunk = source.read_at(offset + pos, min(HASH_CHUNK * 8, length - pos))
            if not chunk:
                raise CorruptObject(hashkey, f"pack ends at object offset {pos} of {length}")
            yield chunk
            pos += len(chunk)
        return
    dobj = zlib.decompressobj()
    pending = b""
    try:
        while not dobj.eof:
            if not pending:
                if pos >= length:
                    raise CorruptObject(hashkey, "zlib stream incomplete")
                pending = source.read_at(offset + pos, min(HASH_CHUNK, length - pos))
                if not pending:
                    raise CorruptObject(hashkey, f"pack ends at compressed offset {pos}")
                pos += len(pending)
            data = dobj.decompress(pending, HASH_CHUNK)
            pending = dobj.unconsumed_tail
            if data:
                yield data
    except zlib.error as exc:
        raise CorruptObject(hashkey, f"zlib error: {exc}") from None


def check_hash(hashkey: str, hash_type: str, data: bytes | memoryview, where: str) -> None:
    """CorruptObject unless `data` hashes to `hashkey`."""
    hasher = new_hasher(hash_type)
    hasher.update(data)
    got = hasher.hexdigest()
    if got != hashkey:
        raise CorruptObject(hashkey, f"content hashes to {got} ({where})")
