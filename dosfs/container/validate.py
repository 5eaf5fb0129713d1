"""validate(): re-hash every object, check every row against its pack, list crash leftovers.

Takes no lock (it only reads), so a repack may replace a pack while it is being checked: when a
pack shows problems and the index changed meanwhile, that pack is checked again (a few times).
Reads go through the pack store (`PackCache.open_uncached`) and the one streaming decoder
(`readers.iter_stored`), so a pack that shrinks under validate ends a read with an error rather
than a loop.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from dosfs.container import loose as _loose
from dosfs.container.blocksums import MIN_SIZE as SUMS_MIN_SIZE
from dosfs.container.blocksums import BlockSummer
from dosfs.container.config import REPACK_PACK_ID, new_hasher
from dosfs.container.decoding import iter_stored
from dosfs.container.errors import CorruptObject
from dosfs.container.maintenance import REPACK_TMP_SUFFIX, repack_leftovers
from dosfs.container.meta import ValidationReport
from dosfs.container.packs import TMP_LOCK_PREFIX, list_pack_ids
from dosfs.container.parts import Parts

log = logging.getLogger("dosfs.container")

Callback = Callable[[str, Any], None]


def validate(parts: Parts, callback: Callback | None = None) -> ValidationReport:
    layout = parts.layout
    index = parts.index
    report = ValidationReport()
    report.invalid_loose_names = list(_loose.invalid_loose_names(layout))
    _validate_loose(parts, report, callback)
    referenced = index.pack_ids()
    on_disk = set(list_pack_ids(layout))
    if os.path.exists(layout.pack_path(REPACK_PACK_ID)):
        on_disk.add(REPACK_PACK_ID)
    for pack_id in referenced:
        _validate_pack(parts, pack_id, report, callback)
    report.unreferenced_pack_files = [str(p) for p in sorted(on_disk - set(referenced))]
    report.sandbox_leftovers = _loose.sandbox_entries(layout)
    names = os.listdir(layout.packs)
    report.pack_lock_files = sorted(
        n for n in names if n.endswith(".lock") or n.startswith(TMP_LOCK_PREFIX)
    )
    report.repack_leftovers = [n for n in repack_leftovers(parts) if n.endswith(REPACK_TMP_SUFFIX)]
    report.duplicates = sorted(n for n in os.listdir(layout.duplicates) if not n.startswith("."))
    return report


def _validate_loose(parts: Parts, report: ValidationReport, callback: Callback | None) -> None:
    layout = parts.layout
    if callback:
        total = sum(1 for _ in _loose.iter_loose(layout))
        callback("init", {"total": total, "description": "Loose objects"})
    for h in _loose.iter_loose(layout):
        try:
            if _loose.file_digest(layout.loose_path(h), parts.hash_type) != h:
                report.invalid_hashes_loose.append(h)
        except FileNotFoundError:
            continue  # packed and cleaned meanwhile
        except OSError as exc:
            log.warning("loose object %s cannot be read: %s", h, exc)
            report.invalid_hashes_loose.append(h)
        report.checked_loose += 1
        if callback:
            callback("update", 1)
    if callback:
        callback("close", None)


def _validate_pack(
    parts: Parts, pack_id: int, report: ValidationReport, callback: Callback | None
) -> None:
    index = parts.index
    partial = ValidationReport()
    for _attempt in range(3):
        stamp = index.stamp()
        partial = ValidationReport()
        _validate_pack_once(parts, pack_id, partial, callback)
        if partial.is_valid() or index.stamp() == stamp:
            break
    for name in ValidationReport.ERRORS:
        getattr(report, name).extend(getattr(partial, name))
    report.checked_packed += partial.checked_packed


def _validate_pack_once(
    parts: Parts, pack_id: int, report: ValidationReport, callback: Callback | None
) -> None:
    try:
        src = parts.packs.open_uncached(pack_id)
    except FileNotFoundError:
        if parts.index.pack_in_use(pack_id):  # (else a concurrent repack removed it)
            report.missing_pack_files.append(pack_id)
        return
    file_size = src.size()
    if callback:
        count = parts.index.pack_stats().get(pack_id, (0, 0, 0, 0))[0]
        callback("init", {"total": count, "description": f"Pack {pack_id}"})
    current = 0
    good: list[tuple[str, int, bytes]] = []  # block sums of big objects that hashed right
    for _rowid, h, compressed, size, offset, length in parts.index.iter_pack_rows(pack_id):
        report.checked_packed += 1
        if callback:
            callback("update", 1)
        if offset < 0 or length < 0 or size < 0:
            report.invalid_rows_packed.append(h)
            continue
        if offset < current and length:
            report.overlapping_packed.append(h)
        current = max(current, offset + length)
        if offset + length > file_size:
            report.rows_past_end_of_pack.append(h)
            continue
        hasher = new_hasher(parts.hash_type)
        summer = BlockSummer() if size > SUMS_MIN_SIZE else None
        got = 0
        try:
            for chunk in iter_stored(h, src, compressed, offset, length):
                hasher.update(chunk)
                if summer is not None:
                    summer.update(chunk)
                got += len(chunk)
                if got > size:
                    break  # more than promised: a wrong size (and hash)
        except CorruptObject as exc:
            if src.size() < offset + length:
                report.rows_past_end_of_pack.append(h)  # the pack shrank under us
            else:
                log.debug("unreadable: %s", exc)
                report.unreadable_packed.append(h)
                report.invalid_hashes_packed.append(h)
            continue
        if hasher.hexdigest() != h:
            report.invalid_hashes_packed.append(h)
        elif got == size and summer is not None:
            good.append((h, size, summer.sums()))  # hashed whole anyway: spare the mount
        if got != size:
            report.invalid_sizes_packed.append(h)
    if good and parts.blocksums is not None:
        parts.blocksums.record(good)
    if callback:
        callback("close", None)
