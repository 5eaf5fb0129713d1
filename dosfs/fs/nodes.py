"""nodes/: an AiiDA profile's files by node, read-only and live (``--aiida-db``).

```
nodes/by-pk/<pk>/<the node's files and folders>
nodes/by-uuid/<uuid>/...         (a unique prefix of >= 8 characters is a symlink to the uuid)
```
* A node's folder has a computed number (inodes.node_dir_ino: no table entry, flat memory for
  10^6 listed nodes); its sub-folders are counted nodes (ViewDir), dropped when forgotten.
* A file *is* its by-hash object: its lookup is by-hash's, so open, read, verification, page
  cache and xattrs are by-hash's too (plus ``user.dosfs.hash``).
* Every database query runs on a worker thread (offload). A node folder's lookup always asks
  the database (new nodes appear at once; a miss is never cached); its entry and attributes are
  cached by the kernel for NODE_TIMEOUT, the staleness bound for deleted nodes.
* A damaged or hostile database serves what is right and leaves out the rest, with one WARNING
  line per thing left out (remembered, so not repeated): a row whose uuid is not a uuid (not
  listed, not found), a name no filesystem can show, an entry that is not an object, a file
  whose key is not a whole hash key (a short one would resolve to some other object).
"""

from __future__ import annotations

import errno
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pyfuse3

from dosfs.fs import handles as _handles
from dosfs.fs.attrs import FIXED_TIMEOUT, OBJECT_TIMEOUT, AttrBuilder
from dosfs.fs.byhash import XATTR_PREFIX, ByHash
from dosfs.fs.errors import fuse_error
from dosfs.fs.inodes import (
    BY_PK_INODE,
    BY_UUID_INODE,
    NODES_INODE,
    FixedDir,
    InodeTable,
    Node,
    NodeDirRef,
    ShortLink,
    ViewNode,
    node_dir_ino,
)
from dosfs.fs.namespace import NamespaceBase, Namespaces
from dosfs.fs.offload import Offload
from dosfs.views.rows import Ambiguous, NodeRow, Source, is_uuid, valid_uuid_text
from dosfs.views.trees import Tree, TreeCache, parse_tree_checked, walk

log = logging.getLogger("dosfs.fs")

NODES_NAME = b"nodes"
#: entry/attribute timeout of node folders: how long a deleted node may still be seen
NODE_TIMEOUT = 1.0
#: rows per database round trip of a by-pk/by-uuid listing
PAGE = 1024
#: xattrs of a node's folder (``user.dosfs.<key>``)
NODE_XATTRS = ("pk", "uuid", "node_type", "label")
_UUID_LEN = 36
#: problems of the database remembered as reported (so each is logged once)
MAX_REPORTED = 4096


class ViewDir(ViewNode):
    """A folder inside a node's tree: (pk, uuid, path), counted like any kernel entry."""

    __slots__ = ("pk", "uuid", "path", "parent_ino")

    def __init__(self, pk: int, uuid: str, path: tuple[str, ...], parent_ino: int) -> None:
        super().__init__()
        self.pk, self.uuid, self.path, self.parent_ino = pk, uuid, path, parent_ino


@dataclass(eq=False)
class NodesDirHandle:
    """A listing under nodes/: which folder, and the names of a tree folder (sorted)."""

    node: Node
    names: list[tuple[str, Tree | str]] = field(default_factory=list)
    space: ClassVar[int] = NODES_INODE


def uuid_cursor(uuid: str) -> int:
    """by-uuid readdir cursor: 16 + its first 60 bits (ordered like the uuids)."""
    return 16 + int(uuid.replace("-", "")[:15], 16)


def _cursor_uuid(cursor: int) -> str:
    """The highest uuid string with the 60-bit prefix of ``cursor`` (resume strictly after)."""
    digits = format(cursor - 16, "015x") + "f" * 17
    return "-".join((digits[:8], digits[8:12], digits[12:16], digits[16:20], digits[20:]))


class Nodes(NamespaceBase):
    """The nodes/ namespace over one database source and the by-hash namespace (read-only:
    its files are by-hash/'s objects)."""

    def __init__(self, spaces: Namespaces, source: Source, by_hash: ByHash, table: InodeTable,
                 attrs: AttrBuilder, offload: Offload, trees: int = 4096) -> None:
        super().__init__(spaces)
        self.source = source
        self.by_hash = by_hash
        self.table = table
        self.attrs = attrs
        self.offload = offload
        self.trees = TreeCache(trees)
        self.nodes_dir = FixedDir(NODES_INODE, NODES_NAME, NODES_INODE)
        self.by_pk = FixedDir(BY_PK_INODE, b"by-pk", NODES_INODE)
        self.by_uuid = FixedDir(BY_UUID_INODE, b"by-uuid", NODES_INODE)
        for node in (self.nodes_dir, self.by_pk, self.by_uuid):
            table.add_fixed(node)
        self._reported: OrderedDict[tuple[int, str], None] = OrderedDict()
        self._valid_key = by_hash.engine.is_valid_hashkey

    def _report(self, pk: int, problem: str) -> None:
        """One WARNING line per thing of the database left out (not repeated)."""
        key = (pk, problem)
        if key in self._reported:
            return
        self._reported[key] = None
        if len(self._reported) > MAX_REPORTED:
            self._reported.popitem(last=False)
        log.warning("nodes/: node %d: %s; left out", pk, problem)

    def _good_uuid(self, pk: int, uuid: str) -> bool:
        if is_uuid(uuid):
            return True
        self._report(pk, f"its uuid {str(uuid)[:40]!r} is not a uuid")
        return False

    # ------------------------------------------------------------------ attributes
    def getattr(self, node: Node) -> pyfuse3.EntryAttributes:
        if isinstance(node, NodeDirRef):
            return self.attrs.directory(node.ino, 0o555, 2, NODE_TIMEOUT)
        if isinstance(node, ViewDir):
            return self.attrs.directory(node.ino, 0o555, 2, OBJECT_TIMEOUT)
        return self.attrs.directory(node.ino, 0o555, 2, FIXED_TIMEOUT)

    # ------------------------------------------------------------------ rows and trees
    async def _row(self, node: NodeDirRef) -> NodeRow:
        row = await self.offload.run(self.source.node, node.pk)
        if row is None or not is_uuid(row.uuid) or not node.names(row.uuid):
            raise fuse_error(errno.ESTALE)  # deleted, or the pk is another node's now
        return row

    async def _tree(self, pk: int, uuid: str | None, ref: NodeDirRef | None = None) -> Tree:
        """The tree of node ``pk`` (cached; read from the database on a miss)."""
        cached = self.trees.get(pk)
        if cached is not None and (uuid is None or cached[0] == uuid) and (
                ref is None or ref.names(cached[0])):
            return cached[1]
        row = await self._row(ref) if ref is not None else await self.offload.run(
            self.source.node, pk)
        if row is None or not is_uuid(row.uuid) or (uuid is not None and row.uuid != uuid):
            raise fuse_error(errno.ESTALE)
        return self._cache(row)

    def _cache(self, row: NodeRow) -> Tree:
        tree, problems = parse_tree_checked(row.metadata, self._valid_key)
        for problem in problems:  # what cannot be shown is left out, once said
            self._report(row.pk, problem)
        self.trees.put(row.pk, row.uuid, tree)
        return tree

    async def _folder(self, node: Node) -> tuple[Tree, int, str]:
        """(folder, pk, uuid) of a node folder or a sub-folder."""
        if isinstance(node, NodeDirRef):
            cached = self.trees.get(node.pk)
            if cached is not None and node.names(cached[0]):
                return cached[1], node.pk, cached[0]
            row = await self._row(node)
            return self._cache(row), row.pk, row.uuid
        if not isinstance(node, ViewDir):
            raise fuse_error(errno.ENOTDIR)
        folder = walk(await self._tree(node.pk, node.uuid), node.path)
        if not isinstance(folder, dict):
            raise fuse_error(errno.ESTALE)
        return folder, node.pk, node.uuid

    # ------------------------------------------------------------------ lookup
    async def lookup(self, parent: Node, name: bytes) -> pyfuse3.EntryAttributes:
        """``parent/name`` under nodes/ (``.`` and ``..`` too), counted as one more kernel
        reference."""
        if name == b".":
            return self.spaces.entry(parent)
        if name == b"..":
            if parent is self.nodes_dir:
                return self.spaces.entry(self.spaces.root)
            return self._dotdot(parent)
        if parent is self.nodes_dir:
            found = {b"by-pk": self.by_pk, b"by-uuid": self.by_uuid}.get(name)
            if found is None:
                raise fuse_error(errno.ENOENT)
            return self.getattr(found)
        try:
            text = name.decode("ascii")
        except UnicodeDecodeError:
            raise fuse_error(errno.ENOENT) from None
        if parent is self.by_pk:
            if not text.isdigit() or text != str(int(text)):
                raise fuse_error(errno.ENOENT)  # "007" is not a pk: one name per node
            return self._node_entry(await self.offload.run(self.source.node, int(text)), False)
        if parent is self.by_uuid:
            return await self._uuid_entry(text)
        folder, pk, uuid = await self._folder(parent)
        return self._child(parent, folder, text, pk, uuid)

    def _dotdot(self, parent: Node) -> pyfuse3.EntryAttributes:
        """The parent, counted as one more kernel reference like any entry a lookup returns
        (the kernel's later FORGET includes it)."""
        if isinstance(parent, ViewDir):
            return self.spaces.entry(self.table.get(parent.parent_ino))
        if isinstance(parent, NodeDirRef):
            return self.spaces.entry(self.by_uuid if parent.via_uuid else self.by_pk)
        return self.spaces.entry(self.nodes_dir)

    def _node_entry(self, row: NodeRow | None, via_uuid: bool) -> pyfuse3.EntryAttributes:
        if row is None or not self._good_uuid(row.pk, row.uuid):
            raise fuse_error(errno.ENOENT)
        ino = node_dir_ino(row.pk, row.uuid, via_uuid)
        if ino is None:
            raise fuse_error(errno.ENOENT)
        self._cache(row)  # fresh from the database: the tree the kernel will walk
        return self.attrs.directory(ino, 0o555, 2, NODE_TIMEOUT)

    async def _uuid_entry(self, text: str) -> pyfuse3.EntryAttributes:
        if not valid_uuid_text(text):
            raise fuse_error(errno.ENOENT)
        if len(text) == _UUID_LEN:
            return self._node_entry(await self.offload.run(self.source.by_uuid, text), True)
        try:
            full = await self.offload.run(self.source.resolve_prefix, text)
        except Ambiguous:
            raise fuse_error(errno.ENOENT) from None  # like an ambiguous short hash
        if full is None or not is_uuid(full):
            raise fuse_error(errno.ENOENT)
        link = ShortLink(full.encode())
        self.table.register(link)
        link.lookups += 1
        return self.by_hash.short_attrs(link)

    def _child(self, parent: Node, folder: Tree, name: str, pk: int,
               uuid: str) -> pyfuse3.EntryAttributes:
        entry = folder.get(name)
        if entry is None:
            raise fuse_error(errno.ENOENT)
        if isinstance(entry, str):
            return self.by_hash.lookup_hash(entry.encode())  # the object: by-hash's inode
        path = parent.path if isinstance(parent, ViewDir) else ()
        sub = ViewDir(pk, uuid, (*path, name), parent.ino)
        self.table.register(sub)
        sub.lookups += 1
        return self.getattr(sub)

    # ------------------------------------------------------------------ listing
    def opendir(self, node: Node) -> NodesDirHandle:
        return NodesDirHandle(node)

    async def readdir(self, handle: NodesDirHandle, start_id: int, token: Any) -> None:
        node = handle.node
        reply = _handles.readdir_reply
        if node is self.nodes_dir:
            for index, sub in enumerate((self.by_pk, self.by_uuid)):
                if index >= start_id and not reply(token, sub.name, self.getattr(sub), index + 1):
                    return
            return
        if node is self.by_pk or node is self.by_uuid:
            await self._list_nodes(node is self.by_uuid, start_id, token)
            return
        folder, pk, uuid = await self._folder(node)
        if start_id == 0 or not handle.names:
            handle.names = list(folder.items())
        for index in range(start_id, len(handle.names)):
            name, _entry = handle.names[index]
            try:
                attrs = self._child(node, folder, name, pk, uuid)
            except pyfuse3.FUSEError as exc:
                if exc.errno != errno.ENOENT:
                    raise
                continue  # the object is not in the container (deleted): not listed
            if not reply(token, name.encode(), attrs, index + 1):
                self._unlist(attrs.st_ino)
                return

    def _unlist(self, ino: int) -> None:
        """The kernel did not take an entry: take back the reference counted for it."""
        self.table.forget(ino, 1)

    async def _list_nodes(self, via_uuid: bool, start_id: int, token: Any) -> None:
        """by-pk (cursor: the pk) or by-uuid (cursor: 60 bits of the uuid), one page of rows
        per worker round trip, nothing kept between calls."""
        reply = _handles.readdir_reply
        after_uuid = "" if start_id == 0 else _cursor_uuid(start_id)
        after_pk = start_id
        while True:
            if via_uuid:
                rows = await self.offload.run(self.source.uuids_after, after_uuid, PAGE)
            else:
                rows = await self.offload.run(self.source.pks_after, after_pk, PAGE)
            for pk, uuid in rows:
                after_uuid, after_pk = uuid, pk  # the next page starts after this row
                if not self._good_uuid(pk, uuid):
                    continue
                ino = node_dir_ino(pk, uuid, via_uuid)
                if ino is None:
                    continue
                cursor = uuid_cursor(uuid) if via_uuid else pk
                name = uuid if via_uuid else str(pk)
                attrs = self.attrs.directory(ino, 0o555, 2, NODE_TIMEOUT)
                if not reply(token, name.encode(), attrs, cursor):
                    return
            if len(rows) < PAGE:
                return

    # ------------------------------------------------------------------ xattrs
    async def getxattr(self, node: Node, key: str) -> bytes:
        if not isinstance(node, NodeDirRef) or key not in NODE_XATTRS:
            raise fuse_error(pyfuse3.ENOATTR)
        row = await self._row(node)
        return str(getattr(row, key)).encode()

    def listxattr(self, node: Node) -> list[bytes]:
        if not isinstance(node, NodeDirRef):
            return []
        return [XATTR_PREFIX + key.encode() for key in NODE_XATTRS]

    # ------------------------------------------------------------------ lifecycle
    def shutdown(self, handles: list[Any]) -> None:
        self.source.close()  # the database connections of the worker threads
