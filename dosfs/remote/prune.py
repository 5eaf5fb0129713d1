"""Pruning: generations older than the grace period (never the current one or the one before),
then segments that no kept generation names and that are older than the grace period, so a
mount that opened an old generation keeps reading it for at least `grace` seconds."""

from __future__ import annotations

import json
import time

import obstore
from obstore.store import S3Store

from dosfs.remote.layout import Generation, generation_key
from dosfs.remote.url import RemoteURL


def prune(store: S3Store, url: RemoteURL, current: Generation, grace: float) -> int:
    """Delete what is no longer needed; returns how many objects were deleted."""
    now = time.time()
    listed = [m for batch in obstore.list(store, prefix=url.key("generations/")) for m in batch]
    numbers = sorted({int(m["path"].rsplit("/", 1)[1].split(".")[0]) for m in listed})
    keep: list[Generation] = [current]
    doomed: list[str] = []
    for n in numbers:
        if n >= current.number - 1:
            if n != current.number:
                try:
                    data = bytes(obstore.get(store, url.key(generation_key(n, "json"))).bytes())
                    keep.append(Generation.from_json(json.loads(data)))
                except Exception:  # noqa: BLE001 - a torn older generation: nothing to keep
                    pass
            continue
        try:
            data = bytes(obstore.get(store, url.key(generation_key(n, "json"))).bytes())
            gen = Generation.from_json(json.loads(data))
        except Exception:  # noqa: BLE001 - no json (a killed push): only the age counts
            gen = None
        if gen is not None and now - gen.created < grace:
            keep.append(gen)
            continue
        doomed += [url.key(generation_key(n, "json")), url.key(generation_key(n, "idx"))]
    wanted = {url.key(k) for g in keep for k in g.segment_keys()}
    for batch in obstore.list(store, prefix=url.key("segments/")):
        for m in batch:
            age = now - m["last_modified"].timestamp()
            if m["path"] not in wanted and age >= grace:
                doomed.append(m["path"])
    existing = {m["path"] for m in listed}
    doomed = [d for d in doomed if d in existing or "/segments/" in f"/{d}"]
    if doomed:
        obstore.delete(store, doomed)
    return len(doomed)
