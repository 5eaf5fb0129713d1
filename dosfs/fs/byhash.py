"""by-hash/: one read-only file per object, looked up, listed, opened, read and verified.

* Lookup of an unknown name always asks the engine (a miss is never cached, so new objects
  appear at once); a name the kernel holds needs no engine call (objects are immutable).
* Reads never hand out wrong bytes: an object of at most SMALL_VERIFY bytes is hashed before its
  first byte is served. A bigger one with recorded block checksums (container.blocksums) has
  each read widened to whole blocks and checked against them: EIO where a block does not match
  and its whole hash confirms the damage (sums that disagree with bytes that hash to their name
  are replaced). A bigger one without sums is hashed off the loop while it is served
  (container.verify), and the read that completes it (reaches its end, in whatever order the
  reads came) waits for the verdict: EIO and an ERROR line unless it hashed to its name; that
  pass records its sums for later opens. The verdict is kept on the inode, so re-opens do not
  check again. `verify=False` (-o verify=off) serves raw bytes.
* Listing streams in hash order with a stable cursor (16 + the first 60 bits of the hash);
  entries get long timeouts while the inode table has room, untracked numbers past it.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Callable

import pyfuse3
import trio

from dosfs.container import verify as _verify
from dosfs.container.blocksums import BlockMismatch
from dosfs.container.errors import CorruptObject, NotExistent
from dosfs.container.packstore import Unavailable, WouldBlock, local_only
from dosfs.engine import EngineLike, VerifierLike
from dosfs.fs.attrs import FIXED_TIMEOUT, AttrBuilder
from dosfs.fs.byhash_listing import HashListing
from dosfs.fs.errors import fuse_error
from dosfs.fs.handles import ReadHandle
from dosfs.fs.inodes import (
    BY_HASH_INODE,
    BY_HASH_NAME,
    MAX_ROWID,
    FixedDir,
    InodeTable,
    Node,
    ObjectNode,
    PackedRef,
    ShortLink,
    packed_number,
)
from dosfs.fs.memory import Trimmer
from dosfs.fs.namespace import NamespaceBase, Namespaces
from dosfs.fs.offload import Offload
from dosfs.fs.stats import Stats

log = logging.getLogger("dosfs.fs")

#: Seconds after a read found an object's bytes unavailable that reads of the same handle
#: fail at once (ByHash.read).
RETRY_AFTER = 2.0
#: Objects up to this size are hashed before their first byte is served.
SMALL_VERIFY = _verify.SMALL_VERIFY  # one bound for the mount and `dosfs cat`
#: Closing a compressed reader of at least this size returns freed heap memory to the OS.
TRIM_AFTER = 8 << 20
#: Seconds after the last lookups that the engine's lookup snapshot is ended (snapshot_keeper).
SNAPSHOT_IDLE = 0.1
#: Verdicts remembered (about 100 bytes each); the oldest are forgotten first.
MAX_VERDICTS = 16_384
#: xattr names served for objects (``user.dosfs.<key>``).
XATTR_PREFIX = b"user.dosfs."
XATTR_ALWAYS = ("hash", "type", "size")
XATTR_PACKED = ("pack_id", "pack_offset", "pack_length", "compressed")


class ByHash(HashListing, NamespaceBase):
    """The by-hash/ namespace over one engine: its folder, objects (loose: ObjectNode, packed:
    PackedRef) and short-hash links; read-only (``listing``: whether the folder may be read)."""

    def __init__(
        self,
        spaces: Namespaces,
        engine: EngineLike,
        table: InodeTable,
        attrs: AttrBuilder,
        offload: Offload,
        *,
        verify: bool = True,
        listing: bool = True,
        read_only: bool = False,
        invalidate_entry: Callable[[int, bytes], None] | None = None,
        stats: Stats | None = None,
    ) -> None:
        super().__init__(spaces)
        self.dir = FixedDir(BY_HASH_INODE, BY_HASH_NAME, BY_HASH_INODE)
        table.add_fixed(self.dir)
        self.listing = listing
        self.read_only = read_only
        self.engine = engine
        self.entry = engine.entry_recent  # bound once: the lookup hot path
        #: lookups may wait on a server (an s3 mount): see lookup_waiting
        self.index_may_block = engine.index_may_block
        #: set by lookups while the engine holds a read snapshot for them (snapshot_keeper)
        self.snapshot_used = trio.Event()
        self.hash_length = engine.hash_length
        self.table = table
        self.attrs = attrs
        self.offload = offload
        self.verify = verify
        #: asks the kernel to drop a directory entry (pyfuse3.invalidate_entry_async in a mount;
        #: None in adapter tests). Used to keep the by-hash inodes bounded.
        self.invalidate_entry = invalidate_entry
        self.trimmer = Trimmer()
        self.stats = stats if stats is not None else Stats()
        #: inode -> whether its object hashed to its name (re-opens do not hash again)
        self.verdicts: dict[int, bool] = {}

    # ------------------------------------------------------------------ names
    async def lookup(self, parent: Node, name: bytes) -> pyfuse3.EntryAttributes:
        if parent is self.dir:
            if name != b"." and name != b"..":
                if self.index_may_block:  # an s3 mount: the index is read on demand
                    return await self.lookup_waiting(name)
                return self.lookup_hash(name)
            if name == b"..":
                return self.spaces.entry(self.spaces.root)
        return await super().lookup(parent, name)  # ".", or a name inside a file: ENOTDIR

    def lookup_hash(self, name: bytes) -> pyfuse3.EntryAttributes:
        """The attributes of `name`, counted as one more kernel reference; ENOENT if absent.
        One index query; a packed object's number is computed from its row (the hot path of
        `stat` and `open` of names the kernel has not seen: kept flat on purpose)."""
        if len(name) != self.hash_length:
            return self._short(name)
        try:
            hashkey = name.decode("ascii")
        except UnicodeDecodeError:
            raise fuse_error(errno.ENOENT) from None
        rowid, size = self.entry(hashkey)  # an invalid key is NotExistent: ENOENT
        if not self.snapshot_used.is_set():
            self.snapshot_used.set()
        if rowid is not None and rowid <= MAX_ROWID:
            return self.attrs.object(packed_number(rowid, int(hashkey[:15], 16)), size)
        node = self.table.object_node(hashkey, size)
        self.remember(node)
        return self.attrs.object(node.ino, size)

    async def lookup_waiting(self, name: bytes) -> pyfuse3.EntryAttributes:
        """lookup() on an engine whose index may wait on a server: answered on the loop when
        the index pages it needs are here, else fetched first on a network worker (under the
        request's deadline) and then answered on the loop, so the loop never waits and the
        inode table is only touched there."""
        try:
            with local_only():
                return self.lookup_hash(name)
        except WouldBlock:
            pass
        await self.offload.wait_network(self._warm_name, name)
        return self.lookup_hash(name)

    def _warm_name(self, name: bytes) -> None:
        """The engine calls lookup(name) makes, for their side effect: pages fetched."""
        key = name.decode("ascii", "replace")
        try:
            if len(name) == self.hash_length:
                self.engine.entry(key)
            else:
                self.engine.resolve_prefix(key)
        except NotExistent:
            pass  # lookup() says ENOENT

    async def snapshot_keeper(self) -> None:
        """Ends the engine's lookup snapshot SNAPSHOT_IDLE after the lookups that used it (it
        is renewed every 50 ms while they go on): an idle mount holds no read transaction, so
        the index's WAL can be reset by checkpoints. Runs for the life of the mount; no
        wakeups while nothing is looked up."""
        while True:
            await self.snapshot_used.wait()
            await trio.sleep(SNAPSHOT_IDLE)
            self.snapshot_used = trio.Event()
            self.engine.release_snapshot()

    def _short(self, name: bytes) -> pyfuse3.EntryAttributes:
        """A short hash: a symlink to the full name, or ENOENT (unknown, ambiguous, < 8)."""
        try:
            prefix = name.decode("ascii")
        except UnicodeDecodeError:
            raise fuse_error(errno.ENOENT) from None
        if len(prefix) > self.hash_length:
            raise fuse_error(errno.ENOENT)
        target = self.engine.resolve_prefix(prefix)
        if target is None:
            raise fuse_error(errno.ENOENT)
        link = ShortLink(target.encode())
        self.table.register(link)
        link.lookups += 1
        return self.short_attrs(link)

    def short_attrs(self, link: ShortLink) -> pyfuse3.EntryAttributes:
        return self.attrs.short_link(link.ino, len(link.target))

    def packed_attrs(self, ref: PackedRef) -> pyfuse3.EntryAttributes:
        hashkey, size = self._packed(ref)
        return self.attrs.object(ref.ino, size)

    def _packed(self, ref: PackedRef) -> tuple[str, int]:
        """(hashkey, size) of the object a computed number stands for; ESTALE when its row
        is gone or is another object's now (a delete, then a reused row id)."""
        found = self.engine.entry_by_id(ref.rowid)
        if found is None or not ref.names(found[0]):
            raise fuse_error(errno.ESTALE)
        hashkey, size = found
        return hashkey, size

    def remember(self, node: ObjectNode) -> None:
        """One more kernel reference to ``node``; past the bound, old entries are invalidated
        in the kernel so that it forgets them (memory stays flat for any listing size)."""
        stale = self.table.remember_object(node)
        if stale and self.invalidate_entry is not None:
            for old in stale:
                self.invalidate_entry(BY_HASH_INODE, old.hashkey.encode())

    def count(self, node: Node) -> None:
        if isinstance(node, ObjectNode):
            self.remember(node)
        else:
            node.lookups += 1

    def getattr(self, node: Node) -> pyfuse3.EntryAttributes:
        if isinstance(node, ObjectNode):
            return self.attrs.object(node.ino, node.size)
        if isinstance(node, PackedRef):
            return self.packed_attrs(node)
        if isinstance(node, ShortLink):
            return self.short_attrs(node)
        return self.attrs.directory(node.ino, 0o555 if self.listing else 0o111, 2, FIXED_TIMEOUT)

    def readlink(self, node: Node) -> bytes:
        if isinstance(node, ShortLink):
            return node.target
        raise fuse_error(errno.EINVAL)

    def refuse(self, node: Node) -> pyfuse3.FUSEError:
        """by-hash/ is read-only; a name inside one of its files is ENOTDIR on a writable
        mount (as incoming/ answers for its files)."""
        if self.read_only or node is self.dir:
            return fuse_error(errno.EROFS)
        return fuse_error(errno.ENOTDIR)

    # ------------------------------------------------------------------ open, read, release
    async def open(self, node: Node, flags: int) -> tuple[ReadHandle, pyfuse3.FileInfo]:
        if isinstance(node, ObjectNode | PackedRef):
            if (flags & os.O_ACCMODE) != os.O_RDONLY:
                raise fuse_error(errno.EROFS)
            if self.index_may_block:  # an s3 mount: the index is read on demand
                return await self.open_waiting(node), pyfuse3.FileInfo(keep_cache=True)
            return self.open_object(node), pyfuse3.FileInfo(keep_cache=True)
        if isinstance(node, ShortLink):
            raise fuse_error(errno.ELOOP)
        raise fuse_error(errno.EISDIR)

    def open_object(self, node: ObjectNode | PackedRef) -> ReadHandle:
        """A read handle of an object inode (its verdict, if known, comes along)."""
        if isinstance(node, PackedRef):
            reader = self.engine.open_object_by_id(node.rowid)  # one round trip, by row
            if not node.names(reader.hashkey):
                reader.close()
                raise fuse_error(errno.ESTALE)
        else:
            reader = self.engine.open_object(node.hashkey)
        trusted = not self.verify or self.verdicts.get(node.ino) is True
        handle = ReadHandle(reader, reader.hashkey, node.ino, trusted)
        if not trusted and reader.size > SMALL_VERIFY:
            handle.sums = self.engine.block_sums(reader.hashkey, reader.size)
        return handle

    async def open_waiting(self, node: ObjectNode | PackedRef) -> ReadHandle:
        """open() on an engine whose index may wait on a server (as lookup_waiting)."""
        try:
            with local_only():
                return self.open_object(node)
        except WouldBlock:
            pass
        if isinstance(node, ObjectNode):
            await self.offload.wait_network(self._warm_name, node.hashkey.encode())
        else:
            await self.offload.wait_network(self.engine.entry_by_id, node.rowid)
        return self.open_object(node)

    def open_committed(self, hashkey: str) -> ReadHandle:
        """A read handle of an object the mount just committed (and so hashed itself)."""
        return ReadHandle(self.engine.open_object(hashkey), hashkey, None, True)

    async def read(self, handle: ReadHandle, off: int, size: int) -> bytes:
        """Bytes of an open object. A read of a handle whose bytes were unavailable (a server
        that did not deliver) less than RETRY_AFTER seconds ago fails at once: the kernel
        follows a failed readahead with a read of its own, which would wait a whole timeout
        again; a new open tries the server again at once."""
        if time.monotonic() - handle.unavailable_at < RETRY_AFTER:
            raise fuse_error(errno.EIO)
        try:
            return await self._read(handle, off, size)
        except Unavailable:
            handle.unavailable_at = time.monotonic()
            raise

    async def _read(self, handle: ReadHandle, off: int, size: int) -> bytes:
        if handle.trusted:
            return await self.offload.read(handle.reader, off, size)
        if handle.ino is not None and self.verdicts.get(handle.ino) is False:
            raise fuse_error(errno.EIO)  # known bad: logged when it was found
        reader = handle.reader
        if handle.sums is not None:
            return await self._read_summed(handle, off, size)
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
            if not verifier.ok and verifier.unreadable:
                # a server that did not answer: EIO now, no verdict (a later read hashes again)
                handle.verifier = handle.verdict = None
                handle.unavailable_at = time.monotonic()
                log.warning("%s: not verified, bytes unreadable: %s", handle.hashkey,
                            verifier.reason)
                raise fuse_error(errno.EIO)
            if not verifier.ok:
                raise self._corrupt(handle, f"{verifier.reason} ({reader.where()})")
            self._trusted(handle)
        return data

    async def _read_summed(self, handle: ReadHandle, off: int, size: int) -> bytes:
        """A read widened to whole blocks and checked against the recorded sums (xxh3 at
        ~9 GB/s: in the loop). A mismatch hashes the whole object: EIO if it is damaged,
        else the sums were wrong (that pass replaces them) and the bytes are served."""
        sums, reader = handle.sums, handle.reader
        assert sums is not None
        start, end = sums.span(off, size)
        if end <= off:
            return b""
        data = await self.offload.read(reader, start, end - start)
        try:
            if len(data) != end - start:
                raise BlockMismatch(handle.hashkey, f"{len(data)} of {end - start} bytes "
                                    f"at offset {start} ({reader.where()})")
            sums.check(start, data, reader.where())
        except BlockMismatch as exc:
            await self._hash_whole(handle, exc.reason)
            return await self.offload.read(reader, off, size)
        if start == off and len(data) <= size:
            return data
        return data[off - start : off - start + size]

    async def _hash_whole(self, handle: ReadHandle, reason: str) -> None:
        """Bytes disagreed with their sums: hash the whole object and wait for the verdict
        (EIO unless it hashes to its name; if it does, that pass records the right sums over
        the wrong ones)."""
        log.warning("%s: %s; hashing the whole object", handle.hashkey, reason)
        handle.sums = None
        self._start_verifier(handle)
        verifier, verdict = handle.verifier, handle.verdict
        assert verifier is not None and verdict is not None
        verifier.finish()
        await verdict.wait()
        if not verifier.ok:
            if verifier.unreadable:
                handle.verifier = handle.verdict = None
                raise fuse_error(errno.EIO)
            raise self._corrupt(handle, f"{verifier.reason} ({handle.reader.where()})")
        self._trusted(handle)

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

    def _verdict(self, ino: int | None, ok: bool) -> None:
        if ino is None:
            return
        verdicts = self.verdicts
        if len(verdicts) >= MAX_VERDICTS:
            del verdicts[next(iter(verdicts))]  # the oldest: it may be hashed again one day
        verdicts[ino] = ok

    def _trusted(self, handle: ReadHandle) -> None:
        handle.trusted = True
        handle.verifier = None
        self._verdict(handle.ino, True)

    def _corrupt(self, handle: ReadHandle, reason: str) -> pyfuse3.FUSEError:
        """The object did not hash to its name: EIO now and for every later read of it."""
        self._verdict(handle.ino, False)
        self.stats.verify_failures += 1
        log.error("corrupt object %s: %s; answering EIO", handle.hashkey, reason)
        return fuse_error(errno.EIO)

    async def release(self, handle: ReadHandle) -> None:
        self.close(handle)

    def shutdown(self, handles: list[ReadHandle]) -> None:
        for handle in handles:
            try:
                self.close(handle)
            except Exception as exc:  # noqa: BLE001 - best effort at shutdown
                log.warning("cleanup at unmount: %s", exc)

    def close(self, handle: ReadHandle) -> None:
        """Stop the handle's hashing, close its reader (and give freed pages back)."""
        if handle.verifier is not None:
            handle.verifier.cancel()
            handle.verifier = None
        handle.reader.close()
        if handle.reader.compressed and handle.reader.size >= TRIM_AFTER:
            self.trimmer.maybe_trim()  # its checkpoints were freed: give the pages back

    # ------------------------------------------------------------------ xattrs
    def _hashkey(self, node: ObjectNode | PackedRef) -> str:
        return self._packed(node)[0] if isinstance(node, PackedRef) else node.hashkey

    async def getxattr(self, node: Node, key: str) -> bytes:
        if not isinstance(node, ObjectNode | PackedRef):
            raise fuse_error(pyfuse3.ENOATTR)
        if key == "hash":
            return self._hashkey(node).encode()
        hashkey = self._hashkey(node)
        if self.index_may_block:  # an s3 mount: its index page may have to be fetched first
            try:
                with local_only():
                    meta = self.engine.get_object_meta(hashkey)
            except WouldBlock:
                meta = await self.offload.wait_network(self.engine.get_object_meta, hashkey)
        else:
            meta = self.engine.get_object_meta(hashkey)
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

    def listxattr(self, node: Node) -> list[bytes]:
        if not isinstance(node, ObjectNode | PackedRef):
            return []
        keys: tuple[str, ...] = XATTR_ALWAYS
        if self.engine.get_object_meta(self._hashkey(node)).type.value == "packed":
            keys += XATTR_PACKED
        return [XATTR_PREFIX + key.encode() for key in keys]
