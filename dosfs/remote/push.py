"""push: publish a consistent snapshot of a local container as a new generation.

Why it is safe while the container is in use: pack files are opened first, then packs.idx is
copied with SQLite's backup API (one consistent read), then each opened pack is checked to be
still the current file (a repack moves rows away before it replaces a file, so a file that did
not change around the snapshot holds every row the snapshot names). Loose objects are read
through the container's read protocol (a packer may move them meanwhile).

Why it survives a kill: segment names are derived from what they hold (pack, inode, range; or
the hash of a set of loose objects, whose manifest is written after the segment), so the next
push finds what is already up by listing and sends the rest; the generation's objects go up
before HEAD, which is written last.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import obstore
from obstore.store import S3Store

from dosfs.container import Container, CorruptObject, NotExistent
from dosfs.container.loose import iter_loose
from dosfs.container.packstore import pread_exact
from dosfs.container.snapshot import IndexCopy
from dosfs.remote.layout import (
    Generation,
    Segment,
    generation_key,
    get_json,
    read_head,
    remote_error,
)
from dosfs.remote.url import RemoteError, RemoteURL, make_store, parse_url

CHUNK = 8 * 1024 * 1024
CONCURRENCY = 8
GRACE_SECONDS = 24 * 3600.0

Progress = Callable[[int, int], None]


@dataclass
class PushReport:
    generation: int
    objects: int
    uploaded_bytes: int = 0
    uploaded_objects: int = 0
    skipped_segments: int = 0
    pruned: int = 0
    unchanged: bool = False
    segments: list[str] = field(default_factory=list)


def _chunks(fd: int, start: int, end: int) -> Iterator[bytes]:
    pos = start
    while pos < end:
        data = pread_exact(fd, min(CHUNK, end - pos), pos)
        if not data:
            raise OSError(f"pack shrank while pushing (at {pos})")
        pos += len(data)
        yield data


def _ensure_bucket(store: S3Store, url: RemoteURL) -> None:
    """Create the bucket when missing (S3 CreateBucket through a signed request)."""
    try:
        list(obstore.list(store, prefix=url.key("HEAD"), chunk_size=1))
        return
    except Exception as exc:
        if "nosuchbucket" not in str(exc).lower():
            raise remote_error(exc, url) from exc
    from dosfs.remote.bucket import create_bucket

    create_bucket(url.bucket)


def push(
    container: str | os.PathLike[str],
    target: str,
    *,
    progress: Progress | None = None,
    grace: float = GRACE_SECONDS,
    timeout: float = 30.0,
    force: bool = False,
) -> PushReport:
    """Publish `container` to `target` (s3://bucket/prefix); returns what was sent.

    A prefix that holds another container (another container id) is refused unless `force`:
    then this container's generation replaces it (nothing of the other one is reused)."""
    url = parse_url(target)
    store = make_store(url, timeout=timeout)
    _ensure_bucket(store, url)
    prev = read_head(store, url)
    with Container(container) as c, tempfile.TemporaryDirectory(prefix="dosfs-push-") as tmp:
        cid = c.container_id
        if prev is not None and prev.config.get("container_id") not in (None, cid):
            if not force:
                raise RemoteError(
                    f"{url} holds another container ({prev.config['container_id']}, "
                    f"generation {prev.number}), not {cid}: push --force to replace it"
                )
            prev = dataclasses.replace(prev, local={})  # its packs are not ours: reuse none
        with c.snapshot(os.path.join(tmp, "packs.idx")) as snap:
            fds = {pid: (p.fd, p.identity[1]) for pid, p in snap.packs.items()}
            return _publish(c, store, url, prev, snap.index, fds, cid, progress, grace)


def _publish(
    c: Container,
    store: S3Store,
    url: RemoteURL,
    prev: Generation | None,
    idx: IndexCopy,
    fds: dict[int, tuple[int, int]],
    cid: str,
    progress: Progress | None,
    grace: float,
) -> PushReport:
    needed = idx.pack_ends()
    packed = idx.hashkeys()
    # plan: pack segments
    packs: dict[int, list[Segment]] = {}
    local: dict[int, dict[str, int]] = {}
    uploads: list[tuple[str, int, int, int]] = []  # key, fd, start, end
    for pid, length in sorted(needed.items()):
        if pid not in fds:
            raise OSError(f"pack {pid} is in the index but not on disk")
        fd, ino = fds[pid]
        old = prev.local.get(pid) if prev else None
        segs: list[Segment] = []
        start = 0
        if prev and old and old["ino"] == ino and old["length"] <= length and pid in prev.packs:
            segs = list(prev.packs[pid])
            start = old["length"]
        if length > start:
            key = f"segments/{cid}/{pid}-{ino}-{start}-{length}"
            segs.append(Segment(key, length - start))
            uploads.append((key, fd, start, length))
        packs[pid] = segs
        local[pid] = {"ino": ino, "length": length}
    existing = {
        m["path"]
        for batch in obstore.list(store, prefix=url.key(f"segments/{cid}/"))
        for m in batch
    }
    report = PushReport(generation=(prev.number + 1) if prev else 1, objects=0)
    total = sum(e - s for k, _fd, s, e in uploads if url.key(k) not in existing)
    # loose objects not in the snapshot: earlier loose segments keep serving those of their
    # members that are still loose; the new ones go up streamed as one more segment
    loose = sorted(h for h in iter_loose(c.layout) if h not in packed)
    loose_segments = _loose_segments(c, store, url, prev, loose, existing, report)
    next_id = max([*needed, -1]) + 1
    rows = []
    for seg, members in loose_segments:
        packs[next_id] = [seg]
        rows += [(h, False, size, offset, size, next_id) for h, offset, size in members]
        next_id += 1
    idx.add_rows(rows)
    report.objects = len(packed) + len(rows)
    done = 0
    for key, fd, start, end in uploads:
        if url.key(key) in existing:
            report.skipped_segments += 1
            continue
        try:
            obstore.put(
                store,
                url.key(key),
                _chunks(fd, start, end),
                chunk_size=CHUNK,
                max_concurrency=CONCURRENCY,
            )
        except Exception as exc:
            raise remote_error(exc, url) from exc
        report.uploaded_bytes += end - start
        report.uploaded_objects += 1
        done += end - start
        if progress:
            progress(done, total)
    report.segments = [s.key for segs in packs.values() for s in segs]
    digest, objects, size = idx.rows_digest()
    if prev and prev.packs == packs and prev.rows_digest == digest:
        report.generation = prev.number
        report.unchanged = True
        return report
    _check_no_other_publisher(store, url, prev, report.generation)
    # The index key is unique to this push: two publishers racing for generation N must never
    # overwrite each other's snapshot (the loser fails its check below; the winner's stands).
    index_key = generation_key(report.generation, "idx", token=os.urandom(6).hex())
    packed_size = [0]

    def compressed_index() -> Iterator[bytes]:  # streamed: the index is 170 B per object
        deflate = zlib.compressobj(3)
        with open(idx.path, "rb") as f:
            while piece := f.read(CHUNK):
                out = deflate.compress(piece)
                packed_size[0] += len(out)
                yield out
        out = deflate.flush()
        packed_size[0] += len(out)
        yield out

    try:
        obstore.put(store, url.key(index_key), compressed_index(), chunk_size=CHUNK,
                    max_concurrency=CONCURRENCY)
    except Exception as exc:
        raise remote_error(exc, url) from exc
    gen = Generation(
        number=report.generation,
        config=c.config.to_json(),
        index_key=index_key,
        index_size=packed_size[0],
        packs=packs,
        local=local,
        created=time.time(),
        rows_digest=digest,
        objects=objects,
        size=size,
    )
    _check_no_other_publisher(store, url, prev, report.generation)
    obstore.put(
        store, url.key(generation_key(gen.number, "json")), json.dumps(gen.to_json()).encode()
    )
    obstore.put(
        store, url.key("HEAD"), json.dumps({"format": 1, "generation": gen.number}).encode()
    )
    report.uploaded_bytes += packed_size[0]
    report.uploaded_objects += 3
    from dosfs.remote.prune import prune

    report.pruned = prune(store, url, gen, grace)
    return report


def _check_no_other_publisher(
    store: S3Store, url: RemoteURL, prev: Generation | None, number: int
) -> None:
    """Refuse to publish over another push that ran at the same time (push assumes one
    publisher; this is a check, not a lock: it narrows the window to the last few requests)."""
    latest = read_head(store, url)
    if (latest.number if latest else 0) != (prev.number if prev else 0) or get_json(
        store, url, generation_key(number, "json")
    ) is not None:
        seen = latest.number if latest else "none"
        raise RemoteError(
            f"{url}: another push published generation {seen} while this one ran (one publisher "
            "at a time); nothing was switched: run push again"
        )


Members = list[tuple[str, int, int]]  # (hashkey, offset, size) inside a loose segment


def _loose_segments(
    c: Container,
    store: S3Store,
    url: RemoteURL,
    prev: Generation | None,
    loose: list[str],
    existing: set[str],
    report: PushReport,
) -> list[tuple[Segment, Members]]:
    """The loose segments of the new generation and the members each one serves.

    Each loose segment has a manifest (`<segment>.rows`, written after it: its presence says the
    segment is whole). A member is served from the first earlier segment that holds it while it
    is still loose here; what no earlier segment holds goes up as a new segment named by that
    set, streamed object by object (memory stays flat whatever their number and size)."""
    wanted = set(loose)
    out: list[tuple[Segment, Members]] = []
    for segs in (prev.packs.values() if prev else []):
        if len(segs) != 1 or "/loose-" not in f"/{segs[0].key}":
            continue
        manifest = get_json(store, url, segs[0].key + ".rows")
        if manifest is None:  # published before manifests existed: not reused
            continue
        members = [(h, int(o), int(s)) for h, o, s in manifest["rows"] if h in wanted]
        if members:
            out.append((segs[0], members))
            wanted -= {h for h, _o, _s in members}
    new = [h for h in loose if h in wanted]
    if not new:
        return out
    key = f"segments/{c.container_id}/loose-{hashlib.sha256(' '.join(new).encode()).hexdigest()}"
    manifest = get_json(store, url, key + ".rows") if url.key(key) in existing else None
    if manifest is not None:  # a killed push got this far: the segment is whole
        members = [(h, int(o), int(s)) for h, o, s in manifest["rows"]]
        report.skipped_segments += 1
    else:
        members = []

        def content() -> Iterator[bytes]:
            offset = 0
            for h in new:
                try:
                    with c.get_object_stream(h, verify=True) as stream:
                        size = 0
                        while piece := stream.read(CHUNK):
                            size += len(piece)
                            yield piece
                except NotExistent:  # deleted meanwhile
                    continue
                members.append((h, offset, size))
                offset += size

        try:
            obstore.put(store, url.key(key), content(), chunk_size=CHUNK,
                        max_concurrency=CONCURRENCY)
            obstore.put(store, url.key(key + ".rows"), json.dumps({"rows": members}).encode())
        except (NotExistent, CorruptObject):
            raise
        except Exception as exc:
            raise remote_error(exc, url) from exc
        report.uploaded_bytes += sum(s for _h, _o, s in members)
        report.uploaded_objects += 2
    if members:
        out.append((Segment(key, sum(s for _h, _o, s in members)), members))
    return out


