"""Attributes the mount reports: one builder for every kind of inode.

Objects are immutable: long entry/attr timeouts (the kernel caches them, `keep_cache` keeps
their pages); incoming/ names change under the kernel's feet (a file becomes a link at close),
so they get zero timeouts. Every entry reports a 1 MiB block size (cp and friends size their
buffers from it; 1 MiB writes measured faster).
"""

from __future__ import annotations

import stat

import pyfuse3

#: Entry and attribute timeout of by-hash objects: content is immutable.
OBJECT_TIMEOUT = 24 * 3600.0
#: The root, by-hash/ and incoming/ themselves never change type or place.
FIXED_TIMEOUT = 3600.0
#: incoming/ entries: a file turns into a link at close, names come and go.
INCOMING_TIMEOUT = 0.0
#: Reported block size.
BLOCK_SIZE = 1 << 20

class AttrBuilder:
    """EntryAttributes with the mount's owner, times and block size filled in; `umask`
    (-o umask=) clears permission bits of objects and of the fixed folders."""

    def __init__(self, uid: int, gid: int, start_ns: int, umask: int = 0) -> None:
        self.uid = uid
        self.gid = gid
        self.start_ns = start_ns
        self.umask = umask
        self.object_mode = stat.S_IFREG | (0o444 & ~umask)

    def base(self, ino: int, mode: int, timeout: float) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = ino
        a.st_mode = mode
        a.st_nlink = 1
        a.st_uid = self.uid
        a.st_gid = self.gid
        a.st_blksize = BLOCK_SIZE
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = self.start_ns
        a.entry_timeout = timeout
        a.attr_timeout = timeout
        return a

    def object(
        self, ino: int, size: int, entry_timeout: float = OBJECT_TIMEOUT
    ) -> pyfuse3.EntryAttributes:
        """A by-hash object (attr timeout long; entry timeout as asked). Built in one place
        without helpers: it is on the path of every lookup and listing entry."""
        a = pyfuse3.EntryAttributes()
        a.st_ino = ino
        a.st_mode = self.object_mode
        a.st_nlink = 1
        a.st_uid = self.uid
        a.st_gid = self.gid
        a.st_blksize = BLOCK_SIZE
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = self.start_ns
        a.entry_timeout = entry_timeout
        a.attr_timeout = OBJECT_TIMEOUT
        a.st_size = size
        a.st_blocks = (size + 511) // 512
        return a

    def untracked_object(self, ino: int, size: int) -> pyfuse3.EntryAttributes:
        """A listing entry past the inode bound: zero timeouts (used by name first)."""
        a = self.base(ino, self.object_mode, 0.0)
        a.st_size = size
        a.st_blocks = (size + 511) // 512
        return a

    def short_link(self, ino: int, size: int) -> pyfuse3.EntryAttributes:
        """by-hash/<short hash>: a symlink, looked up again at every use."""
        a = self.base(ino, stat.S_IFLNK | 0o777, 0.0)
        a.st_size = size
        return a

    def directory(
        self, ino: int, perms: int, nlink: int, timeout: float
    ) -> pyfuse3.EntryAttributes:
        a = self.base(ino, stat.S_IFDIR | (perms & ~self.umask), timeout)
        a.st_nlink = nlink
        return a
