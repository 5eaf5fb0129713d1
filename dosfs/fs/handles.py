"""Open-file and open-directory handles: ``read(fh, ...)`` gets no inode, so state lives here.

Handle numbers come from one counter per table and are not reused while the mount runs. Each
kind of handle names the namespace that serves it (``space``, see namespace.py).
"""

from __future__ import annotations

import errno
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Generic, TypeVar

import pyfuse3
import trio

from dosfs.container.blocksums import BlockSums
from dosfs.engine import ObjectReaderLike, VerifierLike
from dosfs.fs.inodes import BY_HASH_INODE, INCOMING_INODE
from dosfs.fs.tree import DirNode, TreeNode
from dosfs.fs.workers import Pending

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
    ``verifier``/``verdict``: the hashing of a big object in progress, and its trio event;
    ``sums``: the big object's recorded block checksums, which check each read instead;
    ``unavailable_at``: when a read of it last found its bytes unavailable (monotonic)."""

    reader: ObjectReaderLike
    hashkey: str
    ino: int | None = None
    trusted: bool = False
    verifier: VerifierLike | None = None
    verdict: trio.Event | None = None
    sums: BlockSums | None = None
    unavailable_at: float = -1e9
    space: ClassVar[int] = BY_HASH_INODE


@dataclass(eq=False)
class WriteHandle:
    """An open incoming/ file; several handles may share one IncomingFile. A read-only handle
    of a file committed meanwhile reads the object (``reader``, opened on first read)."""

    file: IncomingFile
    writable: bool = True  # read-only opens of a file being written skip the fsync at close
    reader: ObjectReaderLike | None = None
    space: ClassVar[int] = INCOMING_INODE


#: How many recent cursor positions a by-hash listing remembers exactly (see HashDirHandle).
CURSOR_MEMORY = 4096


#: one by-hash listing entry, ready to reply: (name, hashkey, size, inode or None, cursor)
ListingEntry = tuple[bytes, str, int, int | None, int]


@dataclass(eq=False)
class HashDirHandle:
    """A by-hash/ listing: the current batch of upcoming entries and a stable cursor.

    The cursor of an entry is 16 + the first 60 bits of its hash, so cursors are ordered like
    hashes. The kernel resumes at the cursor of the last entry it accepted; that is normally
    ``position`` (continue the batch). Any other cursor is resolved through ``recent`` (the
    ends of recent readdir calls, exact) or, for an older one, from its 60-bit prefix.
    """

    lock: trio.Lock = field(default_factory=trio.Lock)
    items: list[ListingEntry] = field(default_factory=list)
    index: int = 0  # items[:index] were accepted by the kernel
    after: str | None = None  # the last hash of `items` (where the next fill starts)
    exhausted: bool = False
    position: int = 0
    recent: OrderedDict[int, str] = field(default_factory=OrderedDict)
    #: the next batch, being fetched by a worker, and the cursor it starts after
    prefetch: Pending | None = None
    prefetch_after: str | None = None
    space: ClassVar[int] = BY_HASH_INODE

    def reset(self, after: str | None) -> None:
        self.prefetch = None  # a job in flight finishes; its result is dropped
        self.items = []
        self.index = 0
        self.after = after
        self.exhausted = False

    def accept(self, index: int) -> None:
        """The kernel took items[:index]: the cursor is now the last one's."""
        self.index = index
        if index:
            _name, hashkey, _size, _ino, next_id = self.items[index - 1]
            if next_id != self.position:
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
    space: ClassVar[int] = INCOMING_INODE

