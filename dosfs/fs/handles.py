"""Open-file and open-directory handles: ``read(fh, ...)`` gets no inode, so state lives here.

Handle numbers come from one counter per table and are not reused while the mount runs.
"""

from __future__ import annotations

import errno
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

import pyfuse3
import trio

from dosfs.fs.engine import ObjectReaderLike, VerifierLike
from dosfs.fs.tree import DirNode, TreeNode

if TYPE_CHECKING:
    from dosfs.fs.incoming_file import IncomingFile

H = TypeVar("H")

# Indirection so adapter tests can call readdir without a kernel token.
readdir_reply = pyfuse3.readdir_reply


class HandleTable(Generic[H]):
    """fh -> handle state; an unknown fh is answered EBADF (it cannot come from the kernel)."""

    def __init__(self) -> None:
        self._handles: dict[int, H] = {}
        self._next = 1

    def __len__(self) -> int:
        return len(self._handles)

    def add(self, handle: H) -> int:
        fh = self._next
        self._next += 1
        self._handles[fh] = handle
        return fh

    def get(self, fh: int) -> H:
        try:
            return self._handles[fh]
        except KeyError:
            raise pyfuse3.FUSEError(errno.EBADF) from None

    def pop(self, fh: int) -> H | None:
        return self._handles.pop(fh, None)

    def values(self) -> list[H]:
        return list(self._handles.values())


@dataclass(eq=False)
class ReadHandle:
    """An open object: the reader pinned the object's bytes at open time.

    ``ino``: the by-hash inode it was opened through (None for a committed incoming/ file),
    whose verdict is shared by every open of it; ``trusted``: reads need no verification;
    ``verifier``/``verdict``: the hashing of a big object in progress, and its trio event."""

    reader: ObjectReaderLike
    hashkey: str
    ino: int | None = None
    trusted: bool = False
    verifier: VerifierLike | None = None
    verdict: trio.Event | None = None


@dataclass(eq=False)
class WriteHandle:
    """An open incoming/ file; several handles may share one IncomingFile. A read-only handle
    of a file committed meanwhile reads the object (``reader``, opened on first read)."""

    file: IncomingFile
    writable: bool = True  # read-only opens of a file being written skip the fsync at close
    reader: ObjectReaderLike | None = None


#: How many recent cursor positions a by-hash listing remembers exactly (see HashDirHandle).
CURSOR_MEMORY = 4096


@dataclass(eq=False)
class HashDirHandle:
    """A by-hash/ listing: a bounded buffer of upcoming (hashkey, size) and a stable cursor.

    ``next_id`` of an entry is 16 + the first 60 bits of its hash, so cursors are ordered like
    hashes. The kernel resumes at the cursor of the last entry it accepted; that is normally
    ``position`` (continue the buffer). Any other cursor is resolved through ``recent`` (exact)
    or, for a cursor older than that, from its 60-bit prefix.
    """

    lock: trio.Lock = field(default_factory=trio.Lock)
    buffer: deque[tuple[str, int, int | None]] = field(default_factory=deque)
    after: str | None = None  # the last hash put into the buffer (where the next fill starts)
    exhausted: bool = False
    position: int = 0
    recent: OrderedDict[int, str] = field(default_factory=OrderedDict)

    def reset(self, after: str | None) -> None:
        self.buffer.clear()
        self.after = after
        self.exhausted = False

    def accepted(self, next_id: int, hashkey: str) -> None:
        self.position = next_id
        self.recent[next_id] = hashkey
        if len(self.recent) > CURSOR_MEMORY:
            self.recent.popitem(last=False)


@dataclass(eq=False)
class TreeDirHandle:
    """An incoming/ listing: a snapshot of (seq, name, node) taken at offset 0.

    Entries renamed or removed since the snapshot are skipped when replied; new ones appear on
    the next rewind. A snapshot costs O(entries), bounded by the incoming/ name limit.
    """

    dir: DirNode
    snapshot: list[tuple[int, bytes, TreeNode]] | None = None


@dataclass(eq=False)
class RootDirHandle:
    """The mount root: two fixed entries."""
