"""Loose objects: staged writes in sandbox/ and atomic publication into loose/.

A write goes to a fresh file in sandbox/ (O_EXCL, random name) and is hashed as it streams in;
commit = fsync the file, rename it to `loose/<prefix>/<rest>` (atomic) and fsync the folder that
received the entry. A file already at that name is trusted only if it is intact (same size, and
for small objects the same hash; a big one is simply replaced, which costs less than hashing
it), so re-adding content repairs a corrupt loose copy. Any failure removes the staging file, so
nothing partial is ever visible under loose/.

Every staging file is flock()ed by its writer while open, so `clean_storage` can tell an
abandoned file (writer crashed: lock gone) from one being written right now. A writer that has
decided a staging file is complete but may not get to commit it (the mount, for writes through
a mapping after close) renames it to `*.dosfs-complete`; `recover_complete` commits such files
once their writer is gone.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import uuid
from collections.abc import Iterator
from typing import Any

from dosfs.container.blocksums import MIN_SIZE as SUMS_MIN_SIZE
from dosfs.container.blocksums import BlockSumIndex, BlockSummer
from dosfs.container.config import Layout, fsync_dir, new_hasher

CHUNK = 1024 * 1024
STAGED_SUFFIX = ".dosfs-staged"
COMPLETE_SUFFIX = ".dosfs-complete"
#: an existing loose file of the right size up to this size is hashed before it is trusted;
#: a bigger one is replaced by the new copy (a rename costs less than hashing it)
VERIFY_EXISTING_MAX = 1024 * 1024


class StagedObject:
    """A writable staging file; `commit()` turns it into a loose object and returns its key."""

    def __init__(self, layout: Layout) -> None:
        self._layout = layout
        self.path = os.path.join(layout.sandbox, f"{uuid.uuid4().hex}{STAGED_SUFFIX}")
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pass  # only a hint for clean_storage
        self._hasher = new_hasher(layout.config.hash_type)
        #: block checksums of the same bytes (blocksums.py): recorded for big objects
        self._summer = BlockSummer()
        self._hashed = 0  # bytes [0, _hashed) are in the hasher
        self._appended = 0  # bytes [0, _appended) were written once, in order
        self._sequential = True  # False: the hasher is abandoned, commit re-reads the file
        self._size = 0
        self._lock = threading.Lock()
        self._hash_lock = threading.Lock()  # one hash_update at a time, outside _lock
        self._done = False

    @property
    def size(self) -> int:
        return self._size

    @property
    def closed(self) -> bool:
        return self._done

    def _check(self) -> int:
        if self._done:
            raise ValueError("staged object is already committed or discarded")
        return self._fd

    def pwrite(self, data: bytes | bytearray | memoryview, offset: int, hash: bool = True) -> int:
        """Write at `offset`; hashes on the fly while writes stay sequential.

        ``hash=False`` only writes: the caller feeds the same bytes, in order, to
        `hash_update` (e.g. from another thread, so hashing overlaps the next write).
        """
        if offset < 0:
            raise ValueError("negative offset")
        with self._lock:
            fd = self._check()
            view = memoryview(data)
            total = len(view)
            if not total:
                return 0  # a zero-length write never extends a file (POSIX)
            written = 0
            while written < total:
                n = os.pwrite(fd, view[written:], offset + written)
                if n == 0:  # pragma: no cover - regular files do not do this
                    raise OSError(errno.EIO, "pwrite wrote nothing")
                written += n
            if self._sequential:
                if offset != self._appended:
                    self._sequential = False  # overwrite or gap: hash again at commit
                elif hash and self._hashed != self._appended:
                    self._sequential = False  # unhashed bytes before it: hashing order lost
                else:
                    self._appended += total
                    if hash:
                        self._hasher.update(view)
                        self._summer.update(view)
                        self._hashed += total
            self._size = max(self._size, offset + total)
            return total

    def hash_update(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        """Feed bytes written with ``pwrite(hash=False)`` to the hasher, in order.

        Only the next in-order bytes are accepted; anything else (or bytes not written once
        in order) makes commit() re-read and hash the file instead. Hashing runs outside the
        write lock, so it overlaps pwrites from another thread.
        """
        view = memoryview(data)
        total = len(view)
        with self._hash_lock:
            with self._lock:
                if self._done or not self._sequential or not total:
                    return
                if offset != self._hashed or offset + total > self._appended:
                    self._sequential = False
                    return
            # no one else touches the hasher now: pwrite(hash=True) needs _hashed ==
            # _appended, and commit uses it only when _hashed == _size (both false here)
            self._hasher.update(view)
            self._summer.update(view)
            with self._lock:
                self._hashed += total
                if self._hashed > self._appended:
                    self._sequential = False  # truncated meanwhile

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Append (sequential convenience for streams)."""
        return self.pwrite(data, self._size)

    def pread(self, offset: int, size: int) -> bytes:
        with self._lock:
            return os.pread(self._check(), size, offset)

    def truncate(self, size: int) -> None:
        if size < 0:
            raise ValueError("negative size")
        with self._lock:
            fd = self._check()
            os.ftruncate(fd, size)
            if size < self._hashed or (size > self._hashed and size > self._size):
                # cut into hashed bytes, or a zero-filled extension: hash again at commit
                self._sequential = False
            self._appended = min(self._appended, size)
            self._size = size

    def fsync(self) -> None:
        with self._lock:
            os.fsync(self._check())

    def _digest(self) -> str:
        if self._sequential and self._hashed == self._size:
            return str(self._hasher.hexdigest())
        hasher = new_hasher(self._layout.config.hash_type)
        self._summer = BlockSummer()
        offset = 0
        while offset < self._size:
            chunk = os.pread(self._fd, min(CHUNK, self._size - offset), offset)
            if not chunk:
                raise OSError(errno.EIO, f"staging file {self.path} shrank while committing")
            hasher.update(chunk)
            self._summer.update(chunk)
            offset += len(chunk)
        return str(hasher.hexdigest())

    def mark_complete(self) -> None:
        """Say the staged bytes are a complete object (fsync first): if this writer dies before
        commit(), `recover_complete` commits them."""
        with self._lock:
            self._check()
            if self.path.endswith(COMPLETE_SUFFIX):
                return
            path = self.path[: -len(STAGED_SUFFIX)] + COMPLETE_SUFFIX
            os.rename(self.path, path)
            self.path = path

    def commit(self) -> str:
        """fsync, hash, rename into loose/, fsync the folder; closes this staged object."""
        with self._lock:
            self._check()
            try:
                os.fsync(self._fd)
                hashkey = self._digest()
                publish(self._layout, self.path, hashkey, self._size)
            except BaseException:
                self._finish(remove=True)
                raise
            self._finish(remove=False)
        if self._size > SUMS_MIN_SIZE and self._summer.size == self._size:
            # after the object is durable: a crash before this only costs a full hash later
            BlockSumIndex(str(self._layout.folder)).record(
                [(hashkey, self._size, self._summer.sums())])
        return hashkey

    def discard(self) -> None:
        """Drop the staged bytes (idempotent)."""
        with self._lock:
            if not self._done:
                self._finish(remove=True)

    def _finish(self, remove: bool) -> None:
        self._done = True
        try:
            os.close(self._fd)
        finally:
            if remove:
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass

    def __enter__(self) -> StagedObject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()

    def __del__(self) -> None:
        if not getattr(self, "_done", True):
            try:
                self._finish(remove=True)
            except OSError:
                pass


def publish(layout: Layout, staged_path: str, hashkey: str, size: int) -> None:
    """Move a complete, fsynced staging file to its loose place, durably; an intact file
    already there is kept (the staging file is dropped), a damaged one is replaced."""
    target = layout.loose_path(hashkey)
    if _intact(target, hashkey, size, layout.config.hash_type):
        os.unlink(staged_path)  # the same content is already there
        return
    place(layout, staged_path, hashkey)


def place(layout: Layout, path: str, hashkey: str) -> None:
    """rename() `path` to the loose name of `hashkey` (replacing whatever is there), creating
    the shard folder if needed, and fsync the folders whose entries changed."""
    shard = layout.loose_shard(hashkey)
    if layout.prefix_len and not os.path.isdir(shard):
        try:
            os.mkdir(shard)
        except FileExistsError:
            pass
        else:
            fsync_dir(layout.loose)
    os.rename(path, layout.loose_path(hashkey))
    fsync_dir(shard)


def _intact(path: str, hashkey: str, size: int, hash_type: str) -> bool:
    """Whether the loose file at `path` can be trusted to hold `size` bytes hashing to
    `hashkey` (False: replace it). Big files of the right size are not hashed (False too)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    if st.st_size != size or size > VERIFY_EXISTING_MAX:
        return False
    try:
        with open(path, "rb", buffering=0) as handle:
            data = handle.readall()
    except OSError:
        return False
    hasher = new_hasher(hash_type)
    hasher.update(data)
    return bool(hasher.hexdigest() == hashkey)


def file_digest(path: str, hash_type: str) -> str:
    """Hash of a file's content, read in chunks (memory flat)."""
    hasher = new_hasher(hash_type)
    with open(path, "rb", buffering=0) as handle:
        while chunk := handle.read(CHUNK):
            hasher.update(chunk)
    return str(hasher.hexdigest())


def recover_complete(layout: Layout) -> list[str]:
    """Commit `*.dosfs-complete` staging files whose writer is gone; returns their keys."""
    recovered: list[str] = []
    for name in sandbox_entries(layout):
        if not name.endswith(COMPLETE_SUFFIX):
            continue
        path = os.path.join(layout.sandbox, name)
        if not is_abandoned(path, 0.0, float("inf")):
            continue
        try:
            hashkey = file_digest(path, layout.config.hash_type)
            size = os.stat(path).st_size
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        except FileNotFoundError:
            continue
        publish(layout, path, hashkey, size)
        recovered.append(hashkey)
    return recovered


def write_stream(layout: Layout, stream: Any) -> str:
    """Stream `stream` (anything with read(n)) into a new loose object; returns its key."""
    staged = StagedObject(layout)
    try:
        readinto = getattr(stream, "readinto", None)
        if readinto is not None:
            buf = bytearray(CHUNK)
            view = memoryview(buf)
            while True:
                n = readinto(view)
                if not n:
                    break
                staged.write(view[:n])
        else:
            while True:
                chunk = stream.read(CHUNK)
                if not chunk:
                    break
                staged.write(chunk)
    except BaseException:
        staged.discard()
        raise
    return staged.commit()


def write_bytes(layout: Layout, content: bytes) -> str:
    """A loose object from bytes in memory (one write, one fsync, one rename)."""
    staged = StagedObject(layout)
    try:
        staged.write(content)
    except BaseException:
        staged.discard()
        raise
    return staged.commit()


def list_shards(layout: Layout) -> list[str]:
    """Sorted shard folder names under loose/ ([''] when loose objects are not sharded)."""
    if not layout.prefix_len:
        return [""]
    try:
        names = os.listdir(layout.loose)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if layout.is_valid_prefix(n))


def list_shard(layout: Layout, shard: str) -> list[str]:
    """Sorted hash keys of one shard (memory: that shard only)."""
    folder = os.path.join(layout.loose, shard) if shard else layout.loose
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(shard + n for n in names if layout.is_valid_rest(n))


def iter_loose(layout: Layout) -> Iterator[str]:
    """Every loose hash key in ascending order, one shard in memory at a time."""
    for shard in list_shards(layout):
        yield from list_shard(layout, shard)


def invalid_loose_names(layout: Layout) -> Iterator[str]:
    """Entries under loose/ that are not valid objects (for validate)."""
    if not layout.prefix_len:
        for name in os.listdir(layout.loose):
            if not layout.is_valid_rest(name):
                yield name
        return
    for shard in os.listdir(layout.loose):
        path = os.path.join(layout.loose, shard)
        if not layout.is_valid_prefix(shard) or not os.path.isdir(path):
            yield shard
            continue
        for name in os.listdir(path):
            if not layout.is_valid_rest(name):
                yield f"{shard}/{name}"


def sandbox_entries(layout: Layout) -> list[str]:
    try:
        return sorted(os.listdir(layout.sandbox))
    except FileNotFoundError:
        return []


def is_abandoned(path: str, max_age: float, now: float) -> bool:
    """A sandbox file nobody writes: not flock()ed by a dosfs writer and older than max_age."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    if now - st.st_mtime < max_age:
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True
