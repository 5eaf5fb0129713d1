"""The smallest pyfuse3 filesystem that serves a container's by-hash/: the reference side of the
metadata figures (the ceiling of any pyfuse3 design on this machine).

Every object is resolved into a dict at start (memory grows with the container: this is what
dosfs must not do), reads are one os.pread inline (no verification), timeouts are long,
keep_cache is on, readdir returns attributes. Run: python -m benchlib.minimalfs CONTAINER MNT
(foreground; SIGTERM/SIGINT unmount). With --flush it also answers FLUSH (a no-op): the
kernel then sends one on every close, as it must to any FS that commits writes at close().
"""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import stat
import sys
import zlib

import pyfuse3
import trio

ROOT, BY_HASH = pyfuse3.ROOT_INODE, pyfuse3.ROOT_INODE + 1
TIMEOUT = 24 * 3600.0


class MinimalFS(pyfuse3.Operations):
    def __init__(self, folder: str) -> None:
        super().__init__()
        self.names: list[bytes] = []
        self.by_name: dict[bytes, int] = {}
        self.entries: dict[int, tuple[int, int, int, int, int, str]] = {}  # ino -> fd...
        fds: dict[int, int] = {}
        db = sqlite3.connect(f"file:{folder}/packs.idx?mode=ro", uri=True)
        rows = db.execute("SELECT hashkey, pack_id, offset, length, size, compressed "
                          "FROM db_object").fetchall()
        db.close()
        ino = BY_HASH + 1
        for hashkey, pack_id, offset, length, size, compressed in rows:
            if pack_id not in fds:
                fds[pack_id] = os.open(f"{folder}/packs/{pack_id}", os.O_RDONLY)
            self._add(ino, hashkey, (fds[pack_id], offset, length, size, compressed, ""))
            ino += 1
        loose = f"{folder}/loose"
        for shard in os.listdir(loose):
            for rest in os.listdir(f"{loose}/{shard}"):
                if (shard + rest).encode() not in self.by_name:
                    path = f"{loose}/{shard}/{rest}"
                    size = os.stat(path).st_size
                    self._add(ino, shard + rest, (-1, 0, size, size, 0, path))
                    ino += 1
        self.names.sort()

    def _add(self, ino: int, hashkey: str, entry: tuple[int, int, int, int, int, str]) -> None:
        self.names.append(hashkey.encode())
        self.by_name[hashkey.encode()] = ino
        self.entries[ino] = entry

    def _attrs(self, ino: int) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = ino
        a.entry_timeout = a.attr_timeout = TIMEOUT
        if ino in (ROOT, BY_HASH):
            a.st_mode, a.st_nlink = stat.S_IFDIR | 0o555, 2
        else:
            a.st_mode, a.st_nlink = stat.S_IFREG | 0o444, 1
            a.st_size = self.entries[ino][3]
        a.st_blksize = 1 << 20
        return a

    async def lookup(self, parent: int, name: bytes, ctx: object) -> pyfuse3.EntryAttributes:
        if parent == ROOT and name == b"by-hash":
            return self._attrs(BY_HASH)
        ino = self.by_name.get(name) if parent == BY_HASH else None
        if ino is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attrs(ino)

    async def getattr(self, inode: int, ctx: object) -> pyfuse3.EntryAttributes:
        return self._attrs(inode)

    async def opendir(self, inode: int, ctx: object) -> int:
        return inode

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        if fh == ROOT:
            if start_id == 0:
                pyfuse3.readdir_reply(token, b"by-hash", self._attrs(BY_HASH), 1)
            return
        for i in range(start_id, len(self.names)):
            name = self.names[i]
            if not pyfuse3.readdir_reply(token, name, self._attrs(self.by_name[name]), i + 1):
                return

    async def open(self, inode: int, flags: int, ctx: object) -> pyfuse3.FileInfo:
        if flags & os.O_ACCMODE != os.O_RDONLY:
            raise pyfuse3.FUSEError(errno.EROFS)
        return pyfuse3.FileInfo(fh=inode, keep_cache=True)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        fd, offset, length, full, compressed, path = self.entries[fh]
        if path:  # loose: inline like everything here (this FS never waits for anything else)
            lfd = os.open(path, os.O_RDONLY)
            try:
                return os.pread(lfd, size, off)
            finally:
                os.close(lfd)
        if compressed:
            return zlib.decompress(os.pread(fd, length, offset))[off : off + size]
        return os.pread(fd, max(0, min(size, full - off)), offset + off)


class MinimalFlushFS(MinimalFS):
    """Without `flush`, pyfuse3 answers ENOSYS once and the kernel stops sending FLUSH."""

    async def flush(self, fh: int) -> None:
        return None


def main() -> None:
    folder, mountpoint = sys.argv[1], sys.argv[2]
    fs = MinimalFlushFS(folder) if "--flush" in sys.argv[3:] else MinimalFS(folder)
    pyfuse3.init(fs, mountpoint, {"fsname=minimalfs", "ro", "default_permissions"})

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            async def stop() -> None:
                with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for _ in signals:
                        pyfuse3.terminate()
                        return
            nursery.start_soon(stop)
            await pyfuse3.main()
            nursery.cancel_scope.cancel()

    try:
        trio.run(run)
    finally:
        pyfuse3.close(unmount=True)


if __name__ == "__main__":
    main()
