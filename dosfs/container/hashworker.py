"""A helper process that hashes byte ranges of open files: `python -m dosfs.container.hashworker`.

Why a process: a server that verifies big objects while serving them (the mount) would hash on
a thread of its own, but that thread needs the GIL between chunks, and a busy serving thread
makes it wait (measured here: a 1 GiB verification took 1.2 s instead of 0.7 s next to a busy
FUSE loop). A process has its own interpreter: hashing runs at full speed on the other core.

Protocol (a SOCK_SEQPACKET socket on fd 3, one message per packet): a job is a JSON object
`{"id", "offset", "length", "compressed", "size", "hash_type"}` (and, to record the block sums
of a good object, `"sums_folder"` and `"hashkey"`: blocksums.py) sent with the file descriptor
to read (so the helper reads exactly the pinned file the server serves); `{"cancel": id}`
stops a job. Replies: `{"id", "digest", "size"}` or `{"id", "error"}`. The helper exits when the
socket is closed.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import threading
import zlib
from typing import Any

from dosfs.container.blocksums import BlockSumIndex, BlockSummer

CHUNK = 1 << 20
MAX_MESSAGE = 4096


def _hash(fd: int, job: dict[str, Any], cancelled: threading.Event) -> dict[str, object]:
    offset, length, size = int(job["offset"]), int(job["length"]), int(job["size"])
    hasher = hashlib.new(str(job["hash_type"]))
    got = 0
    pos = 0
    dobj = zlib.decompressobj() if job["compressed"] else None
    summer = BlockSummer() if job.get("sums_folder") else None
    pending = b""
    while pos < length or pending:
        if cancelled.is_set():
            return {"id": job["id"], "error": "cancelled"}
        if not pending:
            pending = os.pread(fd, min(CHUNK, length - pos), offset + pos)
            if not pending:
                return {"id": job["id"], "error": f"file ends at object offset {pos}"}
            pos += len(pending)
        if dobj is None:
            data, pending = pending, b""
        else:
            data = dobj.decompress(pending, CHUNK)
            pending = dobj.unconsumed_tail
        hasher.update(data)
        if summer is not None:
            summer.update(data)
        got += len(data)
        if got > size:
            break
    digest = hasher.hexdigest()
    if summer is not None and digest == job.get("hashkey") and got == size:
        BlockSumIndex(str(job["sums_folder"])).record([(digest, size, summer.sums())])
    return {"id": job["id"], "digest": digest, "size": got}


def serve(sock: socket.socket) -> None:
    lock = threading.Lock()
    cancels: dict[object, threading.Event] = {}

    def reply(message: dict[str, object]) -> None:
        with lock:
            try:
                sock.send(json.dumps(message).encode())
            except OSError:
                pass

    def work(fd: int, job: dict[str, Any], cancelled: threading.Event) -> None:
        try:
            result = _hash(fd, job, cancelled)
        except Exception as exc:  # noqa: BLE001 - reported to the server
            result = {"id": job["id"], "error": f"{type(exc).__name__}: {exc}"}
        finally:
            os.close(fd)
        cancels.pop(job["id"], None)
        reply(result)

    while True:
        try:
            data, fds, _flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, 1)
        except OSError:
            return
        if not data:
            return
        message = json.loads(data)
        if "cancel" in message:
            event = cancels.get(message["cancel"])
            if event is not None:
                event.set()
            for fd in fds:
                os.close(fd)
            continue
        if not fds:
            reply({"id": message.get("id"), "error": "no file descriptor"})
            continue
        cancelled = threading.Event()
        cancels[message["id"]] = cancelled
        threading.Thread(target=work, args=(fds[0], message, cancelled), daemon=True).start()


def main() -> int:
    sock = socket.socket(fileno=int(sys.argv[1]) if len(sys.argv) > 1 else 3)
    serve(sock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
