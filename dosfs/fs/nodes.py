"""Inodes of the mount: what each number the kernel holds stands for, and the incoming/ tree.

Inode numbers come from one monotonic counter and are never reused (the kernel may still hold
an old number when a name is replaced, and a reused number would alias two files). A number is
dropped from the table when the kernel has forgotten it (lookup count 0) and nothing else pins it
(a name in the incoming/ tree, an open handle). Objects under by-hash/ are pinned only by the
kernel, so the table holds exactly the objects the kernel currently remembers.

The incoming/ tree is bookkeeping of the mount, not stored anywhere: directories, files being
written, committed links (``-> ../by-hash/<hash>``, target computed from the current depth so a
rename to another depth keeps the link right) and links users made themselves. It holds at most
``max_names`` names; when full, the oldest committed links are dropped first, and when none is
left, creating a name fails with ENOSPC.
"""

from __future__ import annotations

import errno
import stat
import time
from collections import deque
from collections.abc import Iterator

import pyfuse3

ROOT_INODE = pyfuse3.ROOT_INODE  # 1
BY_HASH_INODE = ROOT_INODE + 1
INCOMING_INODE = ROOT_INODE + 2
FIRST_DYNAMIC_INODE = ROOT_INODE + 16

BY_HASH_NAME = b"by-hash"
INCOMING_NAME = b"incoming"

#: Default bound on names kept in incoming/ (about 0.6 KB each; see docs/semantics.md).
DEFAULT_MAX_NAMES = 10_000
#: Default bound on by-hash inodes the daemon keeps for the kernel (about 0.35 KB each).
#: Past it, the oldest entries are invalidated in the kernel (which then forgets them) and a
#: listing hands out untracked inode numbers: memory stays flat however many objects exist.
DEFAULT_MAX_INODES = 16_384


class Node:
    """Something the kernel can hold an inode number for."""

    __slots__ = ("ino", "lookups")

    def __init__(self) -> None:
        self.ino = 0
        self.lookups = 0

    def pinned(self) -> bool:
        """True while something other than the kernel needs this inode number to stay valid."""
        return False


class FixedDir(Node):
    """The root and by-hash/: no storage of their own, never forgotten."""

    __slots__ = ("name",)

    def __init__(self, ino: int, name: bytes) -> None:
        super().__init__()
        self.ino = ino
        self.name = name

    def pinned(self) -> bool:
        return True


class ObjectNode(Node):
    """by-hash/<hashkey>: an immutable object; the size is cached because content never changes.

    ``referenced``/``in_clock``: state of the CLOCK (second chance) eviction in InodeTable.
    """

    __slots__ = ("hashkey", "size", "referenced", "in_clock")

    def __init__(self, hashkey: str, size: int) -> None:
        super().__init__()
        self.hashkey = hashkey
        self.size = size
        self.referenced = False
        self.in_clock = False


class TreeNode(Node):
    """A name in incoming/ (or incoming/ itself). ``parent is None`` means detached."""

    __slots__ = ("parent", "name", "seq", "mode", "uid", "gid", "atime_ns", "mtime_ns", "ctime_ns")

    def __init__(self, mode: int, uid: int, gid: int) -> None:
        super().__init__()
        self.parent: DirNode | None = None
        self.name = b""
        self.seq = 0
        self.mode = mode
        self.uid = uid
        self.gid = gid
        now = time.time_ns()
        self.atime_ns = self.mtime_ns = self.ctime_ns = now

    def pinned(self) -> bool:
        return self.parent is not None

    def touch(self) -> None:
        self.mtime_ns = self.ctime_ns = time.time_ns()

    def depth(self) -> int:
        """Levels between the mount root and this node (incoming/ itself is 1)."""
        depth, node = 1, self.parent
        while node is not None:
            depth, node = depth + 1, node.parent
        return depth


class DirNode(TreeNode):
    """A directory in incoming/; children keep insertion order, ``seq`` is the readdir cursor."""

    __slots__ = ("children", "next_seq", "is_incoming_root")

    def __init__(self, mode: int, uid: int, gid: int, *, is_incoming_root: bool = False) -> None:
        super().__init__(stat.S_IFDIR | (mode & 0o7777), uid, gid)
        self.children: dict[bytes, TreeNode] = {}
        self.next_seq = 1
        self.is_incoming_root = is_incoming_root

    def pinned(self) -> bool:
        return self.is_incoming_root or self.parent is not None


class FileNode(TreeNode):
    """A file in incoming/ that is being written (state 'writing') or was closed.

    Lifecycle: writing -> committing -> committed | failed; 'discarded' when it had no name left
    at its last close. ``error`` holds the errno of the first failed write: later writes, flush and
    fsync report it again and the file is never committed.
    """

    __slots__ = (
        "staged",
        "open_count",
        "state",
        "error",
        "hashkey",
        "done",
        "final_size",
        "behind",
    )

    def __init__(self, mode: int, uid: int, gid: int, staged: object) -> None:
        super().__init__(stat.S_IFREG | (mode & 0o7777), uid, gid)
        self.staged = staged
        self.behind: object | None = None  # WriteBehind once the file is big
        self.open_count = 0
        self.state = "writing"
        self.error = 0
        self.hashkey: str | None = None
        self.done: object | None = None  # trio.Event while committing
        self.final_size = 0

    def pinned(self) -> bool:
        return self.parent is not None or self.open_count > 0 or self.state == "committing"


class LinkNode(TreeNode):
    """A symlink in incoming/: a committed object (``hashkey``) or one a user made (``target``)."""

    __slots__ = ("hashkey", "target")

    def __init__(
        self, uid: int, gid: int, *, hashkey: str | None = None, target: bytes | None = None
    ) -> None:
        super().__init__(stat.S_IFLNK | 0o777, uid, gid)
        self.hashkey = hashkey
        self.target = target

    def link_target(self) -> bytes:
        """Relative path to the object, with as many ``../`` as the link's current depth needs."""
        if self.target is not None:
            return self.target
        parent_depth = self.parent.depth() if self.parent is not None else 1
        return b"../" * parent_depth + BY_HASH_NAME + b"/" + (self.hashkey or "").encode()


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


class IncomingTree:
    """The names under incoming/: insertion, removal, rename, and the bound on their number."""

    def __init__(
        self, table: InodeTable, root: DirNode, max_names: int = DEFAULT_MAX_NAMES
    ) -> None:
        self.table = table
        self.root = root
        self.max_names = max_names
        self.count = 0
        #: committed links in commit order: the first ones are dropped when the bound is reached
        #: (links removed meanwhile stay in the deque until met; compacted when they dominate)
        self._committed: deque[LinkNode] = deque()

    def make_room(self) -> None:
        """Ensure one more name fits, dropping the oldest committed links; else ENOSPC."""
        while self.count >= self.max_names:
            if not self._committed:
                raise pyfuse3.FUSEError(errno.ENOSPC)
            link = self._committed.popleft()
            if link.parent is not None:
                self.detach(link)

    def attach(self, parent: DirNode, name: bytes, node: TreeNode) -> None:
        """Put ``node`` at ``parent/name`` (the caller made room and checked the name is free)."""
        node.parent = parent
        node.name = name
        node.seq = parent.next_seq
        parent.next_seq += 1
        parent.children[name] = node
        parent.touch()
        self.count += 1
        if isinstance(node, LinkNode) and node.hashkey is not None:
            self._committed.append(node)
            if len(self._committed) > 2 * self.count + 1024:
                self._committed = deque(n for n in self._committed if n.parent is not None)

    def detach(self, node: TreeNode) -> None:
        """Remove ``node``'s name; the inode lives on while the kernel or a handle holds it."""
        parent = node.parent
        if parent is None:
            return
        if parent.children.get(node.name) is node:
            del parent.children[node.name]
        parent.touch()
        node.parent = None
        self.count -= 1
        self.table.maybe_drop(node)

    def replace(self, old: TreeNode, new: TreeNode) -> None:
        """Swap ``new`` in at ``old``'s place (a file becoming its committed link)."""
        parent, name = old.parent, old.name
        if parent is None:
            return
        self.detach(old)
        self.attach(parent, name, new)

    def move(self, node: TreeNode, new_parent: DirNode, new_name: bytes) -> None:
        """Rename ``node`` (any target name has been detached by the caller)."""
        old_parent = node.parent
        if old_parent is not None and old_parent.children.get(node.name) is node:
            del old_parent.children[node.name]
            old_parent.touch()
        node.parent = new_parent
        node.name = new_name
        node.seq = new_parent.next_seq
        new_parent.next_seq += 1
        new_parent.children[new_name] = node
        new_parent.touch()
        node.ctime_ns = time.time_ns()

    @staticmethod
    def is_ancestor(maybe_ancestor: TreeNode, node: TreeNode) -> bool:
        current: TreeNode | None = node
        while current is not None:
            if current is maybe_ancestor:
                return True
            current = current.parent
        return False
