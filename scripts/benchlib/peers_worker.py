"""The reading side of bench_remote_peers.py, in a process of its own so that its time and peak
RSS are its own: one JSON request a line on stdin, one JSON answer a line on stdout.

Readers (`kind`): `mount` reads by-hash/<key> files of a dosfs mount one by one, as a user's
tools do; `dos` is disk-objectstore's Container on a folder (a peer's mount of the plain
container): its bulk read and its stream; `rc` is dosfs's RemoteContainer (opened by `open_rc`);
`get` is a plain GET of a byte range with the client dosfs uses (obstore). One process serves
the mounts one after the other (`close` lets go of a mount before it is unmounted); each
RemoteContainer gets a process of its own, whose peak RSS is the figure. Every timed read is
checked: sizes always, small objects by their sha256 after the clock stops, the big object by
the sha256 of sampled 1 MiB ranges."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import obstore
from disk_objectstore import Container as DosContainer

from dosfs.remote.container import RemoteContainer
from dosfs.remote.url import make_store, parse_url

CHUNK = 1 << 20


class Sampler:
    """The sha256 of given [start, start + CHUNK) ranges of a stream, whatever its read sizes."""

    def __init__(self, checks: list[tuple[int, str]]) -> None:
        self.want = {start: sha for start, sha in checks}
        self.parts: dict[int, bytearray] = {start: bytearray() for start in self.want}

    def feed(self, offset: int, data: memoryview) -> None:
        for start, part in self.parts.items():
            lo, hi = max(start, offset), min(start + CHUNK, offset + len(data))
            if lo < hi:
                part += data[lo - offset : hi - offset]

    def ok(self) -> bool:
        return all(hashlib.sha256(self.parts[s]).hexdigest() == h for s, h in self.want.items())


class Worker:
    def __init__(self) -> None:
        self.rc: RemoteContainer | None = None
        self.dos: dict[str, DosContainer] = {}

    def _dos(self, path: str) -> DosContainer:
        if path not in self.dos:
            self.dos[path] = DosContainer(path)
        return self.dos[path]

    def open_rc(self, url: str, cache_dir: str, endpoint: str) -> dict[str, Any]:
        os.environ["AWS_ENDPOINT_URL"] = endpoint
        t = time.perf_counter()
        self.rc = RemoteContainer(url, cache_dir=cache_dir)
        return {"s": time.perf_counter() - t}

    def _chunks(self, kind: str, path: str, key: str) -> Iterator[bytes]:
        if kind == "mount":
            with open(Path(path) / "by-hash" / key, "rb", buffering=0) as f:
                while chunk := f.read(CHUNK):
                    yield chunk
        elif kind == "dos":
            with self._dos(path).get_object_stream(key) as s:
                while chunk := s.read(CHUNK):
                    yield chunk
        else:
            assert self.rc is not None
            with self.rc.get_object_stream(key) as s:
                while chunk := s.read(CHUNK):
                    yield chunk

    def seq(self, kind: str, path: str, key: str, checks: list[tuple[int, str]]) -> dict[str, Any]:
        sampler = Sampler(checks)
        got = 0
        t = time.perf_counter()
        for chunk in self._chunks(kind, path, key):
            sampler.feed(got, memoryview(chunk))
            got += len(chunk)
        s = time.perf_counter() - t
        return {"s": s, "bytes": got, "ok": sampler.ok()}

    def get(self, url: str, key: str, start: int, length: int,
            checks: list[tuple[int, str]], endpoint: str) -> dict[str, Any]:
        os.environ["AWS_ENDPOINT_URL"] = endpoint
        u = parse_url(url)
        store = make_store(u)
        sampler = Sampler(checks)
        got = 0
        t = time.perf_counter()
        for chunk in obstore.get(store, u.key(key), options={"range": (start, start + length)}):
            sampler.feed(got, memoryview(chunk))
            got += len(chunk)
        return {"s": time.perf_counter() - t, "bytes": got, "ok": sampler.ok()}

    def latency(self, url: str, key: str, endpoint: str, n: int = 20) -> dict[str, Any]:
        """Median ms of a 1-byte ranged GET on an open connection (the link's round trip)."""
        os.environ["AWS_ENDPOINT_URL"] = endpoint
        u = parse_url(url)
        store = make_store(u)
        obstore.get_range(store, u.key(key), start=0, length=1)
        times = []
        for _ in range(n):
            t = time.perf_counter()
            obstore.get_range(store, u.key(key), start=0, length=1)
            times.append(time.perf_counter() - t)
        return {"ms": sorted(times)[n // 2] * 1e3}

    def small(self, kind: str, path: str, keys: list[str]) -> dict[str, Any]:
        t = time.perf_counter()
        if kind == "mount":
            by_hash = Path(path) / "by-hash"
            out: dict[str, bytes | None] = {}
            for k in keys:
                with open(by_hash / k, "rb") as f:
                    out[k] = f.read()
        elif kind == "dos":
            out = self._dos(path).get_objects_content(keys)
        else:
            assert self.rc is not None
            out = dict(self.rc.get_objects_content(keys))
        s = time.perf_counter() - t
        ok = len(out) == len(set(keys)) and all(
            v is not None and hashlib.sha256(v).hexdigest() == k for k, v in out.items())
        return {"s": s, "bytes": sum(len(v or b"") for v in out.values()), "ok": ok}

    def close(self) -> dict[str, Any]:
        for c in self.dos.values():
            c.close()
        self.dos.clear()
        if self.rc is not None:
            self.rc.close()
            self.rc = None
        return {}


def peak_rss() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    w = Worker()
    for line in sys.stdin:
        req = json.loads(line)
        op = req.pop("op")
        if op == "quit":
            break
        try:
            ans = {"rss": peak_rss()} if op == "rss" else getattr(w, op)(**req)
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which says so
            ans = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(ans), flush=True)
    w.close()


if __name__ == "__main__":
    main()
