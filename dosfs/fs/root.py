"""The mount's root: the folders of the other namespaces, and the live statistics xattr.

A namespace of its own (namespace.py) so that Operations treats the root like any folder:
it lists ``by-hash/``, ``incoming/`` and, with --aiida-db, ``nodes/``, whose attributes come
from their own namespaces.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import ClassVar

import pyfuse3

from dosfs.fs import handles as _handles
from dosfs.fs.attrs import FIXED_TIMEOUT, AttrBuilder
from dosfs.fs.errors import fuse_error
from dosfs.fs.inodes import ROOT_INODE, Node
from dosfs.fs.namespace import NamespaceBase, Namespaces
from dosfs.fs.stats import Stats

#: the root's xattr with the mount's live statistics (JSON; `dosfs stats MOUNTPOINT`)
STATS_XATTR = b"user.dosfs.stats"
_STATS_KEY = "stats"  # its name after user.dosfs.


@dataclass(eq=False)
class RootDirHandle:
    """A listing of the mount root: its fixed entries, by position."""

    space: ClassVar[int] = ROOT_INODE


class Root(NamespaceBase):
    """The root folder: fixed entries (name, folder of another namespace)."""

    def __init__(self, spaces: Namespaces, attrs: AttrBuilder, stats: Stats,
                 entries: tuple[tuple[bytes, Node], ...]) -> None:
        super().__init__(spaces)
        self.node = spaces.root
        self.attrs = attrs
        self.stats = stats
        self.entries = entries
        self._by_name = dict(entries)

    async def lookup(self, parent: Node, name: bytes) -> pyfuse3.EntryAttributes:
        if name == b"." or name == b"..":
            return self.spaces.entry(self.node)
        node = self._by_name.get(name)
        if node is None:
            raise fuse_error(errno.ENOENT)
        return self.spaces.entry(node)

    def getattr(self, node: Node) -> pyfuse3.EntryAttributes:
        return self.attrs.directory(node.ino, 0o555, 4, FIXED_TIMEOUT)

    def opendir(self, node: Node) -> RootDirHandle:
        return RootDirHandle()

    async def readdir(self, handle: RootDirHandle, start_id: int,
                      token: pyfuse3.ReaddirToken) -> None:
        entries = self.entries
        for index in range(start_id, len(entries)):
            name, node = entries[index]
            if not _handles.readdir_reply(token, name, self.spaces.attrs(node), index + 1):
                return
            node.lookups += 1

    async def getxattr(self, node: Node, key: str) -> bytes:
        if key == _STATS_KEY:
            return self.stats.rendered()
        raise fuse_error(pyfuse3.ENOATTR)

    def listxattr(self, node: Node) -> list[bytes]:
        return [STATS_XATTR]
