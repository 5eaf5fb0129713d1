"""The s3 mount and RemoteContainer against the tools users pick instead (issue 19, "peers in
the benchmark"), side by side in one run on one container: a plain GET, `rclone mount
--vfs-cache-mode full` and s3fs (`use_cache`), the peers read through disk-objectstore. Every
figure twice: on loopback, and with the gateway behind scripts/benchlib/slowlink.py (10 ms each
way, 1 Gbit/s), checked first to carry that rate.

    set -a; . DIR/env; set +a        # a scripts/s3-server folder
    python scripts/benchlib/bench_remote_peers.py --server DIR --work /tmp/x [--runs 3]

The peers cannot read what `dosfs push` publishes (docs/format.md, "Remote layout": not a
container folder), so the same container folder is also uploaded file by file under another
prefix of the same bucket (plain/c/), and each peer mounts that; the plain GET reads the big
object's bytes from its pack file there.
Downloads are counted by the gateway (the bytes its access log says each GET sent), the same
way for everyone, over each mount's whole life. Page caches are dropped before every cold read
and every cached re-read (root). Each mount and each RemoteContainer starts with an empty
cache."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import obstore
import peers
import peers_report
import slowlink
from slowlink import SlowLink

from dosfs.container import Container
from dosfs.remote.bucket import create_bucket
from dosfs.remote.push import push
from dosfs.remote.url import make_store, parse_url

MiB = 1 << 20
MOUNTS = ("dosfs", "rclone", "s3fs")
SIDES = ("dosfs", "rc", "get", "rclone", "s3fs")
WORKER = Path(__file__).with_name("peers_worker.py")
CALL_LIMIT = 900.0


DROP = [True]  # --no-drop-caches clears it


def drop_caches() -> None:
    if DROP[0] and os.geteuid() == 0:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")


class Reader:
    """A peers_worker.py process: calls answer a JSON line each, or fail loudly."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, str(WORKER)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)

    def call(self, op: str, **kw: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.proc.stdin.flush()
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(CALL_LIMIT):
                raise TimeoutError(f"reader: {op} took over {CALL_LIMIT:.0f} s")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"reader died during {op} (exit {self.proc.wait()})")
        ans: dict[str, Any] = json.loads(line)
        if "error" in ans:
            raise RuntimeError(f"reader, {op}: {ans['error']}")
        if ans.get("ok") is False:
            raise RuntimeError(f"reader, {op}: wrong bytes")
        return ans

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None,
                 tb: TracebackType | None) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write('{"op": "quit"}\n')
            self.proc.stdin.close()
            self.proc.wait(60)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


@dataclass
class Data:
    """The container every side reads, where each finds it, and what checks its bytes."""

    bucket: str
    big: str
    big_size: int
    pack_key: str  # the plain copy's pack file (the plain GET reads the big object's bytes there)
    offset: int
    checks: list[tuple[int, str]]
    small: list[str]
    sizes: dict[str, int] = field(default_factory=dict)


def build(work: Path, n_small: int, seq_mib: int) -> Data:
    """One pack: n_small objects of 1-64 KiB, the big object, 8 more of 4 MiB after it (less for
    a small big object: a reader that reads past its end shows in the downloads); published with
    `dosfs push` under pub/, and as plain files under plain/c/ for the peers and the GET."""
    rng = random.Random(19)
    folder = work / "container"
    with Container(folder) as c:
        c.init_container()
        datas = [rng.randbytes(rng.randint(1024, 64 * 1024)) for _ in range(n_small)]
        small = c.add_objects_to_pack(datas)
        sizes = dict(zip(small, map(len, datas), strict=True))
        del datas
        piece = os.urandom(min(64, seq_mib) * MiB)
        blob = b"".join(piece[:-1] + bytes([i]) for i in range(max(1, seq_mib // 64)))
        big = c.add_objects_to_pack([blob])[0]
        size = len(blob)
        c.add_objects_to_pack([os.urandom(min(4 * MiB, size // 8)) for _ in range(8)])
        offset = c.get_object_meta(big)["pack_offset"]
    checks = [(s, hashlib.sha256(blob[s : s + MiB]).hexdigest())
              for s in (0, size // 2, size - MiB)]
    del blob, piece
    bucket = f"peers-{uuid.uuid4().hex[:8]}"
    create_bucket(bucket)
    push(folder, f"s3://{bucket}/pub")
    url = parse_url(f"s3://{bucket}/plain/c")
    store = make_store(url)
    for path in sorted(folder.rglob("*")):  # the container folder as plain files
        if path.is_file():
            obstore.put(store, url.key(str(path.relative_to(folder))), path,
                        chunk_size=8 * MiB, max_concurrency=4)
    return Data(bucket, big, size, "packs/0", offset, checks, small, sizes)


class Bench:
    """The figures of one side on one link; every mount it starts, it stops."""

    def __init__(self, data: Data, server: Path, work: Path, points: Path, keys: peers.Keys,
                 n_read: int, sides: tuple[str, ...], reader: Reader) -> None:
        self.data, self.work, self.points = data, work, points
        self.keys, self.n_read, self.sides = keys, n_read, sides
        self.downloads = peers.Downloads(server)
        self.reader = reader  # reads every mount; a RemoteContainer gets a process of its own

    def _mount(self, kind: str, endpoint: str) -> peers.Mount:
        prefix = "pub" if kind == "dosfs" else "plain"
        return peers.Mount(kind, self.keys, endpoint, self.data.bucket, prefix,
                           self.points / kind, self.work)

    def _reader_args(self, kind: str) -> dict[str, str]:
        if kind == "dosfs":
            return {"kind": "mount", "path": str(self.points / kind)}
        if kind == "rc":
            return {"kind": "rc", "path": ""}
        return {"kind": "dos", "path": str(self.points / kind / "c")}

    def _life(self, kind: str, endpoint: str, body: Callable[[Reader], dict[str, Any]]
              ) -> dict[str, Any]:
        """One fresh mount (or RemoteContainer) from start to unmount: `body` reads; the
        start, the peak RSS and the bytes downloaded over the whole life are added."""
        drop_caches()
        before = self.downloads.mark()
        out: dict[str, Any] = {}
        if kind == "rc":
            with Reader(dict(os.environ)) as r:
                cache = self.work / "cache-rc"
                shutil.rmtree(cache, ignore_errors=True)
                cache.mkdir()
                url = f"s3://{self.data.bucket}/pub"
                out["start"] = r.call("open_rc", url=url, cache_dir=str(cache),
                                      endpoint=endpoint)["s"]
                out.update(body(r))
                out["rss"] = r.call("rss")["rss"]
        else:
            m = self._mount(kind, endpoint)
            try:
                out["start"] = m.start(f"by-hash/{self.data.small[0]}" if kind == "dosfs"
                                       else "c/config.json")
                try:
                    out.update(body(self.reader))
                finally:
                    self.reader.call("close")
                out["rss"] = m.peak_rss()
            finally:
                m.stop()
        out["fetched_life"], out["gets"] = self.downloads.since(before)
        out["after_first"] = self.downloads.since(out.pop("mark"))[0]
        return out

    def sequential(self, kind: str, endpoint: str) -> dict[str, Any]:
        d = self.data
        args = {**self._reader_args(kind), "key": d.big, "checks": d.checks}

        def body(r: Reader) -> dict[str, Any]:
            first = r.call("seq", **args)
            mark = self.downloads.mark()
            drop_caches()
            again = r.call("seq", **args)
            return {"first": first["s"], "again": again["s"], "mark": mark}

        out = self._life(kind, endpoint, body)
        out["per_byte"] = out["fetched_life"] / d.big_size
        return out

    def plain_get(self, endpoint: str) -> dict[str, Any]:
        d = self.data
        drop_caches()
        before = self.downloads.mark()
        got = self.reader.call("get", url=f"s3://{d.bucket}/plain/c", key=d.pack_key,
                               start=d.offset, length=d.big_size, checks=d.checks,
                               endpoint=endpoint)
        fetched, gets = self.downloads.since(before)
        return {"first": got["s"], "per_byte": fetched / d.big_size, "gets": gets}

    def random_small(self, kind: str, endpoint: str, keys: list[str]) -> dict[str, Any]:
        args = {**self._reader_args(kind), "keys": keys}
        read = sum(self.data.sizes[k] for k in keys)

        def body(r: Reader) -> dict[str, Any]:
            cold = r.call("small", **args)
            mark = self.downloads.mark()
            warm = r.call("small", **args)
            return {"cold": cold["s"], "warm": warm["s"], "mark": mark}

        out = self._life(kind, endpoint, body)
        out["per_byte"] = out["fetched_life"] / read
        return out

    def link(self, endpoint: str, runs: int) -> dict[str, list[dict[str, Any]]]:
        """Every side, `runs` times, in a rotating order (who goes first alternates)."""
        sides = self.sides
        res: dict[str, list[dict[str, Any]]] = {s: [] for s in sides}
        for run in range(runs):
            keys = random.Random(run).sample(self.data.small, self.n_read)
            order = sides[run % len(sides):] + sides[: run % len(sides)]
            for side in order:
                print(f"  run {run + 1}/{runs}: {side}", file=sys.stderr, flush=True)
                if side == "get":
                    res[side].append({"seq": self.plain_get(endpoint)})
                    continue
                seq = self.sequential(side, endpoint)
                rnd = self.random_small(side, endpoint, keys)
                res[side].append({"seq": seq, "random": rnd})
        return res

    def link_check(self, direct: str, delay: float, rate: float) -> dict[str, float]:
        """Can the forwarder carry the rate here? Its capacity from a local source (uncapped,
        capped), and the round trip of a 1-byte GET to the gateway, direct and through it."""
        out = slowlink.capacity(delay, rate)
        with SlowLink(direct, delay, rate, self.work / "slowlink.log") as link:
            out["rtt_ms"] = self._rtt(link.endpoint)
        out["rtt_direct_ms"] = self._rtt(direct)
        return out

    def _rtt(self, endpoint: str) -> float:
        ms: float = self.reader.call("latency", url=f"s3://{self.data.bucket}/plain/c",
                                     key=self.data.pack_key, endpoint=endpoint)["ms"]
        return ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", required=True, help="the scripts/s3-server folder")
    ap.add_argument("--work", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--small", type=int, default=4000, help="small objects in the container")
    ap.add_argument("--read", type=int, default=1000, help="random small objects read")
    ap.add_argument("--seq-mib", type=int, default=256, help="the big object (multiple of 64)")
    ap.add_argument("--links", default="loopback,slow")
    ap.add_argument("--sides", default=",".join(SIDES), help="a subset of " + ",".join(SIDES))
    ap.add_argument("--delay-ms", type=float, default=10.0)
    ap.add_argument("--rate-mbit", type=float, default=1000.0)
    ap.add_argument("--json", type=Path, help="also write every run here")
    ap.add_argument("--no-drop-caches", action="store_true", help="(for the smoke test)")
    ap.add_argument("--no-install", action="store_true",
                    help="never apt-get the peers: without them, measure dosfs's sides only")
    a = ap.parse_args()
    # SIGTERM unwinds like an error, so every finally runs: mounts unmounted, forwarders stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    DROP[0] = not a.no_drop_caches
    run(Path(a.work), Path(a.server), a.runs, a.small, a.read, a.seq_mib, a.links.split(","),
        a.delay_ms / 1e3, a.rate_mbit * 1e6, a.json, install=not a.no_install,
        only=tuple(a.sides.split(",")))


def run(work: Path, server: Path, runs: int, n_small: int = 4000, n_read: int = 1000,
        seq_mib: int = 256, links: list[str] | None = None, delay: float = 0.010,
        rate_bits: float = 1e9, json_out: Path | None = None, install: bool = True,
        only: tuple[str, ...] = SIDES) -> None:
    links = links or ["loopback", "slow"]
    why = peers.ensure_tools(install)
    sides = tuple(s for s in only if why is None or s not in peers.TOOLS)
    keys = peers.Keys.from_env()
    direct = os.environ["AWS_ENDPOINT_URL"]
    work = work / "peers"
    work.mkdir(parents=True, exist_ok=True)
    points = Path(tempfile.mkdtemp(prefix="peers-", dir="/tmp"))
    t0 = time.perf_counter()
    stack = contextlib.ExitStack()
    try:
        data = build(work, n_small, seq_mib)
        reader = stack.enter_context(Reader(dict(os.environ)))
        bench = Bench(data, server, work, points, keys, n_read, sides, reader)
        results: dict[str, Any] = {"versions": peers.tool_versions(), "links": {},
                                   "peers_missing": why,
                                   "caches_dropped": DROP[0] and os.geteuid() == 0}
        for name in links:
            print(f"remote.peers: link {name}", file=sys.stderr, flush=True)
            if name == "loopback":
                results["links"][name] = {"check": None, "sides": bench.link(direct, runs)}
                continue
            check = bench.link_check(direct, delay, rate_bits)
            entry: dict[str, Any] = {"check": check, "delay": delay, "rate_bits": rate_bits}
            if check["uncapped"] < 1.2 * rate_bits / 8 / MiB:
                entry["untrusted"] = True  # the forwarder, not the link, would be the limit
            else:
                with SlowLink(direct, delay, rate_bits, work / "slowlink.log") as link:
                    entry["sides"] = bench.link(link.endpoint, runs)
            results["links"][name] = entry
        results["seconds"] = time.perf_counter() - t0
        results["data"] = {"small": n_small, "read": n_read, "seq_mib": seq_mib, "runs": runs}
        print(peers_report.render(results))
        if json_out:
            json_out.write_text(json.dumps(results, indent=1))
    finally:
        stack.close()
        for kind in MOUNTS:  # a mount left behind would be deleted through by rmtree
            if os.path.ismount(points / kind):
                subprocess.run(["fusermount3", "-uz", str(points / kind)], check=False)
        if not any(os.path.ismount(points / k) for k in MOUNTS):
            shutil.rmtree(points, ignore_errors=True)


if __name__ == "__main__":
    main()
