"""scripts/benchlib/slowlink.py, the forwarder that stands in for a WAN link in `scripts/bench
remote`: its figures are only worth something if it adds the delay it claims, caps the rate
for all connections together, and carries every byte unchanged. Lower bounds are exact (the
forwarder must never be faster than the link it imitates); upper bounds are loose (the machine
is shared)."""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from benchlib.slowlink import SlowLink  # noqa: E402

DELAY = 0.05
RATE = 8e6  # bits/s: 1 MB/s each way


@pytest.fixture
def echo() -> Iterator[int]:
    """A TCP echo server on 127.0.0.1; its port."""
    srv = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    def answer(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(1 << 16):
                conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield srv.getsockname()[1]
    finally:
        srv.close()


def _connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _roundtrip(s: socket.socket, payload: bytes) -> bytes:
    got = bytearray()
    sender = threading.Thread(target=s.sendall, args=(payload,))
    sender.start()
    while len(got) < len(payload):
        chunk = s.recv(1 << 16)
        assert chunk, "connection closed early"
        got += chunk
    sender.join()
    return bytes(got)


def test_delay_rate_and_bytes(echo: int) -> None:
    with SlowLink(f"127.0.0.1:{echo}", DELAY, RATE) as link:
        with _connect(link.port) as s:
            t = time.monotonic()
            assert _roundtrip(s, b"x") == b"x"
            first = time.monotonic() - t  # handshake round trip + one round trip
            t = time.monotonic()
            assert _roundtrip(s, b"y") == b"y"
            rtt = time.monotonic() - t
            assert 4 * DELAY <= first < 4 * DELAY + 1.0
            assert 2 * DELAY <= rtt < 2 * DELAY + 0.5

            payload = os.urandom(512 << 10)  # 0.5 s each way at 1 MB/s
            t = time.monotonic()
            back = _roundtrip(s, payload)
            took = time.monotonic() - t
            assert hashlib.sha256(back).digest() == hashlib.sha256(payload).digest()
            assert took >= len(payload) * 8 / RATE


def test_connections_share_the_cap(echo: int) -> None:
    """Two connections at once get the link's rate between them, not each."""
    with SlowLink(f"127.0.0.1:{echo}", 0.0, RATE) as link:
        payloads = [os.urandom(256 << 10) for _ in range(2)]
        results: list[bytes] = [b"", b""]

        def one(i: int) -> None:
            with _connect(link.port) as s:
                results[i] = _roundtrip(s, payloads[i])

        threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
        t = time.monotonic()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        took = time.monotonic() - t
        assert results == payloads
        assert took >= sum(map(len, payloads)) * 8 / RATE


def test_link_ends_with_its_process(echo: int) -> None:
    link = SlowLink(f"127.0.0.1:{echo}", DELAY, RATE)
    with link:
        assert link.proc is not None
        proc = link.proc
    assert proc.poll() is not None
