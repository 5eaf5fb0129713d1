"""push: publish a local container as a new generation, sending what changed since the last.

What it reads: when nothing was removed or moved since its last generation, only the index rows
added since then (container/changes.py: O(change), pack files pinned around one read
transaction), which go up as one index run with rows for new loose objects and tombstones for
loose objects that went (remote/index_publish.py); otherwise a consistent copy of the whole
index (pack files opened first, packs.idx copied with SQLite's backup API, each pinned file then
checked to be still in place: a repack moves rows away before it replaces a file), which goes up
as a new base. Loose objects are read through the container's read protocol (a packer may move
them meanwhile).

Why it survives a kill: segment names are derived from what they hold (pack, inode, range; or
the hash of a set of loose objects, whose manifest is written after the segment) and index
tables are named by their content, so the next push finds what is already up and sends the
rest; the generation's objects go up before HEAD, which is written last.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import obstore
from obstore.store import S3Store

from dosfs.container import Container, CorruptObject, NotExistent
from dosfs.container.changes import Changes, Watermark, read_copy
from dosfs.container.loose import iter_loose
from dosfs.container.packstore import PinnedFile, pread_exact
from dosfs.container.snapshot import Snapshot
from dosfs.remote.index_publish import (
    Record,
    Written,
    merge_sorted,
    next_runs,
    put_tables,
    write_table,
)
from dosfs.remote.layout import (
    Generation,
    Segment,
    generation_key,
    get_json,
    read_head,
    remote_error,
)
from dosfs.remote.table import TableRef
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


def _read_prev(store: S3Store, url: RemoteURL) -> Generation | None:
    """The current generation (None: nothing yet; a missing bucket is created)."""
    try:
        return read_head(store, url)
    except RemoteError:
        _ensure_bucket(store, url)  # raises again unless the bucket was missing
        return read_head(store, url)


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
    prev = _read_prev(store, url)
    with Container(container) as c, tempfile.TemporaryDirectory(prefix="dosfs-push-") as tmp:
        cid = c.container_id
        if prev is not None and prev.config.get("container_id") not in (None, cid):
            if not force:
                raise RemoteError(
                    f"{url} holds another container ({prev.config['container_id']}, "
                    f"generation {prev.number}), not {cid}: push --force to replace it"
                )
            prev = dataclasses.replace(prev, local={}, tables=(), watermark=None)
        run = _Push(c, store, url, prev, tmp, progress, grace)
        listed = sorted(iter_loose(c.layout))  # before the index is read: see _Push.loose
        since = None
        if prev is not None and prev.tables and prev.watermark is not None:
            since = Watermark.from_json(prev.watermark)
        with c.changes(since, listed) as changes:
            if changes.added is not None and run.same_packs(changes.packs):
                return run.publish_changes(changes, [h for h in listed if h not in changes.packed])
        with c.snapshot(os.path.join(tmp, "packs.idx")) as snap:
            mark, packed = read_copy(snap.index.path, listed)
            return run.publish_all(snap, mark, [h for h in listed if h not in packed])


Upload = tuple[str, int, int, int]  # key, fd, start, end


class _Push:
    """One push: plans segments and index tables, uploads them, then the generation."""

    def __init__(
        self,
        c: Container,
        store: S3Store,
        url: RemoteURL,
        prev: Generation | None,
        tmp: str,
        progress: Progress | None,
        grace: float,
    ) -> None:
        self.c, self.store, self.url, self.prev, self.tmp = c, store, url, prev, tmp
        self.progress = progress
        self.grace = grace
        self.report = PushReport(generation=(prev.number + 1) if prev else 1, objects=0)
        self._existing: set[str] | None = None

    def same_packs(self, pinned: dict[int, PinnedFile]) -> bool:
        """Every pack the last generation copied is still the file it copied (a repack
        replaces files: then rows moved, and everything is read again)."""
        local = self.prev.local if self.prev else {}
        return all(pid in pinned and pinned[pid].identity[1] == v["ino"]
                   for pid, v in local.items())

    # -- the two ways to publish -----------------------------------------------------------
    def publish_changes(self, ch: Changes, loose: list[str]) -> PushReport:
        """Only what changed since the last generation: a run of the added rows, the new
        loose objects and tombstones for loose objects that went away."""
        prev = self.prev
        assert prev is not None and ch.added is not None
        ends = {pid: v["length"] for pid, v in prev.local.items()}
        for pid, end in ch.ends.items():
            ends[pid] = max(ends.get(pid, 0), end)
        packs, local, uploads = self._plan_packs(ends, ch.packs)
        loose_segs, before = self._loose(loose, packs)
        served = {h for _pid, members, _new in loose_segs for h, _o, _s in members}
        added = {r[0] for r in ch.added}
        records: list[Record] = [(r[0], r) for r in ch.added]
        for pid, members, new in loose_segs:
            if new:
                records += [(h, (h, 0, size, offset, size, pid)) for h, offset, size in members]
        records += [(h, None) for h in before if h not in served and h not in added]
        records.sort(key=lambda r: r[0])
        if not records and packs == prev.packs:
            self.report.generation = prev.number
            self.report.unchanged = True
            self.report.objects = prev.objects or 0
            return self.report
        self._upload(uploads)
        base, runs = prev.tables[0], list(prev.tables[1:])
        nxt = next_runs(self.store, self.url, runs, records, self.tmp)
        if nxt is None:  # the runs would grow too big: a new base instead
            with self.c.snapshot(os.path.join(self.tmp, "packs.idx")) as snap:
                mark, packed = read_copy(snap.index.path, loose)
                return self.publish_all(snap, mark, [h for h in loose if h not in packed])
        tables, written = nxt
        return self._finish(packs, local, loose_segs, ch.watermark, [base, *tables], written)

    def publish_all(self, snap: Snapshot, mark: Watermark, loose: list[str]) -> PushReport:
        """Everything: a new base of every row, no runs."""
        packs, local, uploads = self._plan_packs(snap.index.pack_ends(), snap.packs)
        loose_segs, _before = self._loose(loose, packs)
        self._upload(uploads)
        loose_rows = sorted(
            (h, (h, 0, size, offset, size, pid))
            for pid, members, _new in loose_segs for h, offset, size in members
        )
        records = merge_sorted(((r[0], r) for r in snap.index.iter_rows()), loose_rows)
        written = write_table(self.tmp, "base.tbl", records, mark.rows + len(loose_rows))
        return self._finish(packs, local, loose_segs, mark, [written.ref], [written])

    # -- pieces ----------------------------------------------------------------------------
    def _plan_packs(
        self, needed: dict[int, int], pinned: dict[int, PinnedFile]
    ) -> tuple[dict[int, list[Segment]], dict[int, dict[str, int]], list[Upload]]:
        """Each pack's segments: the last generation's while its file is the same and only
        grew, plus one segment of what it gained."""
        prev = self.prev
        cid = self.c.container_id
        packs: dict[int, list[Segment]] = {}
        local: dict[int, dict[str, int]] = {}
        uploads: list[Upload] = []
        for pid, length in sorted(needed.items()):
            if pid not in pinned:
                raise OSError(f"pack {pid} is in the index but not on disk")
            fd, ino = pinned[pid].fd, pinned[pid].identity[1]
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
        return packs, local, uploads

    def existing(self) -> set[str]:
        """Segments already up (listed once, only when something may need sending)."""
        if self._existing is None:
            prefix = self.url.key(f"segments/{self.c.container_id}/")
            self._existing = {
                m["path"] for batch in obstore.list(self.store, prefix=prefix) for m in batch}
        return self._existing

    def _upload(self, uploads: list[Upload]) -> None:
        if not uploads:
            return
        existing = self.existing()
        todo = [u for u in uploads if self.url.key(u[0]) not in existing]
        self.report.skipped_segments += len(uploads) - len(todo)
        total = sum(e - s for _k, _fd, s, e in todo)
        done = 0
        for key, fd, start, end in todo:
            try:
                obstore.put(self.store, self.url.key(key), _chunks(fd, start, end),
                            chunk_size=CHUNK, max_concurrency=CONCURRENCY)
            except Exception as exc:
                raise remote_error(exc, self.url) from exc
            existing.add(self.url.key(key))  # a second plan in this push skips it
            self.report.uploaded_bytes += end - start
            self.report.uploaded_objects += 1
            done += end - start
            if self.progress:
                self.progress(done, total)

    def _loose(
        self, loose: list[str], packs: dict[int, list[Segment]]
    ) -> tuple[list[tuple[int, Members, bool]], dict[str, int]]:
        """The loose segments (pack id, members, new?) added to `packs`, and the members of
        the last generation's loose segments (key -> size)."""
        prev = self.prev
        segs, before = loose_segments(self.c, self.store, self.url, prev, loose,
                                      self.existing, self.report)
        used = [pid for pid in (prev.packs if prev else {}) if pid >= LOOSE_BASE]
        next_id = max([LOOSE_BASE - 1, *used, *packs]) + 1
        out = []
        for seg, members, pid in segs:
            new = pid is None  # its rows are in no table yet
            if pid is None or pid < LOOSE_BASE:  # new, or numbered before tables existed
                pid, next_id = next_id, next_id + 1
            packs[pid] = [seg]
            out.append((pid, members, new))
        return out, before

    def _finish(
        self,
        packs: dict[int, list[Segment]],
        local: dict[int, dict[str, int]],
        loose_segs: list[tuple[int, Members, bool]],
        mark: Watermark,
        tables: list[TableRef],
        written: list[Written],
    ) -> PushReport:
        """Put the new tables, then the generation and HEAD (last), then prune."""
        prev, report = self.prev, self.report
        members = [m for _pid, ms, _new in loose_segs for m in ms]
        objects = mark.rows + len(members)
        size = mark.size + sum(s for _h, _o, s in members)
        lengths = mark.lengths + sum(s for _h, _o, s in members)
        _check_no_other_publisher(self.store, self.url, prev, report.generation)
        report.uploaded_bytes += put_tables(self.store, self.url, written)
        report.uploaded_objects += len(written)
        gen = Generation(
            number=report.generation,
            config=self.c.config.to_json(),
            index_key="",
            index_size=sum(t.size for t in tables),
            packs=packs,
            local=local,
            created=time.time(),
            objects=objects,
            size=size,
            tables=tuple(tables),
            lengths=lengths,
            watermark=mark.to_json(),
        )
        _check_no_other_publisher(self.store, self.url, prev, report.generation)
        obstore.put(self.store, self.url.key(generation_key(gen.number, "json")),
                    json.dumps(gen.to_json()).encode())
        obstore.put(self.store, self.url.key("HEAD"),
                    json.dumps({"format": 1, "generation": gen.number}).encode())
        report.uploaded_objects += 2
        report.objects = objects
        report.segments = [s.key for segs in packs.values() for s in segs]
        from dosfs.remote.prune import prune

        report.pruned = prune(self.store, self.url, gen, self.grace)
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
#: pack ids of loose segments start here (far above any local pack id), and stay with their
#: segment across generations: rows in older index tables name them
LOOSE_BASE = 1 << 30


def loose_segments(
    c: Container,
    store: S3Store,
    url: RemoteURL,
    prev: Generation | None,
    loose: list[str],
    existing: Callable[[], set[str]],
    report: PushReport,
) -> tuple[list[tuple[Segment, Members, int | None]], dict[str, int]]:
    """The loose segments of the new generation, each with the members it serves and its pack
    id in `prev` (None: new), and every member of prev's loose segments (key -> size).

    Each loose segment has a manifest (`<segment>.rows`, written after it: its presence says the
    segment is whole). A member is served from the first earlier segment that holds it while it
    is still loose here; what no earlier segment holds goes up as a new segment named by that
    set, streamed object by object (memory stays flat whatever their number and size)."""
    wanted = set(loose)
    out: list[tuple[Segment, Members, int | None]] = []
    before: dict[str, int] = {}
    for pid, segs in (prev.packs.items() if prev else []):
        if len(segs) != 1 or "/loose-" not in f"/{segs[0].key}":
            continue
        manifest = get_json(store, url, segs[0].key + ".rows")
        if manifest is None:  # published before manifests existed: not reused
            continue
        rows = [(h, int(o), int(s)) for h, o, s in manifest["rows"]]
        before.update((h, s) for h, _o, s in rows)
        members = [m for m in rows if m[0] in wanted]
        if members:
            out.append((segs[0], members, pid))
            wanted -= {h for h, _o, _s in members}
    new = [h for h in loose if h in wanted]
    if not new:
        return out, before
    key = f"segments/{c.container_id}/loose-{hashlib.sha256(' '.join(new).encode()).hexdigest()}"
    manifest = get_json(store, url, key + ".rows") if url.key(key) in existing() else None
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
            existing().add(url.key(key))  # a second plan in this push finds it whole
        except (NotExistent, CorruptObject):
            raise
        except Exception as exc:
            raise remote_error(exc, url) from exc
        report.uploaded_bytes += sum(s for _h, _o, s in members)
        report.uploaded_objects += 2
    if members:
        out.append((Segment(key, sum(s for _h, _o, s in members)), members, None))
    return out, before
