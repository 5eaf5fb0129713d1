"""boto3 vs obstore against a real S3 endpoint (scripts/s3-server): which client to use.

    .venv/bin/pip install boto3   # not a dependency of dosfs (obstore is)
    .venv/bin/python scripts/benchlib/s3_clients.py [--size-mib 1024] [--reps 3] [--json FILE]
        [--figures abcdef]

Starts its own single-node Ceph RADOS Gateway in a temp folder (always stopped and removed), puts
the shared read data there once, then runs every figure for each client in its own fresh worker
process (same data, same server, same run; the order of the clients alternates between
repetitions) and prints medians over the repetitions:

  a. multipart upload of SIZE from a file, 16 MiB parts, 4 and 8 parts in flight
  b. a plain (single-stream) download of SIZE
  c. latency of 128 KiB ranged GETs at random offsets, sequential: median and p99
  d. 8 ranged GETs of 1 MiB in flight (threads; obstore also with asyncio): throughput
  e. 10^4 GETs of 4 KiB objects: sequential, and with a pool of 16 threads (obstore also asyncio)
  f. import time, client creation time, RSS after import + client + one request

CPU seconds of the client process (user + system) and its peak RSS during the figure are reported
next to the throughput figures: on 2 vCPUs the client competes with the gateway and the OSD for the
same cores. Before each worker the OSD and the gateway are left to become idle (garbage collection
of the previous worker's uploads). Absolute numbers move with the machine's load; compare the
ratios of one run.
Every request goes to 127.0.0.1 only; both clients are configured explicitly (endpoint, keys,
region), never from ~/.aws or instance metadata.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "scripts" / "s3-server"
BUCKET = "bench"
MiB = 1 << 20
PART = 16 * MiB
READ_KEY = "read/blob"
SMALL = 4096
N_SMALL_OBJECTS = 1000
N_SMALL_GETS = 10_000
N_RANGED = 500
N_PARALLEL = 256
CLIENTS = ("boto3", "obstore")


# ---------------------------------------------------------------- clients


class Client:
    """The handful of operations the figures need, for one library."""

    name: str

    def upload_file(self, key: str, path: Path, concurrency: int) -> None: ...
    def download(self, key: str) -> int: ...
    def get_range(self, key: str, start: int, length: int) -> int: ...
    def get(self, key: str) -> int: ...
    def delete(self, key: str) -> None: ...
    def size(self, key: str) -> int: ...


class Boto3(Client):
    name = "boto3"

    def __init__(self, env: dict[str, str]) -> None:
        import boto3
        from botocore.config import Config

        self.s3 = boto3.client(
            "s3",
            endpoint_url=env["AWS_ENDPOINT_URL"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_DEFAULT_REGION"],
            # 32 pooled connections: the default 10 would serialise a pool of 16 threads
            config=Config(max_pool_connections=32, s3={"addressing_style": "path"}),
        )

    def upload_file(self, key: str, path: Path, concurrency: int) -> None:
        from boto3.s3.transfer import TransferConfig

        cfg = TransferConfig(
            multipart_threshold=PART, multipart_chunksize=PART, max_concurrency=concurrency
        )
        self.s3.upload_file(str(path), BUCKET, key, Config=cfg)

    def download(self, key: str) -> int:
        body = self.s3.get_object(Bucket=BUCKET, Key=key)["Body"]
        return sum(len(c) for c in body.iter_chunks(MiB))

    def get_range(self, key: str, start: int, length: int) -> int:
        r = self.s3.get_object(Bucket=BUCKET, Key=key, Range=f"bytes={start}-{start + length - 1}")
        return len(r["Body"].read())

    def get(self, key: str) -> int:
        return len(self.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())

    def delete(self, key: str) -> None:
        self.s3.delete_object(Bucket=BUCKET, Key=key)

    def size(self, key: str) -> int:
        return self.s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"]


class Obstore(Client):
    name = "obstore"

    def __init__(self, env: dict[str, str]) -> None:
        import obstore
        from obstore.store import S3Store

        self.obs = obstore
        self.store = S3Store(
            BUCKET,
            endpoint=env["AWS_ENDPOINT_URL"],
            access_key_id=env["AWS_ACCESS_KEY_ID"],
            secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region=env["AWS_DEFAULT_REGION"],
            virtual_hosted_style_request=False,
            # allow_http for the local endpoint; the default per-request timeout is 30 s, short
            # for a GiB-sized single GET on a slow machine
            client_options={"allow_http": True, "timeout": "600s"},
        )

    def upload_file(self, key: str, path: Path, concurrency: int) -> None:
        self.obs.put(self.store, key, path, chunk_size=PART, max_concurrency=concurrency)

    def download(self, key: str) -> int:
        return sum(len(c) for c in self.obs.get(self.store, key).stream(min_chunk_size=MiB))

    def get_range(self, key: str, start: int, length: int) -> int:
        return len(self.obs.get_range(self.store, key, start=start, length=length))

    def get(self, key: str) -> int:
        return len(self.obs.get(self.store, key).bytes())

    def delete(self, key: str) -> None:
        self.obs.delete(self.store, key)

    def size(self, key: str) -> int:
        return self.obs.head(self.store, key)["size"]

    async def get_range_async(self, key: str, start: int, length: int) -> int:
        return len(await self.obs.get_range_async(self.store, key, start=start, length=length))

    async def get_async(self, key: str) -> int:
        return len(await (await self.obs.get_async(self.store, key)).bytes_async())


def make_client(name: str, env: dict[str, str]) -> Client:
    return Boto3(env) if name == "boto3" else Obstore(env)


# ---------------------------------------------------------------- worker (one client, one process)


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def reset_peak_rss() -> None:
    """Start a new VmHWM window (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(wall seconds, client CPU seconds, result); starts a new peak-RSS window."""
    reset_peak_rss()
    c0, t0 = cpu(), time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, cpu() - c0, out


def run_async_pool(coros: list, limit: int) -> list:
    async def main() -> list:
        sem = asyncio.Semaphore(limit)

        async def one(c):  # noqa: ANN001 - a coroutine
            async with sem:
                return await c

        return await asyncio.gather(*(one(c) for c in coros))

    return asyncio.run(main())


def worker(name: str, env: dict[str, str], blob: Path, size: int, figures: str) -> dict[str, Any]:
    c = make_client(name, env)
    res: dict[str, Any] = {}
    rnd = random.Random(42)  # the same offsets and keys for both clients

    # a. multipart upload
    for conc in (4, 8) if "a" in figures else ():
        key = f"up/{name}/{conc}"
        wall, cpus, _ = timed(lambda k=key, n=conc: c.upload_file(k, blob, n))
        assert c.size(key) == size, "upload has the wrong size"
        c.delete(key)
        res[f"upload_c{conc}"] = {
            "s": wall,
            "mib_s": size / MiB / wall,
            "cpu_s": cpus,
            "rss": peak_rss_mib(),
        }

    # b. plain download
    if "b" in figures:
        wall, cpus, n = timed(lambda: c.download(READ_KEY))
        assert n == size, f"download returned {n} bytes"
        res["download"] = {
            "s": wall,
            "mib_s": size / MiB / wall,
            "cpu_s": cpus,
            "rss": peak_rss_mib(),
        }
    if not set(figures) & set("cde"):
        return res

    # c. 128 KiB ranged GET latency, sequential
    length = 128 * 1024
    offsets = [rnd.randrange(0, size - length) for _ in range(N_RANGED)]
    c.get_range(READ_KEY, 0, length)  # warm the connection
    lat = []
    for off in offsets:
        t0 = time.perf_counter()
        assert c.get_range(READ_KEY, off, length) == length
        lat.append(time.perf_counter() - t0)
    lat.sort()
    res["range128k"] = {
        "median_ms": statistics.median(lat) * 1e3,
        "p99_ms": lat[int(len(lat) * 0.99) - 1] * 1e3,
    }

    # d. 8 x 1 MiB ranged GETs in flight
    offsets = [rnd.randrange(0, size - MiB) for _ in range(N_PARALLEL)]

    def par_threads() -> int:
        with ThreadPoolExecutor(8) as ex:
            return sum(ex.map(lambda o: c.get_range(READ_KEY, o, MiB), offsets))

    wall, cpus, n = timed(par_threads)
    assert n == N_PARALLEL * MiB
    res["par8x1m"] = {"s": wall, "mib_s": n / MiB / wall, "cpu_s": cpus, "rss": peak_rss_mib()}
    if isinstance(c, Obstore):
        oc = c
        wall, cpus, got = timed(
            lambda: run_async_pool([oc.get_range_async(READ_KEY, o, MiB) for o in offsets], 8)
        )
        assert sum(got) == N_PARALLEL * MiB
        res["par8x1m_async"] = {"s": wall, "mib_s": sum(got) / MiB / wall, "cpu_s": cpus}

    # e. 10^4 small GETs
    keys = [f"small/{rnd.randrange(N_SMALL_OBJECTS):05d}" for _ in range(N_SMALL_GETS)]
    wall, cpus, n = timed(lambda: sum(c.get(k) for k in keys))
    assert n == N_SMALL_GETS * SMALL
    res["small_seq"] = {"s": wall, "req_s": N_SMALL_GETS / wall, "cpu_s": cpus}

    def small_threads() -> int:
        with ThreadPoolExecutor(16) as ex:
            return sum(ex.map(c.get, keys))

    wall, cpus, n = timed(small_threads)
    assert n == N_SMALL_GETS * SMALL
    res["small_t16"] = {
        "s": wall,
        "req_s": N_SMALL_GETS / wall,
        "cpu_s": cpus,
        "rss": peak_rss_mib(),
    }
    if isinstance(c, Obstore):
        oc = c
        wall, cpus, got = timed(lambda: run_async_pool([oc.get_async(k) for k in keys], 16))
        assert sum(got) == N_SMALL_GETS * SMALL
        res["small_async16"] = {"s": wall, "req_s": N_SMALL_GETS / wall, "cpu_s": cpus}
    return res


# ---------------------------------------------------------------- import time and RSS

PROBE = r"""
import json, sys, time
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
r0 = rss()
t0 = time.perf_counter()
if sys.argv[1] == "boto3":
    import boto3
    t1 = time.perf_counter()
    c = boto3.client("s3", endpoint_url=sys.argv[2], aws_access_key_id=sys.argv[3],
                     aws_secret_access_key=sys.argv[4], region_name="us-east-1")
    t2 = time.perf_counter()
    c.get_object(Bucket=sys.argv[5], Key=sys.argv[6])["Body"].read()
elif sys.argv[1] == "obstore":
    import obstore
    from obstore.store import S3Store
    t1 = time.perf_counter()
    s = S3Store(sys.argv[5], endpoint=sys.argv[2], access_key_id=sys.argv[3],
                secret_access_key=sys.argv[4], region="us-east-1",
                client_options={"allow_http": True})
    t2 = time.perf_counter()
    obstore.get(s, sys.argv[6]).bytes()
else:
    t1 = t2 = time.perf_counter()
t3 = time.perf_counter()
print(json.dumps({"import_ms": (t1 - t0) * 1e3, "client_ms": (t2 - t1) * 1e3,
                  "first_get_ms": (t3 - t2) * 1e3, "rss_base_mib": r0, "rss_mib": rss()}))
"""


def probe(name: str, env: dict[str, str]) -> dict[str, float]:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            PROBE,
            name,
            env["AWS_ENDPOINT_URL"],
            env["AWS_ACCESS_KEY_ID"],
            env["AWS_SECRET_ACCESS_KEY"],
            BUCKET,
            "small/00000",
        ],
        capture_output=True,
        text=True,
        check=True,
        env=clean_env(),
    ).stdout
    return json.loads(out)


def clean_env() -> dict[str, str]:
    """The environment without AWS_* (so nothing is picked up implicitly)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}


# ---------------------------------------------------------------- parent


def server(cmd: str, d: Path, *extra: str) -> str:
    r = subprocess.run(
        [sys.executable, str(SERVER), cmd, str(d), *extra], capture_output=True, text=True
    )
    if r.returncode != 0:
        raise SystemExit(f"s3_clients: scripts/s3-server {cmd} failed:\n{r.stderr}")
    return r.stdout


def parse_env(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def prepare(env: dict[str, str], tmp: Path, size: int) -> Path:
    """The upload file, the object read by the figures, the small objects (with boto3)."""
    blob = tmp / "blob"
    with open(blob, "wb") as f:
        left = size
        while left:
            n = min(left, 16 * MiB)
            f.write(os.urandom(n))
            left -= n
    c = Boto3(env)
    c.s3.create_bucket(Bucket=BUCKET)
    c.upload_file(READ_KEY, blob, 8)
    payload = os.urandom(SMALL)
    with ThreadPoolExecutor(16) as ex:
        list(
            ex.map(
                lambda i: c.s3.put_object(Bucket=BUCKET, Key=f"small/{i:05d}", Body=payload),
                range(N_SMALL_OBJECTS),
            )
        )
    return blob


def gc(d: Path) -> None:
    """Free deleted uploads now (the gateway otherwise keeps them for a while)."""
    subprocess.run(
        ["radosgw-admin", "gc", "process", "--include-all"],
        env=dict(os.environ, CEPH_CONF=str(d / "ceph.conf")),
        capture_output=True,
        timeout=300,
    )


def settle(d: Path, limit: float = 60.0) -> None:
    """Wait until the OSD and the gateway are idle (< 5 % CPU over 0.5 s): the gateway's garbage
    collection and bluestore's deferred work would otherwise slow down whoever runs next."""
    pids = [e["pid"] for e in json.loads((d / "state.json").read_text())["daemons"]]
    tick = os.sysconf("SC_CLK_TCK")

    def busy() -> float:
        total = 0
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    rest = f.read().rsplit(")", 1)[1].split()
                total += int(rest[11]) + int(rest[12])
            except OSError:
                pass
        return total / tick

    deadline = time.monotonic() + limit
    prev = busy()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = busy()
        if now - prev < 0.025:
            return
        prev = now


def daemon_rss(d: Path) -> dict[str, float]:
    state = json.loads((d / "state.json").read_text())
    out = {}
    for e in state["daemons"]:
        try:
            with open(f"/proc/{e['pid']}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        out[e["name"]] = int(line.split()[1]) / 1024
        except OSError:
            pass
    return out


ROWS = [  # (label, figure, field, unit, better)
    ("a. multipart upload, 4 in flight", "upload_c4", "mib_s", "MiB/s", "high"),
    ("   client CPU", "upload_c4", "cpu_s", "s", "low"),
    ("a. multipart upload, 8 in flight", "upload_c8", "mib_s", "MiB/s", "high"),
    ("   client CPU", "upload_c8", "cpu_s", "s", "low"),
    ("   client peak RSS", "upload_c8", "rss", "MiB", "low"),
    ("b. plain download", "download", "mib_s", "MiB/s", "high"),
    ("   client CPU", "download", "cpu_s", "s", "low"),
    ("   client peak RSS", "download", "rss", "MiB", "low"),
    ("c. 128 KiB ranged GET, median", "range128k", "median_ms", "ms", "low"),
    ("c. 128 KiB ranged GET, p99", "range128k", "p99_ms", "ms", "low"),
    ("d. 8 x 1 MiB ranged GETs in flight (threads)", "par8x1m", "mib_s", "MiB/s", "high"),
    ("   client CPU", "par8x1m", "cpu_s", "s", "low"),
    ("d. same, obstore asyncio", "par8x1m_async", "mib_s", "MiB/s", "high"),
    ("e. 10^4 4 KiB GETs, sequential", "small_seq", "req_s", "req/s", "high"),
    ("   client CPU", "small_seq", "cpu_s", "s", "low"),
    ("e. 10^4 4 KiB GETs, 16 threads", "small_t16", "req_s", "req/s", "high"),
    ("   client CPU", "small_t16", "cpu_s", "s", "low"),
    ("   client peak RSS", "small_t16", "rss", "MiB", "low"),
    ("e. same, obstore asyncio (16 in flight)", "small_async16", "req_s", "req/s", "high"),
    ("f. import", "probe", "import_ms", "ms", "low"),
    ("f. client creation", "probe", "client_ms", "ms", "low"),
    ("f. first GET (connect + request)", "probe", "first_get_ms", "ms", "low"),
    ("f. RSS after import + client + 1 GET", "probe", "rss_mib", "MiB", "low"),
]


def value(runs: list[dict[str, Any]], fig: str, field: str) -> float | None:
    vals = [r[fig][field] for r in runs if fig in r]
    return statistics.median(vals) if vals else None


def fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:10.1f}" if v >= 10 else f"{v:10.2f}"


def table(results: dict[str, list[dict[str, Any]]], reps: int, size: int) -> str:
    lines = [
        f"boto3 vs obstore, same server and machine; size {size // MiB} MiB, "
        f"medians of {reps} repetition(s) (probe rows: of {reps * 3} fresh processes)",
        f"{'figure':47} {'boto3':>10} {'obstore':>10} {'unit':>6}  obstore/boto3",
    ]
    for label, fig, field, unit, _better in ROWS:
        b, o = (value(results[n], fig, field) for n in CLIENTS)
        ratio = f"{o / b:6.2f}x" if b and o else ""
        lines.append(f"{label:47} {fmt(b):>10} {fmt(o):>10} {unit:>6}  {ratio}")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mib", type=int, default=1024, help="size of the big object (1024)")
    p.add_argument("--reps", type=int, default=3, help="repetitions per client (3)")
    p.add_argument("--json", type=Path, help="also write the raw results here")
    p.add_argument("--figures", default="abcdef", help="which figures, e.g. `ab` (default: abcdef)")
    p.add_argument("--worker", choices=CLIENTS, help=argparse.SUPPRESS)
    p.add_argument("--blob", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args()
    size = a.size_mib * MiB

    if a.worker:  # child: env on stdin, JSON on stdout
        env = json.loads(sys.stdin.read())
        print(json.dumps(worker(a.worker, env, a.blob, size, a.figures)))
        return 0

    for lib in CLIENTS:  # boto3 is no dependency of dosfs: only of this comparison
        try:
            __import__(lib)
        except ImportError:
            raise SystemExit(f"s3_clients: {lib} is missing: .venv/bin/pip install {lib}") from None
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = Path(tempfile.mkdtemp(prefix="dosfs-s3bench-"))
    srv = tmp / "srv"
    started = False
    try:
        t0 = time.perf_counter()
        env = parse_env(server("up", srv, "--size", str(max(10, 4 * a.size_mib // 1024 + 4))))
        started = True
        print(
            f"server up in {time.perf_counter() - t0:.1f} s at {env['AWS_ENDPOINT_URL']}",
            file=sys.stderr,
        )
        blob = prepare(env, tmp, size)
        results: dict[str, list[dict[str, Any]]] = {n: [] for n in CLIENTS}
        for rep in range(a.reps):
            order = CLIENTS if rep % 2 == 0 else CLIENTS[::-1]
            for name in order:
                settle(srv)
                print(f"rep {rep + 1}/{a.reps}: {name} ...", file=sys.stderr)
                r = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--worker",
                        name,
                        "--blob",
                        str(blob),
                        "--size-mib",
                        str(a.size_mib),
                        "--figures",
                        a.figures,
                    ],
                    input=json.dumps(env),
                    capture_output=True,
                    text=True,
                    env=clean_env(),
                )
                if r.returncode != 0:
                    raise SystemExit(f"s3_clients: {name} worker failed:\n{r.stderr}")
                results[name].append(json.loads(r.stdout))
                gc(srv)
        for name in CLIENTS if "f" in a.figures else ():  # f: 3 fresh processes per rep
            probes = [probe(name, env) for _ in range(3 * a.reps)]
            med = {k: statistics.median(x[k] for x in probes) for k in probes[0]}
            for r in results[name]:
                r["probe"] = med
            results[name][0]["probes"] = probes
        base = statistics.median(probe("none", env)["rss_mib"] for _ in range(3))
        print(table(results, a.reps, size))
        print(
            f"(bare python RSS {base:.1f} MiB; server daemons' RSS now: "
            + ", ".join(f"{k} {v:.0f} MiB" for k, v in daemon_rss(srv).items())
            + ")"
        )
        if a.json:
            a.json.write_text(
                json.dumps(
                    {"size": size, "reps": a.reps, "results": results, "python_rss_mib": base},
                    indent=1,
                )
            )
        return 0
    finally:
        if started or (srv / "state.json").exists():
            subprocess.run(
                [sys.executable, str(SERVER), "down", str(srv), "--purge"], capture_output=True
            )
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
