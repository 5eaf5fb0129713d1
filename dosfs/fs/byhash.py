"""by-hash/: one read-only file per object, looked up, listed, opened, read and verified.

* Lookup of an unknown name always asks the engine (a miss is never cached, so new objects
  appear at once); a name the kernel holds needs no engine call (objects are immutable).
* Reads never hand out wrong bytes: an object of at most SMALL_VERIFY bytes is hashed before its
  first byte is served; a bigger one is hashed by a thread of its own while it is served
  (container.verify), and the read that completes it (reaches its end, in whatever order the
  reads came) waits for the verdict: EIO and an ERROR line unless it hashed to its name. The
  verdict is kept on the inode, so re-opens do not hash again. `verify=False` (-o verify=off)
  serves raw bytes.
* Listing streams in hash order with a stable cursor (16 + the first 60 bits of the hash);
  entries get long timeouts while the inode table has room, untracked numbers past it.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pyfuse3
import trio

from dosfs.container.errors import CorruptObject, NotExistent
from dosfs.fs import handles as _handles
from dosfs.fs.attrs import OBJECT_TIMEOUT, AttrBuilder
from dosfs.fs.engine import EngineLike, VerifierLike
from dosfs.fs.errors import fuse_error
from dosfs.fs.handles import HashDirHandle, ReadHandle
from dosfs.fs.inodes import BY_HASH_INODE, InodeTable, ObjectNode
from dosfs.fs.memory import Trimmer
from dosfs.fs.offload import Offload

log = logging.getLogger("dosfs.fs")

#: Objects up to this size are hashed before their first byte is served.
SMALL_VERIFY = 1 << 20
#: Closing a compressed reader of at least this size returns freed heap memory to the OS.
TRIM_AFTER = 8 << 20
#: How many (hashkey, size) a by-hash listing fetches per worker-thread round trip.
LISTING_BATCH = 256
#: xattr names served for objects (``user.dosfs.<key>``).
XATTR_PREFIX = b"user.dosfs."
XATTR_ALWAYS = ("type", "size")
XATTR_PACKED = ("pack_id", "pack_offset", "pack_length", "compressed")


def cursor_id(hashkey: str) -> int:
    """Readdir cursor of a by-hash entry: 16 + its first 60 bits, ordered like the hashes."""
    return 16 + int(hashkey[:15], 16)


class ByHash:
    """The by-hash/ namespace over one engine."""

    def __init__(
        self,
        engine: EngineLike,
        table: InodeTable,
        attrs: AttrBuilder,
        offload: Offload,
        *,
        verify: bool = True,
        invalidate_entry: Callable[[int, bytes], None] | None = None,
    ) -> None:
        self.engine = engine
        self.table = table
        self.attrs = attrs
        self.offload = offload
        self.verify = verify
        #: asks the kernel to drop a directory entry (pyfuse3.invalidate_entry_async in a mount;
        #: None in adapter tests). Used to keep the by-hash inodes bounded.
        self.invalidate_entry = invalidate_entry
        self.trimmer = Trimmer()
        self.verify_failures = 0

    # ------------------------------------------------------------------ names
    def lookup(self, name: bytes) -> ObjectNode:
        """The node of `name` (not yet counted as a kernel reference), or ENOENT."""
        try:
            hashkey = name.decode("ascii")
        except UnicodeDecodeError:
            raise fuse_error(errno.ENOENT) from None
        node = self.table.find_object(hashkey)
        if node is not None:
            return node  # known to the kernel already: immutable, no engine call needed
        if not self.engine.is_valid_hashkey(hashkey):
            raise fuse_error(errno.ENOENT)
        meta = self.engine.get_object_meta(hashkey)
        if meta.size is None:
            raise fuse_error(errno.ENOENT)
        return self.table.object_node(hashkey, meta.size)

    def remember(self, node: ObjectNode) -> None:
        """One more kernel reference to ``node``; past the bound, old entries are invalidated
        in the kernel so that it forgets them (memory stays flat for any listing size)."""
        stale = self.table.remember_object(node)
        if stale and self.invalidate_entry is not None:
            for old in stale:
                self.invalidate_entry(BY_HASH_INODE, old.hashkey.encode())

    def node_attrs(self, node: ObjectNode) -> pyfuse3.EntryAttributes:
        return self.attrs.object(node.ino, node.size)

    # ------------------------------------------------------------------ open, read, release
    def open(
        self, hashkey: str, node: ObjectNode | None = None, trusted: bool = False
    ) -> ReadHandle:
        """A read handle; `trusted`: the bytes were just hashed by us (a committed file)."""
        reader = self.engine.open_object(hashkey)
        trusted = trusted or not self.verify or (node is not None and node.verdict is True)
        return ReadHandle(reader, hashkey, node, trusted)

    async def read(self, handle: ReadHandle, off: int, size: int) -> bytes:
        if handle.trusted:
            return await self.offload.read(handle.reader, off, size)
        node = handle.node
        if node is not None and node.verdict is False:
            raise fuse_error(errno.EIO)  # known bad: logged when it was found
        reader = handle.reader
        if reader.size <= SMALL_VERIFY:
            whole = await self.offload.read(reader, 0, reader.size)  # errors: boundary
            try:
                await self.offload.hash_check(
                    lambda: self.engine.check_hash(handle.hashkey, whole, reader.where()),
                    len(whole),
                )
            except CorruptObject as exc:
                raise self._corrupt(handle, exc.reason) from None
            self._trusted(handle)
            return whole[off : off + size]
        if handle.verifier is None:
            self._start_verifier(handle)
        verifier = handle.verifier
        if verifier is None or handle.verdict is None:  # pragma: no cover - just started
            raise fuse_error(errno.EIO)
        data = await self.offload.read(reader, off, size)
        verifier.feed(off, data)
        if off + len(data) >= reader.size:  # this read completes the object
            verifier.finish()
            await handle.verdict.wait()
            if not verifier.ok:
                raise self._corrupt(handle, f"{verifier.reason} ({reader.where()})")
            self._trusted(handle)
        return data

    def _start_verifier(self, handle: ReadHandle) -> None:
        token = trio.lowlevel.current_trio_token()
        event = trio.Event()

        def done(_verifier: VerifierLike) -> None:
            try:
                token.run_sync_soon(event.set)
            except trio.RunFinishedError:
                pass

        clone = handle.reader.clone()
        clone.sequential()
        handle.verdict = event
        # fed by the reads (no second read of the bytes); gaps it reads itself
        handle.verifier = self.engine.verifier(clone, eager=False, on_done=done)

    def _trusted(self, handle: ReadHandle) -> None:
        handle.trusted = True
        handle.verifier = None
        if handle.node is not None:
            handle.node.verdict = True

    def _corrupt(self, handle: ReadHandle, reason: str) -> pyfuse3.FUSEError:
        """The object did not hash to its name: EIO now and for every later read of it."""
        if handle.node is not None:
            handle.node.verdict = False
        self.verify_failures += 1
        log.error("corrupt object %s: %s; answering EIO", handle.hashkey, reason)
        return fuse_error(errno.EIO)

    def release(self, handle: ReadHandle) -> None:
        if handle.verifier is not None:
            handle.verifier.cancel()
            handle.verifier = None
        handle.reader.close()
        if handle.reader.compressed and handle.reader.size >= TRIM_AFTER:
            self.trimmer.maybe_trim()  # its checkpoints were freed: give the pages back

    # ------------------------------------------------------------------ listing
    async def readdir(self, handle: HashDirHandle, start_id: int, token: Any) -> None:
        async with handle.lock:
            if start_id != handle.position:
                if start_id == 0:
                    after = None
                else:
                    after = handle.recent.get(start_id)
                    if after is None:  # a cursor older than we remember: resume by its prefix
                        prefix = format(start_id - 16, "015x")
                        after = prefix + "f" * (self.engine.hash_length - len(prefix))
                handle.reset(after)
                handle.position = start_id
            table = self.table
            while True:
                if not handle.buffer:
                    if handle.exhausted:
                        return
                    await self._fill(handle)
                    continue
                hashkey, size = handle.buffer[0]
                next_id = cursor_id(hashkey)
                node = table.find_object(hashkey)
                if node is None and table.object_count >= table.max_objects:
                    # The kernel keeps every READDIRPLUS entry (until memory pressure), and it
                    # can only drop the ones we invalidate between getdents calls. Past the
                    # bound, hand out a number we do not track, with zero timeouts: any use of
                    # the entry revalidates it by name first and gets a tracked inode.
                    attrs = self.attrs.untracked_object(table.spare_number(), size)
                    if not _handles.readdir_reply(token, hashkey.encode(), attrs, next_id):
                        return
                else:
                    created = node is None
                    if node is None:
                        node = table.object_node(hashkey, size)
                    # Tracked entries get the long timeouts of lookups (`ls -l` then needs no
                    # lookups) and count against the bound like them.
                    attrs = self.attrs.object(node.ino, node.size, OBJECT_TIMEOUT)
                    if not _handles.readdir_reply(token, hashkey.encode(), attrs, next_id):
                        if created:
                            table.maybe_drop(node)
                        return
                    self.remember(node)
                handle.buffer.popleft()
                handle.accepted(next_id, hashkey)

    async def _fill(self, handle: HashDirHandle) -> None:
        engine = self.engine

        def fetch(after: str | None) -> tuple[list[tuple[str, int]], str | None, bool]:
            items: list[tuple[str, int]] = []
            last = after
            iterator: Iterator[str] = engine.iter_hashkeys(after=after)
            try:
                for hashkey in iterator:
                    last = hashkey
                    try:
                        meta = engine.get_object_meta(hashkey)
                    except NotExistent:
                        continue  # deleted between listing and meta: skip it
                    if meta.size is None:
                        continue
                    items.append((hashkey, meta.size))
                    if len(items) >= LISTING_BATCH:
                        return items, last, False
                return items, last, True
            finally:
                close = getattr(iterator, "close", None)
                if close is not None:
                    close()

        items, last, exhausted = await self.offload.run(fetch, handle.after)
        handle.buffer.extend(items)
        handle.after = last
        handle.exhausted = exhausted

    # ------------------------------------------------------------------ xattrs
    def getxattr(self, node: ObjectNode, key: str) -> bytes:
        meta = self.engine.get_object_meta(node.hashkey)
        kind = str(meta.type.value)
        if key == "type":
            return kind.encode()
        if key == "size":
            return str(meta.size).encode()
        if key in XATTR_PACKED and kind == "packed":
            if key == "compressed":
                return str(int(bool(meta.pack_compressed))).encode()
            return str(getattr(meta, key)).encode()
        raise fuse_error(pyfuse3.ENOATTR)

    def listxattr(self, node: ObjectNode) -> list[bytes]:
        keys: tuple[str, ...] = XATTR_ALWAYS
        if self.engine.get_object_meta(node.hashkey).type.value == "packed":
            keys += XATTR_PACKED
        return [XATTR_PREFIX + key.encode() for key in keys]
