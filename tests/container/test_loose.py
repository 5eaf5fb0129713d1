"""Loose writes: sandbox, atomic publication, staged objects, failure cleanup."""

from __future__ import annotations

import errno
import hashlib
import io
import os
from pathlib import Path

import pytest

from dosfs import Container, NotExistent, ObjectType
from dosfs.container import loose as loose_mod


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_add_object_is_loose_and_sharded(container: Container, folder: Path) -> None:
    h = container.add_object(b"content")
    assert h == sha(b"content")
    assert (folder / "loose" / h[:2] / h[2:]).read_bytes() == b"content"
    assert os.listdir(folder / "sandbox") == []
    meta = container.get_object_meta(h)
    assert meta.type == ObjectType.LOOSE == "loose"
    assert meta["size"] == 7 and meta.get("pack_id") is None


def test_duplicate_costs_nothing(container: Container, folder: Path) -> None:
    h1 = container.add_object(b"same")
    h2 = container.add_streamed_object(io.BytesIO(b"same"))
    assert h1 == h2
    assert os.listdir(folder / "sandbox") == []
    assert container.count_objects().loose == 1


def test_streamed_object_large(container: Container) -> None:
    data = os.urandom(3 * 1024 * 1024 + 5)
    h = container.add_streamed_object(io.BytesIO(data))
    assert h == sha(data)
    assert container.get_object_content(h) == data


def test_stream_without_readinto(container: Container) -> None:
    class OnlyRead:
        def __init__(self, data: bytes) -> None:
            self._b = io.BytesIO(data)

        def read(self, n: int = -1) -> bytes:
            return self._b.read(n)

    assert container.add_streamed_object(OnlyRead(b"abc" * 1000)) == sha(b"abc" * 1000)


def test_empty_object(container: Container) -> None:
    h = container.add_object(b"")
    assert h == sha(b"")
    assert container.get_object_content(h) == b""


def test_flat_layout(tmp_path: Path) -> None:
    c = Container(tmp_path / "c")
    c.init_container(loose_prefix_len=0)
    h = c.add_object(b"flat")
    assert (tmp_path / "c" / "loose" / h).exists()
    assert list(c.iter_hashkeys()) == [h]


def test_staged_sequential(container: Container) -> None:
    s = container.new_staged_object()
    assert s.pwrite(b"hello ", 0) == 6
    s.pwrite(b"world", 6)
    assert s.size == 11 and s.pread(0, 5) == b"hello"
    s.fsync()
    h = s.commit()
    assert h == sha(b"hello world") and container.get_object_content(h) == b"hello world"
    assert s.closed
    with pytest.raises(ValueError):
        s.pwrite(b"x", 0)


def test_staged_random_order_and_overwrite(container: Container) -> None:
    s = container.new_staged_object()
    s.pwrite(b"world", 6)
    s.pwrite(b"hello ", 0)
    s.pwrite(b"W", 6)
    assert s.commit() == sha(b"hello World")


def test_staged_truncate(container: Container) -> None:
    s = container.new_staged_object()
    s.pwrite(b"abcdef", 0)
    s.truncate(3)
    assert s.commit() == sha(b"abc")
    s = container.new_staged_object()
    s.pwrite(b"ab", 0)
    s.truncate(4)  # zero-filled extension
    assert s.commit() == sha(b"ab\0\0")
    s = container.new_staged_object()
    s.truncate(0)
    assert s.commit() == sha(b"")


def test_staged_discard_leaves_nothing(container: Container, folder: Path) -> None:
    s = container.new_staged_object()
    s.pwrite(b"abc", 0)
    assert len(os.listdir(folder / "sandbox")) == 1
    s.discard()
    s.discard()
    assert os.listdir(folder / "sandbox") == []
    assert container.count_objects().loose == 0
    with container.new_staged_object() as s2:
        s2.pwrite(b"x", 0)
    assert os.listdir(folder / "sandbox") == []


def test_commit_failure_removes_staging_file(
    container: Container, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = container.new_staged_object()
    s.pwrite(b"doomed", 0)

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(loose_mod.os, "fsync", no_space)
    with pytest.raises(OSError) as info:
        s.commit()
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert os.listdir(folder / "sandbox") == []
    with pytest.raises(NotExistent):
        container.get_object_content(sha(b"doomed"))


def test_stream_failure_removes_staging_file(container: Container, folder: Path) -> None:
    class Broken(io.RawIOBase):
        def readinto(self, b):  # type: ignore[no-untyped-def]
            raise OSError(errno.EIO, "boom")

    with pytest.raises(OSError):
        container.add_streamed_object(Broken())
    assert os.listdir(folder / "sandbox") == []


def test_abandoned_detection(container: Container, folder: Path) -> None:
    s = container.new_staged_object()
    s.pwrite(b"x", 0)
    path = s.path
    assert not loose_mod.is_abandoned(path, 0, 1e18)  # flock held by its writer
    stray = folder / "sandbox" / "stray"
    stray.write_bytes(b"left by a crash")
    assert loose_mod.is_abandoned(str(stray), 0, 1e18)
    assert not loose_mod.is_abandoned(str(stray), 3600, os.stat(stray).st_mtime)
    container.clean_storage(sandbox_max_age=0)
    assert os.listdir(folder / "sandbox") == [os.path.basename(path)]
    s.discard()


class HasherCount:
    """Counts fresh hashers: commit() makes one only when it has to re-read the file."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = loose_mod.new_hasher

        def counting(hash_type: str) -> object:
            self.calls += 1
            return real(hash_type)

        monkeypatch.setattr(loose_mod, "new_hasher", counting)


def test_split_hash_in_order_needs_no_rehash(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = container.new_staged_object()
    count = HasherCount(monkeypatch)
    chunks = [os.urandom(1000 + i) for i in range(5)]
    offset = 0
    for chunk in chunks:
        assert s.pwrite(chunk, offset, hash=False) == len(chunk)
        s.hash_update(chunk, offset)
        offset += len(chunk)
    s.pwrite(b"tail", offset)  # default pwrite keeps hashing after a caught-up hash_update
    assert s.commit() == sha(b"".join(chunks) + b"tail")
    assert count.calls == 0


def test_split_hash_lagging_behind_writes(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    """All writes first, hashes after (the hasher thread lagging): still no re-read."""
    s = container.new_staged_object()
    count = HasherCount(monkeypatch)
    s.pwrite(b"aaaa", 0, hash=False)
    s.pwrite(b"bbbb", 4, hash=False)
    s.hash_update(b"aaaa", 0)
    s.hash_update(b"bbbb", 4)
    assert s.commit() == sha(b"aaaabbbb")
    assert count.calls == 0


@pytest.mark.parametrize(
    "case",
    ["skipped", "interrupted", "out_of_order", "not_written", "overwrite", "hashing_write_early"],
)
def test_split_hash_falls_back_to_rehash(
    container: Container, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    s = container.new_staged_object()
    count = HasherCount(monkeypatch)
    s.pwrite(b"aaaa", 0, hash=False)
    s.pwrite(b"bbbb", 4, hash=False)
    expected = b"aaaabbbb"
    if case == "interrupted":
        s.hash_update(b"aaaa", 0)
    elif case == "out_of_order":
        s.hash_update(b"bbbb", 4)
        s.hash_update(b"aaaa", 0)
    elif case == "not_written":
        s.hash_update(b"aaaa", 0)
        s.hash_update(b"bbbb", 4)
        s.hash_update(b"cccc", 8)  # never written: must not enter the hash
    elif case == "overwrite":
        s.pwrite(b"XX", 2, hash=False)
        s.hash_update(b"aaaa", 0)  # stale bytes: must not be trusted
        s.hash_update(b"bbbb", 4)
        expected = b"aaXXbbbb"
    elif case == "hashing_write_early":
        s.pwrite(b"cc", 8)  # hash=True while [0, 8) is not hashed yet
        s.hash_update(b"aaaa", 0)
        s.hash_update(b"bbbb", 4)
        expected = b"aaaabbbbcc"
    assert s.commit() == sha(expected)
    assert count.calls == 1


def test_split_hash_after_truncate(container: Container, monkeypatch: pytest.MonkeyPatch) -> None:
    s = container.new_staged_object()
    HasherCount(monkeypatch)
    s.pwrite(b"aaaabbbb", 0, hash=False)
    s.truncate(4)
    s.hash_update(b"aaaabbbb", 0)  # reaches past the cut: refused
    assert s.commit() == sha(b"aaaa")


def test_hash_update_after_commit_or_discard_is_ignored(container: Container) -> None:
    s = container.new_staged_object()
    s.pwrite(b"data", 0, hash=False)
    assert s.commit() == sha(b"data")
    s.hash_update(b"data", 0)  # a late hasher thread must not fail or change anything
    d = container.new_staged_object()
    d.pwrite(b"data", 0, hash=False)
    d.discard()
    d.hash_update(b"data", 0)
    with pytest.raises(ValueError):
        d.pwrite(b"x", 4, hash=False)


def test_split_hash_concurrent_threads(container: Container) -> None:
    """A writer thread and a hasher thread, as the mount's write-behind uses them."""
    import queue
    import threading

    chunks = [os.urandom(64 * 1024) for _ in range(64)]
    for stop_early in (False, True):
        s = container.new_staged_object()
        q: queue.Queue[tuple[bytes, int] | None] = queue.Queue(4)

        def hasher(s: loose_mod.StagedObject, q: queue.Queue[tuple[bytes, int] | None]) -> None:
            while (job := q.get()) is not None:
                s.hash_update(*job)

        t = threading.Thread(target=hasher, args=(s, q))
        t.start()
        offset = 0
        for chunk in chunks:
            s.pwrite(chunk, offset, hash=False)
            q.put((chunk, offset))
            offset += len(chunk)
        if stop_early:
            # commit while the hasher may still be busy: it must re-read, never mix
            key = s.commit()
            q.put(None)
        else:
            q.put(None)
            t.join()
            key = s.commit()
        t.join()
        assert key == sha(b"".join(chunks))
