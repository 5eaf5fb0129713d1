"""Fixtures for engine tests: fresh containers in tmp_path, deterministic random content."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest

from dosfs import Container


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "container"


@pytest.fixture
def container(folder: Path) -> Container:
    c = Container(folder)
    c.init_container()
    yield c
    c.close()


@pytest.fixture
def small_packs(folder: Path) -> Container:
    """Packs roll over after 10 KiB, so tests see several packs."""
    c = Container(folder)
    c.init_container(pack_size_target=10 * 1024)
    yield c
    c.close()


@pytest.fixture
def rand() -> random.Random:
    return random.Random(1234)


@pytest.fixture
def make_blobs(rand: random.Random) -> Callable[[int, int], list[bytes]]:
    """n distinct blobs of 0..max_size bytes, half of them compressible."""

    def make(n: int, max_size: int = 2000) -> list[bytes]:
        out: list[bytes] = []
        seen: set[bytes] = set()
        while len(out) < n:
            size = rand.randint(0, max_size)
            if rand.random() < 0.5:
                blob = rand.randbytes(size)
            else:
                blob = (rand.choice([b"abc", b"hello world ", b"\0"]) * size)[:size]
            blob += len(out).to_bytes(4, "big") if size else b""
            if blob not in seen:
                seen.add(blob)
                out.append(blob)
        return out

    return make
