"""What one reader of a published container costs at N objects (scripts/bench-remote-scale).

Builds a container of N small distinct objects (random bytes, packed in batches), pushes it
to the server in the AWS_* environment, then measures in a separate reader process (so its peak
RSS is the reader's alone): the index snapshot's size (zlib'ed, as stored, and inflated), the
time of its GET and of its inflate, RemoteContainer's construction (HEAD + generation JSON +
snapshot GET + inflate + open; median of --repeat), and one get_object_content after open.

    python scripts/benchlib/bench_remote_scale.py --work DIR [--objects N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
import uuid
import zlib
from pathlib import Path
from typing import Any

BATCH = 10_000


def _rss_kib(field: str = "VmRSS") -> int:
    """VmRSS now, or VmHWM: the peak of this process's own memory. Not getrusage's ru_maxrss:
    on Linux a child started by fork+exec inherits the parent's peak there (the first runs
    showed the publisher's 561 MiB for every reader)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def build(folder: Path, n: int, lo: int, hi: int, seed: int) -> tuple[list[str], float]:
    """A container of `n` packed objects of lo..hi random bytes; a few keys and the seconds."""
    from dosfs.container import Container

    shutil.rmtree(folder, ignore_errors=True)  # a scratch folder of an earlier run
    rng = random.Random(seed)
    sample: list[str] = []
    t = time.perf_counter()
    with Container(folder) as c:
        c.init_container()
        done = 0
        while done < n:
            count = min(BATCH, n - done)
            keys = c.add_objects_to_pack([os.urandom(rng.randint(lo, hi)) for _ in range(count)])
            sample += [keys[0], keys[-1]]
            done += count
    return sample, time.perf_counter() - t


def snapshot_timings(target: str, repeat: int) -> dict[str, Any]:
    """The snapshot's GET and inflate alone (medians), and its inflated size."""
    import obstore

    from dosfs.remote.layout import read_head
    from dosfs.remote.url import make_store, parse_url

    url = parse_url(target)
    store = make_store(url, timeout=120.0)
    gen = read_head(store, url)
    assert gen is not None
    get_s, inflate_s, raw = [], [], 0
    for _ in range(repeat):
        t = time.perf_counter()
        blob = bytes(obstore.get(store, url.key(gen.index_key)).bytes())
        get_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        raw = len(zlib.decompress(blob))
        inflate_s.append(time.perf_counter() - t)
        del blob
    return {"index_size_uncompressed": raw, "index_get_s": statistics.median(get_s),
            "index_inflate_s": statistics.median(inflate_s)}


def stream_probe(target: str, folder: Path) -> dict[str, Any]:
    """Own process: the snapshot fetched and inflated chunk by chunk into a file (what a
    streaming fetch would cost; RemoteContainer holds the whole blob today)."""
    import obstore

    from dosfs.remote.layout import read_head
    from dosfs.remote.url import make_store, parse_url

    url = parse_url(target)
    store = make_store(url, timeout=120.0)
    gen = read_head(store, url)
    assert gen is not None
    t = time.perf_counter()
    inflate = zlib.decompressobj()
    with open(folder / "streamed.idx", "wb") as out:
        for chunk in obstore.get(store, url.key(gen.index_key)):
            out.write(inflate.decompress(chunk))
        out.write(inflate.flush())
    took = time.perf_counter() - t
    (folder / "streamed.idx").unlink()
    return {"stream_fetch_s": took,
            "stream_peak_rss_kib": _rss_kib("VmHWM")}


def reader(target: str, keys: list[str], repeat: int) -> dict[str, Any]:
    """Runs in its own process (its peak RSS is RemoteContainer's): open, read one object."""
    from dosfs.remote.container import RemoteContainer

    base_rss = _rss_kib()
    open_s, first_s, second_s = [], [], []
    rss_open = 0
    for i in range(repeat):
        t = time.perf_counter()
        rc = RemoteContainer(target, timeout=120.0)
        open_s.append(time.perf_counter() - t)
        try:
            rss_open = max(rss_open, _rss_kib())
            t = time.perf_counter()
            data = rc.get_object_content(keys[(2 * i) % len(keys)])
            first_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            rc.get_object_content(keys[(2 * i + 1) % len(keys)])
            second_s.append(time.perf_counter() - t)
            assert len(data) > 0
        finally:
            rc.close()
    return {
        "open_s": statistics.median(open_s),
        "open_s_all": open_s,
        "first_get_s": statistics.median(first_s),
        "second_get_s": statistics.median(second_s),
        "reader_rss_base_kib": base_rss,
        "reader_rss_open_kib": rss_open,
        "reader_peak_rss_kib": _rss_kib("VmHWM"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", required=True, help="a scratch folder (the container goes there)")
    ap.add_argument("--objects", type=int, default=1_000_000)
    ap.add_argument("--min-size", type=int, default=100)
    ap.add_argument("--max-size", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--bucket", default="")
    ap.add_argument("--json", dest="json_path", default="")
    ap.add_argument("--reader", default="", help=argparse.SUPPRESS)  # internal: TARGET KEYS...
    args = ap.parse_args()
    if args.reader:
        keys = json.loads(Path(args.reader).read_text())
        if keys.get("probe"):
            print(json.dumps(stream_probe(keys["target"], Path(args.work))))
        else:
            print(json.dumps(reader(keys["target"], keys["keys"], args.repeat)))
        return

    from dosfs.remote.bucket import create_bucket
    from dosfs.remote.push import push
    from dosfs.remote.status import status

    work = Path(args.work)
    bucket = args.bucket or f"scale-{uuid.uuid4().hex[:8]}"
    create_bucket(bucket)
    target = f"s3://{bucket}/n{args.objects}"
    folder = work / f"c{args.objects}"
    keys, build_s = build(folder, args.objects, args.min_size, args.max_size, seed=args.objects)
    local_idx = (folder / "packs.idx").stat().st_size
    pack_bytes = sum(p.stat().st_size for p in (folder / "packs").iterdir())
    t = time.perf_counter()
    report = push(folder, target, timeout=120.0)
    push_s = time.perf_counter() - t
    publisher_rss = _rss_kib("VmHWM")  # build + push
    t = time.perf_counter()
    again = push(folder, target, timeout=120.0)
    unchanged_s = time.perf_counter() - t
    assert again.unchanged, "a second push of the same container published a new generation"
    # two of push's steps that read every row or byte of the index, timed alone on a copy
    from dosfs.container.snapshot import IndexCopy

    copy = work / "digest.idx"
    index_copy = IndexCopy.backup_of(str(folder / "packs.idx"), str(copy))
    t = time.perf_counter()
    index_copy.rows_digest()
    digest_s = time.perf_counter() - t
    t = time.perf_counter()
    zlib.compress(copy.read_bytes(), 3)
    compress_s = time.perf_counter() - t
    copy.unlink()
    st = status(target, timeout=120.0)
    assert st.objects == args.objects, (st.objects, args.objects)
    r: dict[str, Any] = {}
    for probe in (False, True):
        spec = work / "reader.json"
        spec.write_text(json.dumps({"target": target, "keys": keys, "probe": probe}))
        out = subprocess.run(
            [sys.executable, __file__, "--work", str(work), "--reader", str(spec),
             "--repeat", str(args.repeat)],
            check=True, capture_output=True, text=True,
        ).stdout
        r.update(json.loads(out.strip().splitlines()[-1]))
    r.update(snapshot_timings(target, args.repeat))
    n = args.objects
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "objects": n,
        "bucket": bucket,
        "target": target,
        "object_sizes": [args.min_size, args.max_size],
        "build_s": build_s,
        "pack_bytes": pack_bytes,
        "local_index_bytes": local_idx,
        "push_s": push_s,
        "push_uploaded_bytes": report.uploaded_bytes,
        "publisher_peak_rss_kib": publisher_rss,
        "push_rows_digest_s": digest_s,
        "push_unchanged_s": unchanged_s,
        "push_compress_s": compress_s,
        "index_size_compressed": st.index_size,
        "index_bytes_per_object": st.index_size / n,
        "index_uncompressed_bytes_per_object": r["index_size_uncompressed"] / n,
        **r,
    }
    mib = 2**20
    rows = [
        ("objects", f"{n:,}"),
        ("build (add_objects_to_pack)", f"{build_s:.1f} s, packs {pack_bytes / mib:.0f} MiB"),
        ("push", f"{push_s:.1f} s, {report.uploaded_bytes / mib:.0f} MiB sent, peak RSS "
                 f"{publisher_rss / 1024:.0f} MiB (build + push)"),
        ("push: rows digest / zlib alone", f"{digest_s:.2f} s / {compress_s:.2f} s"),
        ("push again, nothing changed", f"{unchanged_s:.2f} s"),
        ("index snapshot, zlib'ed", f"{st.index_size / mib:.1f} MiB "
                                    f"({st.index_size / n:.1f} B/object)"),
        ("index snapshot, inflated", f"{r['index_size_uncompressed'] / mib:.1f} MiB "
                                     f"({r['index_size_uncompressed'] / n:.1f} B/object; local "
                                     f"packs.idx {local_idx / mib:.1f} MiB)"),
        ("snapshot GET / inflate", f"{r['index_get_s']:.2f} s / {r['index_inflate_s']:.2f} s"),
        ("RemoteContainer() (median)", f"{r['open_s']:.2f} s  (all: "
                                       + ", ".join(f"{x:.2f}" for x in r["open_s_all"]) + ")"),
        ("get_object_content 1st / 2nd", f"{r['first_get_s'] * 1e3:.1f} ms / "
                                         f"{r['second_get_s'] * 1e3:.1f} ms"),
        ("reader RSS import / open / peak", f"{r['reader_rss_base_kib'] / 1024:.0f} / "
                                          f"{r['reader_rss_open_kib'] / 1024:.0f} / "
                                          f"{r['reader_peak_rss_kib'] / 1024:.0f} MiB"),
        ("streamed fetch+inflate (probe)", f"{r['stream_fetch_s']:.2f} s, peak RSS "
                                           f"{r['stream_peak_rss_kib'] / 1024:.0f} MiB"),
    ]
    width = max(len(a) for a, _ in rows)
    for a, b in rows:
        print(f"{a:<{width}}  {b}")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
