"""Maintenance: clean_storage and delete_objects (repack.py and validate.py have their own).

Both hold the container lock and are safe for concurrent readers and loose writers:
- clean_storage removes a loose copy only when its packed copy is committed and lies inside an
  existing pack file; it also removes what crashed writers leave behind (abandoned sandbox
  files, stale dosfs pack locks, an interrupted repack's `-1` and `N.dosfs-repack`), and commits
  staging files a writer declared complete before it died (loose.recover_complete);
- delete_objects removes duplicates, then loose copies, then index rows (pack bytes become holes
  that repack removes).
"""

from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from collections.abc import Sequence

from dosfs.container import loose as _loose
from dosfs.container.config import REPACK_PACK_ID, fsync_dir
from dosfs.container.errors import InconsistentContent, NotExistent
from dosfs.container.index import IN_CHUNK
from dosfs.container.meta import CleanReport
from dosfs.container.packs import remove_stale_pack_locks
from dosfs.container.parts import Parts

log = logging.getLogger("dosfs.container")

#: suffix of the hard link a repack makes before replacing pack N (repack.py)
REPACK_TMP_SUFFIX = ".dosfs-repack"


# -- delete ----------------------------------------------------------------------------------------
def delete_objects(parts: Parts, hashkeys: Sequence[str]) -> list[str]:
    """Remove duplicates, loose copies, then index rows; returns the keys that existed."""
    layout = parts.layout
    keys = [h for h in dict.fromkeys(hashkeys) if layout.is_valid_hashkey(h)]
    with parts.lock.hold("delete objects"):
        wanted = set(keys)
        for name in os.listdir(layout.duplicates):
            if name.partition(".")[0] in wanted and not name.startswith("."):
                os.unlink(os.path.join(layout.duplicates, name))
        deleted: set[str] = set()
        for h in keys:
            try:
                os.unlink(layout.loose_path(h))
                deleted.add(h)
            except FileNotFoundError:
                pass
        conn = parts.index.write_conn()
        try:
            deleted |= parts.index.delete_hashkeys(keys, conn)
        finally:
            conn.close()
        parts.packs.clear()
    return [h for h in keys if h in deleted]


# -- clean_storage ---------------------------------------------------------------------------------
def _resolve_duplicates(parts: Parts) -> list[str]:
    """Keep one intact copy of each object that has files in duplicates/; returns their keys."""
    layout = parts.layout
    resolver = parts.resolver
    groups: dict[str, list[str]] = defaultdict(list)
    for name in os.listdir(layout.duplicates):
        if "." in name and not name.startswith("."):
            groups[name.partition(".")[0]].append(name)
    for hashkey, names in groups.items():
        paths = [os.path.join(layout.duplicates, n) for n in names]
        good = False
        if layout.is_valid_hashkey(hashkey):
            try:
                with resolver.reader(hashkey) as reader:
                    good = reader.digest(parts.hash_type) == hashkey
            except (NotExistent, InconsistentContent):
                good = False
        if not good:
            for path in paths:
                if _loose.file_digest(path, parts.hash_type) == hashkey:
                    _loose.place(layout, path, hashkey)
                    good = True
                    break
            if not good:
                raise InconsistentContent(
                    f"duplicates of {hashkey} exist but neither they nor the object are intact"
                )
        for path in paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
    return sorted(groups)


def clean_storage(
    parts: Parts, vacuum: bool = False, sandbox_max_age: float = 3600.0
) -> CleanReport:
    layout = parts.layout
    index = parts.index
    report = CleanReport()
    with parts.lock.hold("clean storage"):
        index.check()  # a damaged index is an error, never "nothing to clean"
        report.recovered = _loose.recover_complete(layout)
        report.duplicates = _resolve_duplicates(parts)
        # loose copies of packed objects (only when the packed copy is inside its pack file)
        pack_sizes: dict[int, int] = {}

        def pack_size(pack_id: int) -> int:
            if pack_id not in pack_sizes:
                try:
                    pack_sizes[pack_id] = os.stat(layout.pack_path(pack_id)).st_size
                except FileNotFoundError:
                    pack_sizes[pack_id] = -1
            return pack_sizes[pack_id]

        for shard in _loose.list_shards(layout):
            names = _loose.list_shard(layout, shard)
            for start in range(0, len(names), IN_CHUNK * 10):
                rows, _stamp = index.lookup_many(names[start : start + IN_CHUNK * 10])
                for h, _c, _s, offset, length, pack_id in rows:
                    if offset + length <= pack_size(pack_id):
                        try:
                            os.unlink(layout.loose_path(h))
                            report.loose_removed += 1
                        except FileNotFoundError:
                            pass
        # abandoned sandbox files (their writer is gone: no flock, old enough)
        now = time.time()
        for name in _loose.sandbox_entries(layout):
            path = os.path.join(layout.sandbox, name)
            if os.path.isfile(path) and _loose.is_abandoned(path, sandbox_max_age, now):
                try:
                    os.unlink(path)
                    report.sandbox_removed.append(name)
                except FileNotFoundError:
                    pass
        report.pack_locks_removed = remove_stale_pack_locks(layout)
        report.repack_leftovers_removed = remove_repack_leftovers(parts)
        report.restart_points_removed = parts.restarts.prune(layout.index)
        if parts.blocksums is not None:
            report.block_sums_removed = parts.blocksums.prune(
                layout.index, lambda h: os.path.exists(layout.loose_path(h)))
        parts.packs.clear()
        if vacuum:
            index.vacuum()
    return report


def repack_leftovers(parts: Parts) -> list[str]:
    """Files an interrupted repack can leave in packs/: `N.dosfs-repack` links, and `-1` when
    no row references it and no repack holds `-1.lock`."""
    layout = parts.layout
    found: list[str] = []
    try:
        names = os.listdir(layout.packs)
    except FileNotFoundError:
        return found
    for name in sorted(names):
        if name.endswith(REPACK_TMP_SUFFIX) and name[: -len(REPACK_TMP_SUFFIX)].isdigit():
            found.append(name)
    minus_one = str(REPACK_PACK_ID)
    if (
        minus_one in names
        and f"{minus_one}.lock" not in names
        and not parts.index.pack_in_use(REPACK_PACK_ID)
    ):
        found.append(minus_one)
    return found


def remove_repack_leftovers(parts: Parts) -> list[str]:
    """Remove `repack_leftovers` (the caller holds the container lock)."""
    removed = repack_leftovers(parts)
    for name in removed:
        try:
            os.unlink(os.path.join(parts.layout.packs, name))
        except FileNotFoundError:
            pass
    if removed:
        fsync_dir(parts.layout.packs)
        log.info("removed leftovers of an interrupted repack: %s", ", ".join(removed))
    return removed
