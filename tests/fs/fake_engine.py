"""An in-memory engine with the contract of ``dosfs.Container``, that fails on demand.

Used by the adapter tests to check every errno the mount answers without a kernel or a disk.
Failures: ``engine.fail[name] = exc`` raises ``exc`` from the call ``name`` (one of
``get_object_meta``, ``open_object``, ``new_staged_object``, ``iter_hashkeys``, ``pread``,
``pwrite``, ``fsync``, ``commit``, ``truncate``) every time until removed.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dosfs.container.decoding import check_hash
from dosfs.container.errors import InvalidHashKey, NotExistent
from dosfs.container.meta import ObjectMeta, ObjectType
from dosfs.container.verify import ObjectVerifier

HEX = set("0123456789abcdef")


class FakeReader:
    def __init__(self, engine: FakeEngine, hashkey: str) -> None:
        self.engine = engine
        self.hashkey = hashkey
        self.data = engine.objects[hashkey]  # pinned: later removals do not affect it
        self.meta = engine.get_object_meta(hashkey)
        self.size = len(self.data)
        self.compressed = bool(self.meta.pack_compressed)
        self.may_block = False  # in memory: never waits
        self.closed = False
        self.threads: list[int] = []

    def where(self) -> str:
        return f"fake {self.meta.type.value} object"

    def clone(self) -> FakeReader:
        other = FakeReader(self.engine, self.hashkey)
        other.data = self.data
        return other

    def sequential(self) -> None:
        pass

    def pread(self, offset: int, size: int) -> bytes:
        self.engine._maybe_fail("pread")
        assert not self.closed, "pread after close"
        self.threads.append(threading.get_ident())
        return self.data[offset : offset + size]

    def close(self) -> None:
        self.closed = True
        self.engine.closed_readers += 1


class FakeStaged:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.buffer = bytearray()
        self.state = "open"
        self.fsyncs = 0
        self.path = "/fake/staged"
        self.complete = False

    @property
    def size(self) -> int:
        return len(self.buffer)

    def pwrite(self, data: bytes, offset: int, hash: bool = True) -> int:
        self.engine._maybe_fail("pwrite")
        assert self.state == "open"
        if offset > len(self.buffer):
            self.buffer.extend(b"\0" * (offset - len(self.buffer)))
        self.buffer[offset : offset + len(data)] = data
        return len(data)

    def hash_update(self, data: bytes, offset: int) -> None:
        pass  # the fake hashes at commit

    def mark_complete(self) -> None:
        self.complete = True

    def pread(self, offset: int, size: int) -> bytes:
        return bytes(self.buffer[offset : offset + size])

    def truncate(self, size: int) -> None:
        self.engine._maybe_fail("truncate")
        del self.buffer[size:]
        if size > len(self.buffer):
            self.buffer.extend(b"\0" * (size - len(self.buffer)))

    def fsync(self) -> None:
        self.engine._maybe_fail("fsync")
        self.fsyncs += 1

    def commit(self) -> str:
        assert self.state == "open"
        try:
            self.engine._maybe_fail("fsync")  # a real commit fsyncs the staged bytes first
            self.fsyncs += 1
            self.engine._maybe_fail("commit")
        except BaseException:
            self.state = "discarded"
            raise
        hashkey = hashlib.sha256(self.buffer).hexdigest()
        self.engine.objects[hashkey] = bytes(self.buffer)
        self.state = "committed"
        self.engine.commits.append(hashkey)
        return hashkey

    def discard(self) -> None:
        self.state = "discarded"
        self.engine.discards += 1


class FakeEngine:
    hash_length = 64
    index_may_block = False  # in memory
    hash_type = "sha256"

    def __init__(self, folder: Path | str = "/") -> None:
        self.folder = Path(folder)
        self.objects: dict[str, bytes] = {}
        self.snapshots_held = False  # entry_recent() until release_snapshot()
        self.packed: dict[str, dict[str, Any]] = {}
        self.fail: dict[str, BaseException] = {}
        self.calls: dict[str, int] = {}
        self.commits: list[str] = []
        self.discards = 0
        self.closed_readers = 0
        self.staged: list[FakeStaged] = []
        self.readers: list[FakeReader] = []
        self.rowids: dict[str, int] = {}  # packed objects' index row ids

    def _maybe_fail(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        exc = self.fail.get(name)
        if exc is not None:
            raise exc

    def add(self, data: bytes, *, packed: bool = False, compressed: bool = False) -> str:
        hashkey = hashlib.sha256(data).hexdigest()
        self.objects[hashkey] = data
        if packed:
            self.rowids.setdefault(hashkey, len(self.rowids) + 1)
            self.packed[hashkey] = {
                "pack_id": 3,
                "pack_offset": 1000,
                "pack_length": len(data) // 2 if compressed else len(data),
                "pack_compressed": compressed,
            }
        return hashkey

    def is_valid_hashkey(self, name: str) -> bool:
        self.calls["is_valid_hashkey"] = self.calls.get("is_valid_hashkey", 0) + 1
        return len(name) == self.hash_length and set(name) <= HEX

    def get_object_meta(self, hashkey: str) -> ObjectMeta:
        self._maybe_fail("get_object_meta")
        if not self.is_valid_hashkey(hashkey):
            raise InvalidHashKey(hashkey)
        if hashkey not in self.objects:
            raise NotExistent(hashkey)
        size = len(self.objects[hashkey])
        if hashkey in self.packed:
            p = self.packed[hashkey]
            return ObjectMeta(
                ObjectType.PACKED,
                size,
                p["pack_id"],
                p["pack_compressed"],
                p["pack_offset"],
                p["pack_length"],
            )
        return ObjectMeta(ObjectType.LOOSE, size)

    def open_object(self, hashkey: str) -> FakeReader:
        self._maybe_fail("open_object")
        if not self.is_valid_hashkey(hashkey):
            raise InvalidHashKey(hashkey)
        if hashkey not in self.objects:
            raise NotExistent(hashkey)
        reader = FakeReader(self, hashkey)
        self.readers.append(reader)
        return reader

    def new_staged_object(self) -> FakeStaged:
        self._maybe_fail("new_staged_object")
        staged = FakeStaged(self)
        self.staged.append(staged)
        return staged

    def iter_hashkeys(self, after: str | None = None) -> Iterator[str]:
        self._maybe_fail("iter_hashkeys")
        for hashkey in sorted(self.objects):
            if after is None or hashkey > after:
                yield hashkey

    def verifier(self, reader: Any, *, eager: bool, on_done: Any = None) -> ObjectVerifier:
        return ObjectVerifier(reader, self.hash_type, eager=eager, on_done=on_done)

    def check_hash(self, hashkey: str, data: bytes, where: str) -> None:
        check_hash(hashkey, self.hash_type, data, where)

    def block_sums(self, hashkey: str, size: int) -> None:
        return None  # the adapter tests hash whole objects

    def recover_staged(self) -> list[str]:
        return []

    def checkpoint(self) -> None:
        pass

    def entry(self, hashkey: str) -> tuple[int | None, int]:
        if not self.is_valid_hashkey(hashkey):  # validated before anything touches storage
            raise InvalidHashKey(hashkey)
        meta = self.get_object_meta(hashkey)
        return self.rowids.get(hashkey) if hashkey in self.packed else None, int(meta.size or 0)

    def entry_recent(self, hashkey: str) -> tuple[int | None, int]:
        self.snapshots_held = True
        return self.entry(hashkey)

    def release_snapshot(self) -> None:
        self.snapshots_held = False

    def entry_by_id(self, rowid: int) -> tuple[str, int] | None:
        for hashkey, rid in self.rowids.items():
            if rid == rowid and hashkey in self.objects and hashkey in self.packed:
                return hashkey, len(self.objects[hashkey])
        return None

    def open_object_by_id(self, rowid: int) -> FakeReader:
        found = self.entry_by_id(rowid)
        if found is None:
            raise NotExistent(f"row {rowid}")
        return self.open_object(found[0])

    def iter_entries(self, after: str | None = None) -> Iterator[tuple[str, int, int | None]]:
        for hashkey in self.iter_hashkeys(after):
            yield hashkey, len(self.objects[hashkey]), (
                self.rowids.get(hashkey) if hashkey in self.packed else None
            )

    def resolve_prefix(self, prefix: str) -> str | None:
        if len(prefix) < 8 or set(prefix) - HEX:
            return None
        found = [h for h in self.objects if h.startswith(prefix)]
        return found[0] if len(found) == 1 else None


if TYPE_CHECKING:  # mypy (pyproject's `files`) holds the fake to the engine contract
    from dosfs.engine import EngineLike

    def _conforms(engine: FakeEngine) -> EngineLike:
        return engine
