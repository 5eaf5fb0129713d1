"""A TCP forwarder between dosfs and the real S3 gateway that can fail on demand: the network
faults (a server that refuses, one that accepts and never answers) without a fake S3. Bytes are
forwarded unchanged in mode "pass"; "refuse" closes every connection at once; "hang" holds them
open and silent. Changing the mode cuts the connections already open (a client's pooled
keep-alive connections must not bypass the fault).

It also counts what crosses it (`down`: bytes to the client, `up`: bytes to the server,
`requests`: HTTP request lines sent up), so tests measure a client's traffic on the wire."""

from __future__ import annotations

import contextlib
import socket
import threading
from urllib.parse import urlsplit


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        url = urlsplit(upstream)
        self.upstream = (url.hostname or "127.0.0.1", url.port or 80)
        self.mode = "pass"
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        self.down = self.up = self.requests = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def counts(self) -> tuple[int, int, int]:
        """(bytes down, bytes up, requests) so far."""
        with self._lock:
            return self.down, self.up, self.requests

    def set_mode(self, mode: str) -> None:
        assert mode in ("pass", "refuse", "hang")
        self.mode = mode
        self._cut()

    def _cut(self) -> None:
        with self._lock:
            conns, self._open = self._open, set()
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.mode == "refuse":
                client.close()
                continue
            with self._lock:
                self._open.add(client)
            if self.mode == "hang":
                continue  # held open, never answered, until the mode changes
            try:
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._open.add(server)
            for a, b, up in ((client, server, True), (server, client, False)):
                threading.Thread(target=self._pipe, args=(a, b, up), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        tail = b""
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
                with self._lock:
                    if up:
                        self.up += len(data)
                        self.requests += (tail + data).count(b" HTTP/1.1\r\n")
                        tail = data[-10:]
                    else:
                        self.down += len(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()
        self._cut()
