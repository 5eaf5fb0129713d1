"""The namespaces of a mount and the one table Operations dispatches through.

Why: a mount serves several namespaces (the root, ``by-hash/``, ``incoming/``, ``nodes/``),
each with its own kinds of inodes and handles. Every node and every handle says which
namespace serves it (``space``: the inode number of that namespace's folder), so a handler
finds the node or handle, indexes the table and calls the same method on whatever namespace it
gets: a new namespace is one class and one row of the table, not an edit of every handler.

A namespace answers for its own nodes and handles only. What it does not serve it refuses with
the errno the mount has always answered: ``NamespaceBase`` holds those answers, so a read-only
namespace writes none of the write side.
"""

from __future__ import annotations

import errno
from typing import Any, Protocol, TypeVar

import pyfuse3

from dosfs.fs.errors import fuse_error
from dosfs.fs.inodes import NODES_INODE, Node

F = TypeVar("F")  # a namespace's open-file handles
D = TypeVar("D")  # a namespace's open-folder handles

Entry = pyfuse3.EntryAttributes


class Handle(Protocol):
    """An open file or folder of any namespace, as the handle tables hold it."""

    @property
    def space(self) -> int:
        """The namespace that serves it (the inode number of its folder)."""
        ...


class Namespace(Protocol[F, D]):
    """What Operations calls, for the nodes of this namespace (``node.space``) and the handles
    it opened (``F`` for files, ``D`` for folders). Errors leave as FUSEError or as engine
    exceptions for the boundary's table, as from any handler."""

    # names and attributes
    async def lookup(self, parent: Node, name: bytes) -> Entry:
        """``parent/name`` (``.`` and ``..`` too), counted as one more kernel reference."""
        ...

    def count(self, node: Node) -> None:
        """One more kernel reference to ``node`` (answered by a lookup or a listing)."""
        ...

    def getattr(self, node: Node) -> Entry: ...

    async def setattr(self, node: Node, attr: Entry, fields: pyfuse3.SetattrFields,
                      handle: Handle | None) -> None: ...

    def readlink(self, node: Node) -> bytes: ...

    # files
    async def open(self, node: Node, flags: int) -> tuple[F, pyfuse3.FileInfo]:
        """A handle and how the kernel may cache it (``fh`` is Operations' to fill in)."""
        ...

    async def read(self, handle: F, off: int, size: int) -> bytes: ...

    async def write(self, handle: F, off: int, buf: bytes) -> int: ...

    async def flush(self, handle: F) -> None: ...

    async def fsync(self, handle: F) -> None: ...

    async def release(self, handle: F) -> None: ...

    # folders
    def opendir(self, node: Node) -> D: ...

    async def readdir(self, handle: D, start_id: int, token: pyfuse3.ReaddirToken) -> None: ...

    # names changed (the first argument is the folder the request names)
    async def mkdir(self, parent: Node, name: bytes, mode: int,
                    ctx: pyfuse3.RequestContext) -> Entry: ...

    async def symlink(self, parent: Node, name: bytes, target: bytes,
                      ctx: pyfuse3.RequestContext) -> Entry: ...

    async def create(self, parent: Node, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext) -> tuple[F, pyfuse3.FileInfo, Entry]: ...

    async def mknod(self, parent: Node, name: bytes, mode: int, rdev: int,
                    ctx: pyfuse3.RequestContext) -> Entry: ...

    async def link(self, inode: int, parent: Node, name: bytes,
                   ctx: pyfuse3.RequestContext) -> Entry: ...

    async def unlink(self, parent: Node, name: bytes) -> None: ...

    async def rmdir(self, parent: Node, name: bytes) -> None: ...

    async def rename(self, parent: Node, name: bytes, new_parent: int, new_name: bytes,
                     flags: int) -> None:
        """``new_parent`` is an inode number: looked up after ``parent`` is found writable."""
        ...

    # extended attributes (``key``: the name after ``user.dosfs.``)
    async def getxattr(self, node: Node, key: str) -> bytes: ...

    def listxattr(self, node: Node) -> list[bytes]: ...

    def setxattr(self, node: Node, name: bytes, value: bytes) -> None: ...

    def removexattr(self, node: Node, name: bytes) -> None: ...

    # lifecycle
    def shutdown(self, handles: list[F]) -> None:
        """After the loop ended: settle this namespace's files still open and close what it
        holds open (the worker threads have stopped)."""
        ...


class NamespaceBase:
    """The answers of a namespace to what it does not serve: subclass, override what applies.

    Changes are refused (``refuse``: EROFS, a read-only namespace); open of anything is EISDIR
    and a listing ENOTDIR (what is left once files and folders are overridden); no symlinks
    (EINVAL), no extended attributes (ENOATTR, an empty list), nothing to flush. As a namespace
    of its own it serves inodes that no namespace of this mount owns (a nodes/ number without
    --aiida-db): their attributes are EIO."""

    def __init__(self, spaces: Namespaces) -> None:
        self.spaces = spaces

    def refuse(self, node: Node) -> pyfuse3.FUSEError:
        """The errno of a name change inside ``node`` (EROFS; by-hash/'s files: ENOTDIR)."""
        return fuse_error(errno.EROFS)

    async def lookup(self, parent: Node, name: bytes) -> Entry:
        """``.`` and ``..`` of a node that is not a folder (itself); any other name: ENOTDIR."""
        if name == b"." or name == b"..":
            return self.spaces.entry(parent)
        raise fuse_error(errno.ENOTDIR)

    def count(self, node: Node) -> None:
        node.lookups += 1

    def getattr(self, node: Node) -> Entry:
        raise fuse_error(errno.EIO)

    async def setattr(self, node: Node, attr: Entry, fields: pyfuse3.SetattrFields,
                      handle: Handle | None) -> None:
        raise fuse_error(errno.EROFS)

    def readlink(self, node: Node) -> bytes:
        raise fuse_error(errno.EINVAL)

    async def open(self, node: Node, flags: int) -> tuple[Any, pyfuse3.FileInfo]:
        raise fuse_error(errno.EISDIR)

    async def read(self, handle: Any, off: int, size: int) -> bytes:  # pragma: no cover
        raise fuse_error(errno.EBADF)  # only a namespace that opens files gets reads

    async def write(self, handle: Any, off: int, buf: bytes) -> int:
        raise fuse_error(errno.EBADF)

    async def flush(self, handle: Any) -> None:
        return None

    async def fsync(self, handle: Any) -> None:
        return None

    async def release(self, handle: Any) -> None:
        return None

    def opendir(self, node: Node) -> Any:
        raise fuse_error(errno.ENOTDIR)

    async def readdir(self, handle: Any, start_id: int,
                      token: pyfuse3.ReaddirToken) -> None:  # pragma: no cover
        raise fuse_error(errno.EBADF)  # only a namespace that opens folders gets readdirs

    async def mkdir(self, parent: Node, name: bytes, mode: int,
                    ctx: pyfuse3.RequestContext) -> Entry:
        raise self.refuse(parent)

    async def symlink(self, parent: Node, name: bytes, target: bytes,
                      ctx: pyfuse3.RequestContext) -> Entry:
        raise self.refuse(parent)

    async def create(self, parent: Node, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext) -> tuple[Any, pyfuse3.FileInfo, Entry]:
        raise self.refuse(parent)

    async def mknod(self, parent: Node, name: bytes, mode: int, rdev: int,
                    ctx: pyfuse3.RequestContext) -> Entry:
        raise self.refuse(parent)

    async def link(self, inode: int, parent: Node, name: bytes,
                   ctx: pyfuse3.RequestContext) -> Entry:
        raise self.refuse(parent)

    async def unlink(self, parent: Node, name: bytes) -> None:
        raise self.refuse(parent)

    async def rmdir(self, parent: Node, name: bytes) -> None:
        raise self.refuse(parent)

    async def rename(self, parent: Node, name: bytes, new_parent: int, new_name: bytes,
                     flags: int) -> None:
        raise self.refuse(parent)

    async def getxattr(self, node: Node, key: str) -> bytes:
        raise fuse_error(pyfuse3.ENOATTR)

    def listxattr(self, node: Node) -> list[bytes]:
        return []

    def setxattr(self, node: Node, name: bytes, value: bytes) -> None:
        raise fuse_error(errno.EROFS)

    def removexattr(self, node: Node, name: bytes) -> None:
        raise fuse_error(errno.EROFS)

    def shutdown(self, handles: list[Any]) -> None:
        return None


class Namespaces:
    """The table: namespace id (the inode number of its folder) -> namespace; how Operations
    finds the namespace of a node or handle, and how one namespace answers with a node of
    another (``..`` of a top folder is the root; the root lists the top folders)."""

    def __init__(self, root: Node) -> None:
        self.root = root
        self.unserved: Namespace[Any, Any] = NamespaceBase(self)
        #: indexed by ``space``: a list, the cheapest lookup on every request
        self.table: list[Namespace[Any, Any]] = [self.unserved] * (NODES_INODE + 1)

    def add(self, space: int, namespace: Namespace[Any, Any]) -> None:
        """Serve ``space`` (the inode of the namespace's folder) by ``namespace``."""
        while len(self.table) <= space:  # in place: Operations holds this very list
            self.table.append(self.unserved)
        self.table[space] = namespace

    def entry(self, node: Node) -> Entry:
        """``node`` as the answer of a lookup: one more kernel reference, and its attributes."""
        namespace = self.table[node.space]
        namespace.count(node)
        return namespace.getattr(node)

    def attrs(self, node: Node) -> Entry:
        return self.table[node.space].getattr(node)

    def shutdown(self, handles: list[Any]) -> None:
        """Hand each namespace its handles still open, in reverse order of the ids, so that
        nodes/ and incoming/ (which build on by-hash/) go before by-hash/."""
        for space in reversed(range(len(self.table))):
            namespace = self.table[space]
            if namespace is not self.unserved:
                namespace.shutdown([h for h in handles if h.space == space])
