"""The listing of by-hash/ (`ls -l`), mixed into ByHash: entries stream in hash order from a
worker thread (the network pool on an s3 mount, whose index is read on demand), ready to reply,
with a stable cursor (16 + the first 60 bits of the hash); entries get long timeouts while the
inode table has room, untracked numbers past it."""

from __future__ import annotations

import errno
import itertools
from typing import Any

from dosfs.engine import EngineLike
from dosfs.fs import handles as _handles
from dosfs.fs.attrs import OBJECT_TIMEOUT, AttrBuilder
from dosfs.fs.errors import fuse_error
from dosfs.fs.handles import HashDirHandle, ListingEntry
from dosfs.fs.inodes import FixedDir, InodeTable, Node, ObjectNode, packed_ino_from_top
from dosfs.fs.offload import Offload

#: How many entries a by-hash listing fetches per worker-thread round trip.
LISTING_BATCH = 2048


def cursor_id(hashkey: str) -> int:
    """Readdir cursor of a by-hash entry: 16 + its first 60 bits, ordered like the hashes."""
    return 16 + int(hashkey[:15], 16)


def listing_entry(hashkey: str, size: int, rowid: int | None) -> ListingEntry:
    """What readdir replies for one object, computed in the worker thread that fetched it:
    (name, hashkey, size, inode or None for a loose object, cursor)."""
    top = int(hashkey[:15], 16)
    ino = packed_ino_from_top(rowid, top) if rowid is not None else None
    return hashkey.encode(), hashkey, size, ino, 16 + top


class HashListing:
    """opendir/readdir of by-hash/ (ByHash provides the attributes below)."""

    dir: FixedDir
    listing: bool
    engine: EngineLike
    attrs: AttrBuilder
    table: InodeTable
    offload: Offload
    index_may_block: bool

    def remember(self, node: ObjectNode) -> None:  # pragma: no cover - ByHash's
        raise NotImplementedError

    def opendir(self, node: Node) -> HashDirHandle:
        if node is not self.dir:
            raise fuse_error(errno.ENOTDIR)
        if not self.listing:
            raise fuse_error(errno.EACCES)
        return HashDirHandle()

    async def readdir(self, handle: HashDirHandle, start_id: int, token: Any) -> None:
        """The hot loop of `ls -l`: entries come from the worker thread ready to reply (name
        bytes, computed inode, cursor), so a packed entry costs one attribute object and one
        readdir_reply here."""
        async with handle.lock:
            if start_id != handle.position:
                after = None if start_id == 0 else handle.recent.get(start_id)
                if after is None and start_id != 0:  # older than we remember: by its prefix
                    prefix = format(start_id - 16, "015x")
                    after = prefix + "f" * (self.engine.hash_length - len(prefix))
                handle.reset(after)
                handle.position = start_id
            reply = _handles.readdir_reply
            obj_attrs = self.attrs.object
            items = handle.items
            i = handle.index
            try:
                while True:
                    n = len(items)
                    while i < n:
                        name, hashkey, size, ino, next_id = items[i]
                        if ino is None:
                            if not self._reply_loose(token, name, hashkey, size, next_id):
                                return
                        elif not reply(token, name, obj_attrs(ino, size), next_id):
                            return
                        i += 1
                    if handle.exhausted:
                        return
                    handle.accept(i)
                    await self._fill(handle)
                    items = handle.items
                    i = 0
            finally:
                handle.accept(i)

    def _reply_loose(self, token: Any, name: bytes, hashkey: str, size: int, next_id: int) -> bool:
        """A loose object's entry: a tracked inode while the table has room, else an untracked
        number with zero timeouts."""
        table = self.table
        node = table.find_object(hashkey)
        if node is None and table.object_count >= table.max_objects:
            # The kernel keeps every READDIRPLUS entry (until memory pressure), and it can only
            # drop the ones we invalidate between getdents calls. Past the bound, hand out a
            # number we do not track, with zero timeouts: any use of the entry revalidates it by
            # name first and gets a tracked inode.
            attrs = self.attrs.untracked_object(table.spare_number(), size)
            return bool(_handles.readdir_reply(token, name, attrs, next_id))
        created = node is None
        if node is None:
            node = table.object_node(hashkey, size)
        # Tracked entries get the long timeouts of lookups (`ls -l` then needs no lookups) and
        # count against the bound like them.
        attrs = self.attrs.object(node.ino, node.size, OBJECT_TIMEOUT)
        if not _handles.readdir_reply(token, name, attrs, next_id):
            if created:
                table.maybe_drop(node)
            return False
        self.remember(node)
        return True

    async def _fill(self, handle: HashDirHandle) -> None:
        """The next batch: the one prefetched for this cursor if any, else fetched now; then
        the batch after it is started, so that it is ready when the kernel asks."""
        pending = handle.prefetch
        handle.prefetch = None
        if pending is None or handle.prefetch_after != handle.after:
            pending = self.offload.submit(self._fetch, handle.after,
                                          network=self.index_may_block)
        items, last, exhausted = await pending.result()
        handle.items = items
        handle.index = 0
        handle.after = last
        handle.exhausted = exhausted
        if not exhausted:
            handle.prefetch = self.offload.submit(self._fetch, last, network=self.index_may_block)
            handle.prefetch_after = last

    def _fetch(self, after: str | None) -> tuple[list[ListingEntry], str | None, bool]:
        """One batch of the listing strictly after `after` (runs in a worker thread)."""
        iterator = self.engine.iter_entries(after=after)
        try:
            items = [listing_entry(hashkey, size, rowid)
                     for hashkey, size, rowid in itertools.islice(iterator, LISTING_BATCH)]
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
        last = items[-1][1] if items else after
        return items, last, len(items) < LISTING_BATCH
