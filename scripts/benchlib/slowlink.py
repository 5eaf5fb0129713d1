"""A TCP forwarder on 127.0.0.1 that makes loopback look like a WAN link, because this kernel has
no netem: every byte waits DELAY each way, each direction is capped at RATE shared by all
connections (as one link is), and a new connection pays one round trip before its first byte
(the TCP handshake). Bytes pass unchanged.

    python scripts/benchlib/slowlink.py --upstream 127.0.0.1:PORT [--delay-ms 10]
        [--rate-mbit 1000] [--port N]

Prints the port it listens on (a free one unless --port) on stdout once ready, runs until
SIGTERM or SIGINT, then prints what it carried on stderr. RATE 0 means uncapped.
From Python: `with SlowLink(upstream, delay, rate) as link: link.endpoint`.

Each connection holds at most WINDOW bytes per direction in the delay line (like a TCP receive
window): enough for 1 Gbit/s at 10 ms (1.25 MB), bounded so a slow reader stops the sender."""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

CHUNK = 256 << 10
WINDOW = 4 << 20


class Link:
    """One direction of the link: bytes leave in arrival order at `rate` (bytes/s, 0: no cap),
    all connections together, and arrive `delay` seconds later."""

    def __init__(self, rate: float, delay: float) -> None:
        self.rate = rate
        self.delay = delay
        self.free_at = 0.0
        self.bytes = 0

    def due(self, now: float, n: int) -> float:
        """When n bytes read now reach the other end."""
        self.bytes += n
        if not self.rate:
            return now + self.delay
        self.free_at = max(now, self.free_at) + n / self.rate
        return self.free_at + self.delay


class DelayLine:
    """The bytes of one direction of one connection between arrival and delivery, bounded by
    WINDOW so the reader stops reading while the writer is behind."""

    def __init__(self) -> None:
        self.items: collections.deque[tuple[float, bytes]] = collections.deque()
        self.held = 0
        self.broken = False  # the receiving end is gone: nothing more is accepted
        self.changed = asyncio.Condition()

    async def put(self, due: float, data: bytes) -> None:
        async with self.changed:
            await self.changed.wait_for(lambda: self.held < WINDOW or not data or self.broken)
            self.items.append((due, data))
            self.held += len(data)
            self.changed.notify_all()

    async def fail(self) -> None:
        async with self.changed:
            self.broken = True
            self.changed.notify_all()

    async def get(self) -> tuple[float, bytes]:
        async with self.changed:
            await self.changed.wait_for(lambda: bool(self.items))
            due, data = self.items.popleft()
            self.held -= len(data)
            self.changed.notify_all()
            return due, data


async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, link: Link) -> None:
    loop = asyncio.get_running_loop()
    line = DelayLine()

    async def deliver() -> None:
        try:
            while True:
                due, data = await line.get()
                wait = due - loop.time() - 0.0005  # the loop's timers round up to 1 ms
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    break
                dst.write(data)
                await dst.drain()
            if dst.can_write_eof():
                dst.write_eof()
        except OSError:
            await line.fail()

    sender = asyncio.create_task(deliver())
    last = 0.0
    try:
        while not line.broken and (data := await src.read(CHUNK)):
            last = link.due(loop.time(), len(data))
            await line.put(last, data)
    except OSError:
        pass
    finally:
        await line.put(max(last, loop.time() + link.delay), b"")  # EOF after the data
        await sender


class Forwarder:
    def __init__(self, upstream: tuple[str, int], delay: float, rate: float) -> None:
        self.upstream = upstream
        self.delay = delay
        self.up = Link(rate, delay)  # client -> server
        self.down = Link(rate, delay)  # server -> client
        self.connections = 0

    async def handle(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        self.connections += 1
        sw: asyncio.StreamWriter | None = None
        try:
            await asyncio.sleep(2 * self.delay)  # the handshake's round trip
            sr, sw = await asyncio.open_connection(*self.upstream, limit=2 * CHUNK)
            await asyncio.gather(_pump(cr, sw, self.up), _pump(sr, cw, self.down))
        except OSError:
            pass
        finally:
            for w in (cw, sw):
                if w is not None:
                    w.close()
                    with contextlib.suppress(OSError):
                        await w.wait_closed()


async def serve(upstream: tuple[str, int], delay: float, rate: float, port: int) -> None:
    fwd = Forwarder(upstream, delay, rate)
    server = await asyncio.start_server(fwd.handle, "127.0.0.1", port, limit=2 * CHUNK)
    print(server.sockets[0].getsockname()[1], flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print(f"slowlink: {fwd.connections} connections, {fwd.up.bytes} bytes up, "
          f"{fwd.down.bytes} bytes down", file=sys.stderr, flush=True)
    os._exit(0)  # connections still open are the kernel's to close; no cancellation noise


class SlowLink:
    """The forwarder in a process of its own (the caller's GIL must not slow it), stopped on
    exit whatever happens."""

    def __init__(self, upstream: str, delay: float, rate_bits: float,
                 log: Path | None = None) -> None:
        self.log = log
        host, _, port = upstream.removeprefix("http://").rstrip("/").rpartition(":")
        self.args = [sys.executable, str(Path(__file__).resolve()), "--upstream", f"{host}:{port}",
                     "--delay-ms", f"{delay * 1e3:g}", "--rate-mbit", f"{rate_bits / 1e6:g}"]
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> SlowLink:
        with open(self.log or os.devnull, "a") as err:
            self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=err, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError(f"slowlink did not start: {line!r}")
        self.port = int(line)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class Source:
    """A local TCP server that sends `size` zero bytes to each connection: a source cheap
    enough that what a sink measures through the forwarder is the forwarder."""

    def __init__(self, size: int) -> None:
        self.data = bytes(size)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.server.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError):
                conn.sendall(self.data)

    def __enter__(self) -> Source:
        return self

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.server.close()


def sink(port: int) -> float:
    """MiB/s of everything one connection to 127.0.0.1:port delivers, set-up included."""
    buf = bytearray(1 << 20)
    t = time.perf_counter()
    got = 0
    with socket.create_connection(("127.0.0.1", port)) as s:
        while n := s.recv_into(buf):
            got += n
    return got / (1 << 20) / (time.perf_counter() - t)


def capacity(delay: float, rate_bits: float) -> dict[str, float]:
    """Can the forwarder carry `rate_bits` here and now? One second's worth of bytes at that
    rate from a local source: straight, through the forwarder uncapped, and capped. The bench
    trusts the link only when the uncapped forwarder is well above the cap."""
    with Source(max(16 << 20, int(rate_bits / 8))) as src:
        out = {"direct": sink(src.port)}
        for name, (d, r) in {"uncapped": (0.0, 0.0), "capped": (delay, rate_bits)}.items():
            with SlowLink(f"127.0.0.1:{src.port}", d, r) as link:
                out[name] = sink(link.port)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--upstream", required=True, help="HOST:PORT of the server")
    ap.add_argument("--delay-ms", type=float, default=10.0, help="one-way delay (10)")
    ap.add_argument("--rate-mbit", type=float, default=1000.0, help="cap per direction, 0: none")
    ap.add_argument("--port", type=int, default=0)
    a = ap.parse_args()
    host, _, port = a.upstream.rpartition(":")
    asyncio.run(serve((host, int(port)), a.delay_ms / 1e3, a.rate_mbit * 1e6 / 8, a.port))


if __name__ == "__main__":
    main()
