"""Container.snapshot(): the storage at one moment, for push and status (issue 20): every row
of the index copy points into a pack file the snapshot holds open, whatever a repack or a
packer does meanwhile."""

from __future__ import annotations

import os
from pathlib import Path

from dosfs import Container
from dosfs.container.snapshot import IndexCopy


def test_snapshot_pins_packs_and_copies_the_index(container: Container, tmp_path: Path) -> None:
    blobs = [os.urandom(1000 + i) for i in range(50)]
    keys = container.add_objects_to_pack(blobs)
    with container.snapshot(str(tmp_path / "copy.idx")) as snap:
        assert set(snap.packs) == {0}
        assert snap.index.hashkeys() == set(keys)
        assert snap.index.count_and_size() == (50, sum(map(len, blobs)))
        ends = snap.index.pack_ends()
        container.delete_objects(keys[:25])
        container.repack()  # pack 0 is a new file now; the snapshot still holds the old one
        container.add_objects_to_pack([b"after the snapshot"])
        assert snap.index.hashkeys() == set(keys)  # the copy did not move
        pinned = snap.packs[0]
        assert os.fstat(pinned.fd).st_ino != os.stat(container.folder / "packs" / "0").st_ino
        data = pinned.read_at(0, ends[0])
        assert len(data) == ends[0] and blobs[0] in data and blobs[-1] in data
        digest, count, size = snap.index.rows_digest()
    assert count == 50 and size == sum(map(len, blobs))
    again = IndexCopy(str(tmp_path / "copy.idx"))
    assert again.rows_digest() == (digest, count, size)
    again.add_rows([("f" * 64, False, 3, 0, 3, 7)])
    assert again.count_and_size() == (51, size + 3) and again.rows_digest()[0] != digest
