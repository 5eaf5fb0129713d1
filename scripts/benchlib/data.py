"""Test data: deterministic where both sides must see the same objects, cheap to regenerate in every
child process (so no child has to receive megabytes of objects through a pipe)."""

from __future__ import annotations

import base64
import hashlib
import os
import random
from collections.abc import Iterator
from pathlib import Path

CHUNK = 1024 * 1024


def small_objects(count: int, seed: int = 1) -> list[bytes]:
    """`count` objects of 0-1000 random bytes (a few tiny ones repeat, as in real data)."""
    rng = random.Random(seed)
    sizes = [rng.randrange(0, 1001) for _ in range(count)]
    blob = rng.randbytes(sum(sizes))
    out = []
    pos = 0
    for size in sizes:
        out.append(blob[pos : pos + size])
        pos += size
    return out


def tiny_object(i: int) -> bytes:
    """Object `i` of the big-index containers: unique, a few bytes, its hash computable."""
    return b"dosfs-bench-%d" % i


def kib_object(i: int) -> bytes:
    """Object `i` of the metadata figures: 1 KiB, unique."""
    head = b"dosfs-meta-%d:" % i
    return (head * (1024 // len(head) + 1))[:1024]


def tiny_hashkey(i: int) -> str:
    return hashlib.sha256(tiny_object(i)).hexdigest()


def random_chunks(total: int) -> Iterator[bytes]:
    """Incompressible bytes, 1 MiB at a time."""
    left = total
    while left > 0:
        n = min(CHUNK, left)
        yield os.urandom(n)
        left -= n


def compressible_chunks(total: int, seed: int = 7) -> Iterator[bytes]:
    """Base64 text of random bytes: zlib level 1 shrinks it to about 3/4, like many text formats."""
    rng = random.Random(seed)
    left = total
    while left > 0:
        n = min(CHUNK, left)
        raw = rng.randbytes((n * 3 + 3) // 4)
        yield base64.b64encode(raw)[:n]
        left -= n


def write_file(path: Path, chunks: Iterator[bytes]) -> str:
    """Write the chunks to `path`, return their sha256 (the native side's plain copy)."""
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for chunk in chunks:
            f.write(chunk)
            digest.update(chunk)
    return digest.hexdigest()


def prime_page_cache(folder: Path, nbytes: int) -> None:
    """Write `nbytes` to a scratch file and delete it (never reaches the disk).

    Why: on a VM with free page reporting (virtio-balloon), memory freed a while ago has been handed
    back to the host, and the next big write or cold read pays a host page fault per page: measured
    here, writing 1 GiB into the page cache took 0.22 s or 1.6-2.5 s depending on that alone. Done
    right before each timed side of a figure that fills the page cache, both sides start equal.
    """
    buf = bytes(CHUNK)
    path = folder / f".prime-{os.getpid()}"
    with open(path, "wb", buffering=0) as f:
        left = nbytes
        while left > 0:
            left -= f.write(buf[: min(CHUNK, left)])
    path.unlink()
