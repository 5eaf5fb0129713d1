"""The incoming/ tree: directories, files being written and committed links, by name.

Bookkeeping of the mount, not stored anywhere: directories, files being written
(incoming.IncomingFile), committed links (``-> ../by-hash/<hash>``, target computed from the
current depth so a rename to another depth keeps the link right) and links users made
themselves. It holds at most ``max_names`` names; when full, the oldest committed links are
dropped first, and when none is left, creating a name fails with ENOSPC.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections import deque

import pyfuse3

from dosfs.fs.inodes import BY_HASH_NAME, INCOMING_INODE, InodeTable, Node
from dosfs.fs.limits import DEFAULT_MAX_NAMES, NAME_MAX, PATH_MAX


class TreeNode(Node):
    """A name in incoming/ (or incoming/ itself). ``parent is None`` means detached."""

    __slots__ = ("parent", "name", "seq", "mode", "uid", "gid", "atime_ns", "mtime_ns", "ctime_ns")
    space = INCOMING_INODE

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


def max_link_depth(hash_length: int) -> int:
    """The deepest folder (incoming/ is 1) whose committed links still fit in PATH_MAX: a link
    in a folder at depth d points at ``../`` * d + ``by-hash/<hash>``."""
    return (PATH_MAX - 1 - len(BY_HASH_NAME) - 1 - hash_length) // 3


def path_of(node: TreeNode) -> str:
    """incoming/... path of a node, for log messages."""
    parts: list[bytes] = []
    current: TreeNode | None = node
    while current is not None:
        parts.append(current.name)
        current = current.parent
    return os.fsdecode(b"/".join(reversed(parts)))


def check_name(name: bytes) -> None:
    """ENAMETOOLONG for a name no folder can hold (the kernel checks paths, not our names)."""
    if len(name) > NAME_MAX:
        raise pyfuse3.FUSEError(errno.ENAMETOOLONG)


def subtree_depth(node: TreeNode) -> int:
    """Levels below `node` (0 for a file or an empty folder)."""
    if not isinstance(node, DirNode) or not node.children:
        return 0
    deepest = 0
    stack: list[tuple[DirNode, int]] = [(node, 0)]
    while stack:
        current, level = stack.pop()
        for child in current.children.values():
            if isinstance(child, DirNode):
                deepest = max(deepest, level + 1)
                stack.append((child, level + 1))
    return deepest


class IncomingTree:
    """The names under incoming/: insertion, removal, rename, and the bounds on their number
    and depth."""

    def __init__(
        self,
        table: InodeTable,
        root: DirNode,
        max_names: int = DEFAULT_MAX_NAMES,
        hash_length: int = 64,
    ) -> None:
        self.table = table
        self.root = root
        self.max_names = max_names
        #: a folder deeper than this could not hold a committed link (ENAMETOOLONG)
        self.max_depth = max_link_depth(hash_length)
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

    def check_depth(self, parent: DirNode, node_levels: int) -> None:
        """ENAMETOOLONG if a folder `node_levels` below a child of `parent` would be too deep
        for its committed links (refused at mkdir/create/rename, never at commit)."""
        if parent.depth() + 1 + node_levels > self.max_depth:
            raise pyfuse3.FUSEError(errno.ENAMETOOLONG)

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
