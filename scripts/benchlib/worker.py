"""One side of an in-process figure, run in a fresh child process.

Why a child: peak memory (VmHWM of the child) then belongs to that side alone, and neither library's
imports, caches or threads leak into the other's numbers. The parent sends one JSON task on stdin;
the child prints one JSON result line on stdout: `{"timings": {name: [seconds per run]},
"peak_rss_kib": .., "base_rss_kib": .., "info": {..}}`. Setup work (building containers) happens
outside the timed regions; a small sample of every result is checked against its hash, also outside
them.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import shutil
import sqlite3
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchlib import data

CHUNK = 1024 * 1024
Task = dict[str, Any]


def container_class(side: str) -> Any:
    """The Container class of one side. `BENCH_DOSFS_IMPL=disk_objectstore` stands in for a missing
    dosfs engine (harness development only; the report says so)."""
    if side == "dos":
        from disk_objectstore import Container

        return Container
    if side == "dosfs":
        if os.environ.get("BENCH_DOSFS_IMPL") == "disk_objectstore":
            from disk_objectstore import Container as Standin

            return Standin
        import dosfs

        return dosfs.Container  # type: ignore[attr-defined]
    raise ValueError(f"unknown side {side!r}")


def rss_kib(field: str = "VmRSS", pid: str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def check(content: bytes, hashkey: str, what: str) -> None:
    got = hashlib.sha256(content).hexdigest()
    if got != hashkey:
        raise AssertionError(f"{what}: wrong bytes for {hashkey} (got sha256 {got})")


def drain(stream: Any) -> int:
    """Read a stream to the end in 1 MiB chunks; returns the byte count."""
    total = 0
    while True:
        chunk = stream.read(CHUNK)
        if not chunk:
            return total
        total += len(chunk)


@contextlib.contextmanager
def fresh_container(side: str, folder: Path, **init: Any) -> Iterator[Any]:
    """A new, initialised container in `folder` (removed afterwards)."""
    if folder.exists():
        shutil.rmtree(folder)
    cls = container_class(side)
    c = cls(folder)
    try:
        c.init_container(clear=True, **init)
        yield c
    finally:
        c.close()
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def open_container(side: str, folder: str) -> Iterator[Any]:
    c = container_class(side)(folder)
    try:
        yield c
    finally:
        c.close()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


# --- tasks -------------------------------------------------------------------------------------


def t_build_packed(task: Task) -> dict[str, Any]:
    """A container holding the small objects, written straight to packs; hashkeys go to a file."""
    objs = data.small_objects(task["count"], task["seed"])
    folder = Path(task["folder"])
    c = container_class(task["side"])(folder)
    try:
        c.init_container(clear=True)
        hashes = c.add_objects_to_pack(objs)
    finally:
        c.close()
    Path(task["hashes_path"]).write_text("\n".join(hashes))
    return {"info": {"objects": len(hashes)}}


def _hashes(task: Task) -> list[str]:
    return sorted(set(Path(task["hashes_path"]).read_text().split()))


def t_get_single(task: Task) -> dict[str, Any]:
    hashes = _hashes(task)
    rng = random.Random(3)
    sample = [rng.choice(hashes) for _ in range(task["calls"])]
    runs = []
    with open_container(task["side"], task["folder"]) as c:
        get = c.get_object_content
        for h in sample[:50]:
            check(get(h), h, "get_object_content")
        for _ in range(task["repeats"]):
            t0 = time.perf_counter()
            for h in sample:
                get(h)
            runs.append(time.perf_counter() - t0)
    return {"timings": {"get_single": runs}, "info": {"calls": len(sample)}}


def t_get_bulk(task: Task) -> dict[str, Any]:
    hashes = _hashes(task)
    runs = []
    with open_container(task["side"], task["folder"]) as c:
        for _ in range(task["repeats"]):
            dt, got = timed(lambda: c.get_objects_content(hashes))
            runs.append(dt)
            if len(got) != len(hashes):
                raise AssertionError(f"get_objects_content returned {len(got)} of {len(hashes)}")
            for h in hashes[:: max(1, len(hashes) // 200)]:
                check(got[h], h, "get_objects_content")
            del got
    return {"timings": {"get_bulk": runs}, "info": {"objects": len(hashes)}}


def t_stream_bulk(task: Task) -> dict[str, Any]:
    hashes = _hashes(task)
    runs = []
    with open_container(task["side"], task["folder"]) as c:
        for r in range(task["repeats"]):
            seen = 0
            checked: dict[str, bytes] = {}
            every = max(1, len(hashes) // 200)
            t0 = time.perf_counter()
            with c.get_objects_stream_and_meta(hashes) as triplets:
                for h, stream, _meta in triplets:
                    content = stream.read()
                    seen += 1
                    if r == 0 and seen % every == 0:
                        checked[h] = content
            runs.append(time.perf_counter() - t0)
            if seen != len(hashes):
                raise AssertionError(f"get_objects_stream_and_meta gave {seen} of {len(hashes)}")
            for h, content in checked.items():
                check(content, h, "get_objects_stream_and_meta")
    return {"timings": {"stream_bulk": runs}, "info": {"objects": len(hashes)}}


def t_pack_write(task: Task) -> dict[str, Any]:
    objs = data.small_objects(task["count"], task["seed"])
    runs = []
    for r in range(task["repeats"]):
        with fresh_container(task["side"], Path(task["folder"]) / f"run{r}") as c:
            t0 = time.perf_counter()
            hashes = c.add_objects_to_pack(objs)
            dt = time.perf_counter() - t0
            runs.append(dt)
            if len(hashes) != len(objs):
                raise AssertionError("add_objects_to_pack returned a wrong number of hashkeys")
            for i in range(0, len(objs), max(1, len(objs) // 100)):
                check(c.get_object_content(hashes[i]), hashes[i], "add_objects_to_pack")
    return {"timings": {"pack_write": runs}, "info": {"objects": len(objs)}}


def t_loose(task: Task) -> dict[str, Any]:
    """add_object of N loose objects, then pack_all_loose of them, in a fresh container per run."""
    objs = data.small_objects(task["count"], task["seed"])
    add_runs, pack_runs = [], []
    for r in range(task["repeats"]):
        with fresh_container(task["side"], Path(task["folder"]) / f"run{r}") as c:
            add = c.add_object

            def add_all(add: Callable[[bytes], str] = add) -> list[str]:
                return [add(o) for o in objs]

            dt, hashes = timed(add_all)
            add_runs.append(dt)
            dt, _ = timed(c.pack_all_loose)
            pack_runs.append(dt)
            for i in range(0, len(objs), max(1, len(objs) // 100)):
                check(c.get_object_content(hashes[i]), hashes[i], "pack_all_loose")
    return {"timings": {"add_loose": add_runs, "pack_all_loose": pack_runs},
            "info": {"objects": len(objs)}}


def t_stream_big(task: Task) -> dict[str, Any]:
    """add_streamed_object of a big file, then get_object_stream of it read in 1 MiB chunks."""
    src = task["src"]
    write_runs, read_runs = [], []
    for r in range(task["repeats"]):
        with fresh_container(task["side"], Path(task["folder"]) / f"run{r}") as c:
            data.prime_page_cache(Path(task["folder"]), task["size"] + 256 * CHUNK)
            with open(src, "rb") as f:
                t0 = time.perf_counter()
                h = c.add_streamed_object(f)
                write_runs.append(time.perf_counter() - t0)
            if h != task["sha256"]:
                raise AssertionError(f"add_streamed_object returned {h}, expected {task['sha256']}")
            t0 = time.perf_counter()
            with c.get_object_stream(h) as stream:
                n = drain(stream)
            read_runs.append(time.perf_counter() - t0)
            if n != task["size"]:
                raise AssertionError(f"get_object_stream gave {n} bytes of {task['size']}")
    return {"timings": {"stream_write": write_runs, "stream_read": read_runs},
            "info": {"bytes": task["size"]}}


def _random_reads(task: Task, seed: int) -> tuple[list[int], dict[int, bytes]]:
    """The offsets of a random-read figure, and the right bytes of the first three."""
    size, rsize = task["size"], task["read_size"]
    rng = random.Random(seed)
    offsets = [rng.randrange(0, max(1, size - rsize)) for _ in range(task["reads"])]
    with open(task["src"], "rb") as f:
        expected = {off: (f.seek(off), f.read(rsize))[1] for off in offsets[:3]}
    return offsets, expected


def t_compressed_random(task: Task) -> dict[str, Any]:
    """Random 128 KiB reads (seek + read) inside one big compressed packed object."""
    src, rsize = task["src"], task["read_size"]
    offsets, expected = _random_reads(task, seed=11)
    runs = []
    with fresh_container(task["side"], Path(task["folder"]) / "c") as c:
        with open(src, "rb") as f:
            [h] = c.add_streamed_objects_to_pack([f], compress=True)
        for _ in range(task["repeats"]):
            with c.get_object_stream(h) as stream:
                t0 = time.perf_counter()
                for off in offsets:
                    stream.seek(off)
                    chunk = stream.read(rsize)
                    if off in expected and chunk != expected[off]:
                        raise AssertionError(f"wrong bytes at offset {off}")
                runs.append(time.perf_counter() - t0)
    return {"timings": {"compressed_random": runs}, "info": {"reads": len(offsets)}}


def t_compressed_fresh(task: Task) -> dict[str, Any]:
    """Random 128 KiB reads inside one big compressed object, each on a new stream (as separate
    opens through the mount are). `writer` compresses it (dosfs places restart points,
    disk-objectstore does not), `side` reads it after one whole read (untimed), which leaves
    dosfs's shared checkpoints behind for an object it did not compress."""
    src, rsize = task["src"], task["read_size"]
    offsets, expected = _random_reads(task, seed=12)
    runs = []
    folder = Path(task["folder"]) / "c"
    with fresh_container(task["writer"], folder) as w:
        with open(src, "rb") as f:
            [h] = w.add_streamed_objects_to_pack([f], compress=True)
        w.close()
        with open_container(task["side"], str(folder)) as c:
            with c.get_object_stream(h) as stream:
                while stream.read(CHUNK):
                    pass
            for _ in range(task["repeats"]):
                t0 = time.perf_counter()
                for off in offsets:
                    with c.get_object_stream(h) as stream:
                        stream.seek(off)
                        chunk = stream.read(rsize)
                    if off in expected and chunk != expected[off]:
                        raise AssertionError(f"wrong bytes at offset {off}")
                runs.append(time.perf_counter() - t0)
    return {"timings": {"compressed_fresh": runs}, "info": {"reads": len(offsets)}}


def t_zlib_read(task: Task) -> dict[str, Any]:
    """Native side of compressed reads: pread the zlib stream from the pack and inflate it."""
    runs = []
    for _ in range(task["repeats"]):
        t0 = time.perf_counter()
        d = zlib.decompressobj()
        out = 0
        fd = os.open(task["pack"], os.O_RDONLY)
        try:
            pos, end = task["offset"], task["offset"] + task["length"]
            while pos < end:
                buf = os.pread(fd, min(CHUNK, end - pos), pos)
                pos += len(buf)
                out += len(d.decompress(buf))
            out += len(d.flush())
        finally:
            os.close(fd)
        runs.append(time.perf_counter() - t0)
        if out != task["size"]:
            raise AssertionError(f"inflated {out} bytes, expected {task['size']}")
    return {"timings": {"zlib_read": runs}}


def t_ingest(task: Task) -> dict[str, Any]:
    """Native side of cp into incoming/: read, write a temp file, sha256, [fsync], rename."""
    dest = Path(task["dest"])
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest / f"tmp-{os.getpid()}"
    data.prime_page_cache(dest, os.path.getsize(task["src"]) + 256 * CHUNK)
    t0 = time.perf_counter()
    digest = hashlib.sha256()
    with open(task["src"], "rb", buffering=0) as fin, open(tmp, "wb", buffering=0) as fout:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while True:
            n = fin.readinto(buf)
            if not n:
                break
            fout.write(view[:n])
            digest.update(view[:n])
        if task["fsync"]:
            os.fsync(fout.fileno())
    final = dest / digest.hexdigest()
    os.rename(tmp, final)
    if task["fsync"]:
        dfd = os.open(dest, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    dt = time.perf_counter() - t0
    return {"timings": {"ingest": [dt]}, "info": {"sha256": digest.hexdigest()}}


def t_stat_list(task: Task) -> dict[str, Any]:
    """os.stat of every path in a list file; `missing` paths must fail with ENOENT."""
    paths = Path(task["list"]).read_text().split("\n")
    missing = task.get("missing", False)
    t0 = time.perf_counter()
    if missing:
        found = 0
        for p in paths:
            try:
                os.stat(p)
                found += 1
            except FileNotFoundError:
                pass
    else:
        for p in paths:
            os.stat(p)
        found = len(paths)
    dt = time.perf_counter() - t0
    if missing and found:
        raise AssertionError(f"{found} of the unknown names were found")
    return {"timings": {"stat": [dt]}, "info": {"paths": len(paths)}}


def t_open_read_list(task: Task) -> dict[str, Any]:
    """open + read (up to 64 KiB) + close of every path in a list file."""
    paths = Path(task["list"]).read_text().split("\n")
    t0 = time.perf_counter()
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        os.read(fd, 65536)
        os.close(fd)
    dt = time.perf_counter() - t0
    return {"timings": {"open_read_list": [dt]}, "info": {"paths": len(paths)}}


def t_build_kib(task: Task) -> dict[str, Any]:
    """A container of `count` distinct 1 KiB packed objects; returns their keys (shuffled)."""
    folder = Path(task["folder"])
    c = container_class("dosfs")(folder)
    keys: list[str] = []
    batch = 100_000
    try:
        c.init_container(clear=True)
        for start in range(0, task["count"], batch):
            stop = min(task["count"], start + batch)
            keys += c.add_objects_to_pack([data.kib_object(i) for i in range(start, stop)])
    finally:
        c.close()
    random.Random(3).shuffle(keys)
    return {"info": {"hashkeys": keys if task["count"] <= 100_000 else keys[:100_000]}}


def t_build_mount_container(task: Task) -> dict[str, Any]:
    """The container that is mounted: a big loose, a big packed and a big compressed object, plus
    many small packed objects. Returns their hashkeys and where the compressed one sits."""
    folder = Path(task["folder"])
    c = container_class("dosfs")(folder)
    out: dict[str, Any] = {}
    try:
        c.init_container(clear=True)
        with open(task["loose_src"], "rb") as f:
            out["loose"] = c.add_streamed_object(f)
        with open(task["packed_src"], "rb") as f:
            [out["packed"]] = c.add_streamed_objects_to_pack([f])
        with open(task["compressed_src"], "rb") as f:
            [out["compressed"]] = c.add_streamed_objects_to_pack([f], compress=True)
        objs = data.small_objects(task["small_count"], task["seed"])
        small = c.add_objects_to_pack(objs)
        meta = c.get_object_meta(out["compressed"])
        out["compressed_meta"] = {
            "pack_id": meta["pack_id"], "offset": meta["pack_offset"],
            "length": meta["pack_length"], "compressed": bool(meta["pack_compressed"]),
        }
        # Native plain copies of the small objects, in the same order.
        plain = Path(task["plain_dir"])
        plain.mkdir(parents=True, exist_ok=True)
        for i, o in enumerate(objs):
            (plain / f"{i:07d}").write_bytes(o)
    finally:
        c.close()
    Path(task["hashes_path"]).write_text("\n".join(small))
    return {"info": out}


def t_build_index(task: Task) -> dict[str, Any]:
    """A container with `count` tiny packed objects (only the index size matters here)."""
    folder = Path(task["folder"])
    c = container_class("dosfs")(folder)
    batch = 100_000
    try:
        c.init_container(clear=True)
        for start in range(0, task["count"], batch):
            stop = min(task["count"], start + batch)
            c.add_objects_to_pack([data.tiny_object(i) for i in range(start, stop)])
    finally:
        c.close()
    return {"info": {"objects": task["count"]}}


def t_pack_location(task: Task) -> dict[str, Any]:
    """Where an object sits in its pack, read from packs.idx with plain sqlite3 (no library)."""
    db = sqlite3.connect(f"file:{task['folder']}/packs.idx?mode=ro", uri=True)
    try:
        row = db.execute(
            'SELECT pack_id, "offset", length, compressed FROM db_object WHERE hashkey = ?',
            (task["hashkey"],),
        ).fetchone()
    finally:
        db.close()
    if row is None:
        raise AssertionError(f"{task['hashkey']} is not in packs.idx")
    return {"info": {"pack_id": row[0], "offset": row[1], "length": row[2],
                     "compressed": bool(row[3])}}


TASKS: dict[str, Callable[[Task], dict[str, Any]]] = {
    "build_packed": t_build_packed,
    "get_single": t_get_single,
    "get_bulk": t_get_bulk,
    "stream_bulk": t_stream_bulk,
    "pack_write": t_pack_write,
    "loose": t_loose,
    "stream_big": t_stream_big,
    "compressed_random": t_compressed_random,
    "compressed_fresh": t_compressed_fresh,
    "zlib_read": t_zlib_read,
    "ingest": t_ingest,
    "stat_list": t_stat_list,
    "open_read_list": t_open_read_list,
    "build_kib": t_build_kib,
    "build_mount_container": t_build_mount_container,
    "build_index": t_build_index,
    "pack_location": t_pack_location,
}


def main() -> None:
    task = json.load(sys.stdin)
    if "side" in task:
        container_class(task["side"])  # import before measuring the baseline RSS
    base = rss_kib()
    result = TASKS[task["task"]](task)
    # VmHWM, not ru_maxrss: Linux carries the forking parent's RSS over into ru_maxrss across exec.
    result["peak_rss_kib"] = rss_kib("VmHWM")
    result["base_rss_kib"] = base
    out = io.StringIO()
    json.dump(result, out)
    sys.stdout.write("\n" + out.getvalue() + "\n")


if __name__ == "__main__":
    main()
