"""Inodes of the mount: what each number the kernel holds stands for.

Packed objects get numbers *computed* from their index row: the top bit, 29 bits of the hash
and 34 bits of the row id (packed_ino). No table holds them, so the kernel may cache as many as
it likes, FORGET costs nothing, and `ls -l` of millions of objects keeps the daemon's memory
flat. The hash bits make a row id that is reused after a delete name another inode (the kernel
then drops the old one), and let a stale number be refused (ESTALE) rather than served as
another object: the row found for a number must carry the same 29 hash bits.

Everything else (incoming/ names, loose objects, rows beyond 2^34) comes from one monotonic
counter, never reused (the kernel may still hold an old number when a name is replaced, and a
reused number would alias two files). Such a number is dropped from the table when the kernel
has forgotten it (lookup count 0) and nothing else pins it (a name in the incoming/ tree, an
open handle). Loose objects are pinned only by the kernel, so the table holds exactly the loose
objects the kernel currently remembers (bounded: past ``max_objects`` the oldest are
invalidated in the kernel, CLOCK order).
"""

from __future__ import annotations

import errno
from collections import deque
from collections.abc import Iterator

import pyfuse3

from dosfs.fs.limits import DEFAULT_MAX_INODES

ROOT_INODE = pyfuse3.ROOT_INODE  # 1
BY_HASH_INODE = ROOT_INODE + 1
INCOMING_INODE = ROOT_INODE + 2
NODES_INODE = ROOT_INODE + 3  # nodes/ (views by name, with --aiida-db)
BY_PK_INODE = ROOT_INODE + 4
BY_UUID_INODE = ROOT_INODE + 5
FIRST_DYNAMIC_INODE = ROOT_INODE + 16

BY_HASH_NAME = b"by-hash"
INCOMING_NAME = b"incoming"

PACKED_BIT = 1 << 63
#: computed numbers of node folders (nodes/by-pk/<pk>, nodes/by-uuid/<uuid>): bit 62, bit 61
#: for by-uuid, 20 bits of the uuid (a pk reused after a delete is another inode), 40 of the pk
VIEW_BIT = 1 << 62
VIEW_UUID_BIT = 1 << 61
VIEW_PK_BITS = 40
VIEW_UUID_BITS = 20
ID_BITS = 34
HASH_BITS = 29
_ID_MASK = (1 << ID_BITS) - 1
#: the largest index row id that gets a computed number (bigger ones use the table)
MAX_ROWID = _ID_MASK
_HASH_MASK = (1 << HASH_BITS) - 1


def hash_bits(hashkey: str) -> int:
    """The 29 bits of a hash key that go into its computed inode number."""
    return int(hashkey[:8], 16) >> (32 - HASH_BITS)


def packed_ino(rowid: int, hashkey: str) -> int | None:
    """The inode number of a packed object (None when its row id does not fit)."""
    if rowid > _ID_MASK or rowid < 0:
        return None
    return PACKED_BIT | (hash_bits(hashkey) << ID_BITS) | rowid


def packed_ino_from_top(rowid: int, top60: int) -> int | None:
    """packed_ino() from the first 60 bits of the hash as an int (a listing has them already)."""
    if rowid > _ID_MASK or rowid < 0:
        return None
    return PACKED_BIT | ((top60 >> (60 - HASH_BITS)) << ID_BITS) | rowid


def packed_number(rowid: int, top60: int) -> int:
    """packed_ino_from_top() for a row id already known to fit (0 <= rowid <= MAX_ROWID)."""
    return PACKED_BIT | ((top60 >> (60 - HASH_BITS)) << ID_BITS) | rowid


class Node:
    """Something the kernel can hold an inode number for.

    ``space``: the namespace that serves it, named by the inode number of that namespace's
    folder (ROOT_INODE, BY_HASH_INODE, INCOMING_INODE, NODES_INODE); Operations indexes its
    table of namespaces with it (namespace.py). A class attribute of each kind of node (no
    memory per node), an instance one of FixedDir.
    """

    __slots__ = ("ino", "lookups")
    space: int

    def __init__(self) -> None:
        self.ino = 0
        self.lookups = 0

    def pinned(self) -> bool:
        """True while something other than the kernel needs this inode number to stay valid."""
        return False


class PackedRef(Node):
    """A computed inode number of a packed object (made on demand, never stored)."""

    __slots__ = ("rowid", "bits")
    space = BY_HASH_INODE

    def __init__(self, ino: int) -> None:
        super().__init__()
        self.ino = ino
        self.rowid = ino & _ID_MASK
        self.bits = (ino >> ID_BITS) & _HASH_MASK

    def names(self, hashkey: str) -> bool:
        """Whether `hashkey` (of the row found for this number) is the object it stood for."""
        return hash_bits(hashkey) == self.bits


class ShortLink(Node):
    """by-hash/<short hash>: a symlink to the one object whose key starts with it (git's short
    hashes). Never listed; zero timeouts (a new object can make the prefix ambiguous). Those
    of nodes/by-uuid/<short uuid> too: served alike, by by-hash/."""

    __slots__ = ("target",)
    space = BY_HASH_INODE

    def __init__(self, target: bytes) -> None:
        super().__init__()
        self.target = target


class ViewNode(Node):
    """Something under nodes/ (read-only: writes there are EROFS)."""

    __slots__ = ()
    space = NODES_INODE


def uuid_bits(uuid: str) -> int:
    """The 20 bits of a node's uuid that go into its folder's computed number."""
    return int(uuid.replace("-", "")[:5], 16)


def node_dir_ino(pk: int, uuid: str, via_uuid: bool) -> int | None:
    """The computed number of a node's folder (None when the pk does not fit)."""
    if pk < 0 or pk >> VIEW_PK_BITS:
        return None
    kind = VIEW_UUID_BIT if via_uuid else 0
    return VIEW_BIT | kind | (uuid_bits(uuid) << VIEW_PK_BITS) | pk


class NodeDirRef(ViewNode):
    """A node's folder by its computed number (made on demand, never stored)."""

    __slots__ = ("pk", "bits", "via_uuid")

    def __init__(self, ino: int) -> None:
        super().__init__()
        self.ino = ino
        self.pk = ino & ((1 << VIEW_PK_BITS) - 1)
        self.bits = (ino >> VIEW_PK_BITS) & ((1 << VIEW_UUID_BITS) - 1)
        self.via_uuid = bool(ino & VIEW_UUID_BIT)

    def names(self, uuid: str) -> bool:
        """Whether the node found for this pk is the one the number stood for."""
        return uuid_bits(uuid) == self.bits


class FixedDir(Node):
    """The root, by-hash/, nodes/ and its two folders: no storage of their own, never
    forgotten; ``space`` is the namespace whose folder (or folder inside it) this is."""

    __slots__ = ("name", "space")

    def __init__(self, ino: int, name: bytes, space: int) -> None:
        super().__init__()
        self.ino = ino
        self.name = name
        self.space = space

    def pinned(self) -> bool:
        return True


class ObjectNode(Node):
    """by-hash/<hashkey> of a loose object (or a packed one whose row id is beyond a computed
    number): immutable, so the size is cached.

    ``referenced``/``in_clock``: state of the CLOCK (second chance) eviction in InodeTable.
    """

    __slots__ = ("hashkey", "size", "referenced", "in_clock")
    space = BY_HASH_INODE

    def __init__(self, hashkey: str, size: int) -> None:
        super().__init__()
        self.hashkey = hashkey
        self.size = size
        self.referenced = False
        self.in_clock = False


class InodeTable:
    """inode -> node, hashkey -> inode for objects, and the kernel's lookup counts."""

    def __init__(self, max_objects: int = DEFAULT_MAX_INODES) -> None:
        self._nodes: dict[int, Node] = {}
        self._by_hash: dict[str, ObjectNode] = {}
        self._next = FIRST_DYNAMIC_INODE
        self.max_objects = max_objects
        #: object nodes the kernel holds, in CLOCK order (8 bytes each; may hold dropped nodes,
        #: skipped when met and compacted when they dominate)
        self._clock: deque[ObjectNode] = deque()
        self._in_clock = 0

    @property
    def object_count(self) -> int:
        """Object inodes held (kernel-referenced, including those asked to be dropped)."""
        return len(self._by_hash)

    def spare_number(self) -> int:
        """A fresh inode number that is never tracked (listing entries past the bound)."""
        ino = self._next
        self._next += 1
        return ino

    def __len__(self) -> int:
        return len(self._nodes)

    def add_fixed(self, node: Node) -> None:
        self._nodes[node.ino] = node

    def register(self, node: Node) -> Node:
        """Give ``node`` a fresh, never used inode number."""
        node.ino = self._next
        self._next += 1
        self._nodes[node.ino] = node
        return node

    def get(self, ino: int) -> Node:
        try:
            return self._nodes[ino]
        except KeyError:
            if ino & PACKED_BIT:
                return PackedRef(ino)
            if ino & VIEW_BIT:
                return NodeDirRef(ino)
            # A number the kernel holds but we do not: an untracked listing entry (the kernel
            # revalidates those by name first) or a bug. ESTALE makes the kernel look up again.
            raise pyfuse3.FUSEError(errno.ESTALE) from None

    def find_object(self, hashkey: str) -> ObjectNode | None:
        return self._by_hash.get(hashkey)

    def object_node(self, hashkey: str, size: int) -> ObjectNode:
        """The node for ``hashkey``, created (lookup count 0) when the kernel holds none."""
        node = self._by_hash.get(hashkey)
        if node is None:
            node = ObjectNode(hashkey, size)
            self.register(node)
            self._by_hash[hashkey] = node
        return node

    def remember_object(self, node: ObjectNode) -> list[ObjectNode]:
        """Count one more kernel lookup of ``node``; return the objects the kernel should now
        drop (oldest first) so that at most ``max_objects`` stay known."""
        node.lookups += 1
        if node.in_clock:
            node.referenced = True
            return []
        node.in_clock = True
        self._clock.append(node)
        self._in_clock += 1
        if self._in_clock <= self.max_objects:
            return []
        # Evict a batch (not one per lookup at the bound); second chance for re-used ones.
        want = max(self._in_clock - self.max_objects, min(256, self.max_objects // 8 or 1))
        stale: list[ObjectNode] = []
        clock = self._clock
        for _ in range(2 * len(clock)):
            if len(stale) >= want or self._in_clock <= 1 or not clock:
                break
            candidate = clock.popleft()
            if not candidate.in_clock:
                continue  # dropped earlier; its slot was already uncounted
            if candidate.referenced or candidate is node:
                candidate.referenced = False
                clock.append(candidate)
                continue
            candidate.in_clock = False
            self._in_clock -= 1
            stale.append(candidate)
        return stale

    def forget(self, ino: int, count: int) -> None:
        node = self._nodes.get(ino)
        if node is None:
            return
        node.lookups = max(0, node.lookups - count)
        self.maybe_drop(node)

    def maybe_drop(self, node: Node) -> None:
        """Drop ``node`` if neither the kernel nor the mount needs its number any more."""
        if node.lookups > 0 or node.pinned():
            return
        if self._nodes.get(node.ino) is node:
            del self._nodes[node.ino]
        if isinstance(node, ObjectNode):
            if self._by_hash.get(node.hashkey) is node:
                del self._by_hash[node.hashkey]
            if node.in_clock:
                node.in_clock = False
                self._in_clock -= 1
                if len(self._clock) > 2 * self._in_clock + 1024:
                    self._clock = deque(n for n in self._clock if n.in_clock)

    def nodes(self) -> Iterator[Node]:
        return iter(list(self._nodes.values()))
