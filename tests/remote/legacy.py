"""A generation as the release before index tables published it (format 1: a zlib'ed SQLite
snapshot of packs.idx as the index), made from a format 2 generation of a fully packed
container, so that tests can check that such a generation still reads and that the next push
upgrades it in place."""

from __future__ import annotations

import json
import sqlite3
import zlib
from pathlib import Path
from typing import Any

import obstore

from dosfs.remote.layout import generation_key


def downgrade(store: Any, prefix: str, folder: Path, number: int) -> None:
    """Rewrite generation `number` under `prefix` as format 1 (its tables stay, unnamed)."""
    key = f"{prefix}/{generation_key(number, 'json')}"
    data = json.loads(bytes(obstore.get(store, key).bytes()))
    for segs in data["packs"].values():
        assert all("/loose-" not in s[0] for s in segs), "pack the container first"
    copy = folder.parent / f"{folder.name}-legacy.idx"
    source = sqlite3.connect(f"file:{folder / 'packs.idx'}?mode=ro", uri=True)
    target = sqlite3.connect(copy)
    source.backup(target)
    target.execute("PRAGMA journal_mode=DELETE")
    target.close()
    source.close()
    blob = zlib.compress(copy.read_bytes(), 3)
    copy.unlink()
    index_key = generation_key(number, "idx", token="legacy")
    obstore.put(store, f"{prefix}/{index_key}", blob)
    for field in ("tables", "lengths", "watermark"):
        data.pop(field, None)
    data.update(format=1, index=index_key, index_size=len(blob), rows_digest="")
    obstore.put(store, key, json.dumps(data).encode())
