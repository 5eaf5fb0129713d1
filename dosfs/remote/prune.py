"""Pruning: generations replaced more than the grace period ago (never the current one or the
one before), then segments and index tables that no kept generation names and that are older
than the grace period, so a mount that opened an old generation keeps reading it for at least
`grace` seconds after a newer one was published (the clock starts when a generation stops being
the newest, i.e. at its successor's creation, not at its own).

`plan` says what would go without deleting anything (`dosfs status s3://…` shows it)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import obstore
from obstore.store import S3Store

if TYPE_CHECKING:
    from obstore import ObjectMeta

from dosfs.remote.layout import Generation, generation_key, generation_number
from dosfs.remote.url import RemoteURL


@dataclass
class Plan:
    numbers: list[int]  # generations present (a .json or an .idx under generations/)
    doomed: list[int]  # generations a prune would delete now
    keep: list[Generation] = field(default_factory=list)
    listed: list[ObjectMeta] = field(default_factory=list)  # the generations/ listing


def _load(store: S3Store, url: RemoteURL, n: int) -> Generation | None:
    try:
        data = bytes(obstore.get(store, url.key(generation_key(n, "json"))).bytes())
        return Generation.from_json(json.loads(data))
    except Exception:  # noqa: BLE001 - no json (a killed push) or a torn one: nothing to keep
        return None


def plan(
    store: S3Store, url: RemoteURL, current: Generation, grace: float, now: float | None = None
) -> Plan:
    """Which generations are present and which of them a prune would delete."""
    now = time.time() if now is None else now
    listed = [m for batch in obstore.list(store, prefix=url.key("generations/")) for m in batch]
    numbers = sorted({generation_number(m["path"]) for m in listed})
    result = Plan(numbers=numbers, doomed=[], keep=[current], listed=listed)
    loaded = {n: _load(store, url, n) for n in numbers if n != current.number}
    replaced_at = current.created  # when the newest older generation stopped being current
    for n in sorted(loaded, reverse=True):
        gen = loaded[n]
        if n > current.number:
            if gen is not None:  # a push racing this one: not ours to judge
                result.keep.append(gen)
            continue
        if n >= current.number - 1 or (gen is not None and now - replaced_at < grace):
            if gen is not None:
                result.keep.append(gen)
        else:
            result.doomed.append(n)
        if gen is not None:
            replaced_at = gen.created
    result.doomed.sort()
    return result


def prune(store: S3Store, url: RemoteURL, current: Generation, grace: float) -> int:
    """Delete what is no longer needed; returns how many objects were deleted."""
    now = time.time()
    p = plan(store, url, current, grace, now)
    gone = set(p.doomed)
    doomed = [m["path"] for m in p.listed if generation_number(m["path"]) in gone]
    wanted = {url.key(k) for g in p.keep for k in g.segment_keys() | g.index_keys()}
    wanted |= {k + ".rows" for k in wanted if "/loose-" in k}  # their manifests
    for folder in ("segments/", "index/"):  # index tables are shared by generations too
        for batch in obstore.list(store, prefix=url.key(folder)):
            for m in batch:
                age = now - m["last_modified"].timestamp()
                if m["path"] not in wanted and age >= grace:
                    doomed.append(m["path"])
    existing = {m["path"] for m in p.listed}
    doomed = [d for d in doomed if d in existing or d.startswith(
        (url.key("segments/"), url.key("index/")))]
    if doomed:
        obstore.delete(store, doomed)
    return len(doomed)
