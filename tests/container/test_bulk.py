"""Bulk reads (grouped by pack, sorted by offset), metadata, listing and counting."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from dosfs import Container, ObjectType
from dosfs.container import bulk as bulk_mod
from dosfs.container.packstore import LOCAL_GAP, PinnedFile


@pytest.fixture
def mixed(small_packs: Container, make_blobs) -> tuple[Container, dict[str, bytes]]:  # type: ignore[no-untyped-def]
    blobs = make_blobs(120)
    c = small_packs
    expected: dict[str, bytes] = {}
    for b, k in zip(blobs[:80], c.add_objects_to_pack(blobs[:80]), strict=True):
        expected[k] = b
    for b, k in zip(
        blobs[80:100], c.add_objects_to_pack(blobs[80:100], compress=True), strict=True
    ):
        expected[k] = b
    for b in blobs[100:]:
        expected[c.add_object(b)] = b
    return c, expected


def test_get_objects_content(mixed) -> None:  # type: ignore[no-untyped-def]
    c, expected = mixed
    keys = list(expected)
    assert c.get_objects_content(keys) == expected
    missing = ["0" * 64, "not-a-key"]
    got = c.get_objects_content(keys[:3] + missing, skip_if_missing=False)
    assert got == {**{k: expected[k] for k in keys[:3]}, "0" * 64: None, "not-a-key": None}
    assert c.get_objects_content(missing) == {}
    assert c.get_objects_content(keys[:2] * 3) == {k: expected[k] for k in keys[:2]}


def test_stream_and_meta_grouped_by_pack_and_offset(mixed) -> None:  # type: ignore[no-untyped-def]
    c, expected = mixed
    seen: list[tuple] = []
    with c.get_objects_stream_and_meta(list(expected) + ["f" * 64], skip_if_missing=False) as it:
        for h, stream, meta in it:
            if meta.type == ObjectType.MISSING:
                assert stream is None and h == "f" * 64
                continue
            assert stream.read() == expected[h]
            stream.seek(0)
            assert stream.read(3) == expected[h][:3]
            seen.append((meta.type, meta.pack_id, meta.pack_offset))
    packed = [s for s in seen if s[0] == "packed"]
    assert packed == sorted(packed, key=lambda s: (s[1], s[2]))
    assert seen[len(packed) :] == [("loose", None, None)] * 20
    assert len(seen) == len(expected)


def test_stream_valid_until_next_item(mixed) -> None:  # type: ignore[no-untyped-def]
    c, expected = mixed
    with c.get_objects_stream_and_meta(list(expected)) as it:
        streams = [s for _h, s, _m in it]
    assert all(s.closed for s in streams)


def test_big_objects_and_windows(container: Container, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(bulk_mod, "WINDOW", 4096)
    monkeypatch.setattr(PinnedFile, "bulk_gap", 10)
    blobs = [os.urandom(n) for n in (10, 5000, 100, 3000, 2000, 9000)]
    keys = container.add_objects_to_pack(blobs)
    keys += container.add_objects_to_pack([b"z" * 20000], compress=True)
    blobs.append(b"z" * 20000)
    container.delete_objects([keys[2]])  # a hole in the middle
    want = {k: b for k, b in zip(keys, blobs, strict=True) if k != keys[2]}
    assert container.get_objects_content(list(want)) == want


def test_get_objects_meta_and_has(mixed) -> None:  # type: ignore[no-untyped-def]
    c, expected = mixed
    keys = list(expected)
    metas = dict(c.get_objects_meta(keys + ["0" * 64], skip_if_missing=False))
    assert metas["0" * 64].type == "missing" and metas["0" * 64].size is None
    for k in keys:
        assert metas[k].size == len(expected[k])
        assert metas[k] == c.get_object_meta(k)
    assert c.has_objects([keys[0], "0" * 64, "bad"]) == [True, False, False]
    assert c.has_object(keys[-1])


def test_bulk_rounds(mixed, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(bulk_mod, "KEYS_PER_ROUND", 7)
    c, expected = mixed
    assert c.get_objects_content(list(expected)) == expected


def test_loose_packed_meanwhile_is_found(container: Container, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A key missed in the index whose loose file vanished is looked up in the index again."""
    from dosfs.container.resolve import Resolver

    h = container.add_object(b"moving")
    real = Resolver._loose_item

    def pack_first(self, key: str, with_content: bool):  # type: ignore[no-untyped-def]
        other = Container(container.folder)
        other.pack_all_loose(clean_loose_per_pack=True)
        other.close()
        return real(self, key, with_content)

    monkeypatch.setattr(Resolver, "_loose_item", pack_first)
    assert container.get_objects_content([h]) == {h: b"moving"}


def test_iter_hashkeys_union_sorted_after(mixed) -> None:  # type: ignore[no-untyped-def]
    c, expected = mixed
    keys = sorted(expected)
    # a key both loose and packed is listed once
    c.add_objects_to_pack([expected[keys[5]]])
    c.add_object(expected[keys[6]])
    assert list(c.iter_hashkeys()) == keys
    assert list(c.list_all_objects()) == keys
    for i in (0, 1, 57, len(keys) - 1):
        assert list(c.iter_hashkeys(after=keys[i])) == keys[i + 1 :]
    assert list(c.iter_hashkeys(after="")) == keys
    assert list(c.iter_hashkeys(after="g")) == []
    assert list(c.iter_hashkeys(after=keys[10][:3])) == [k for k in keys if k > keys[10][:3]]


@pytest.mark.parametrize("prefix", [0, 1, 3])
def test_iter_hashkeys_other_prefixes(tmp_path: Path, prefix: int, make_blobs) -> None:  # type: ignore[no-untyped-def]
    c = Container(tmp_path / "c")
    c.init_container(loose_prefix_len=prefix)
    blobs = make_blobs(60)
    keys = set(c.add_objects_to_pack(blobs[:30]))
    keys |= {c.add_object(b) for b in blobs[25:]}
    assert list(c.iter_hashkeys()) == sorted(keys)
    mid = sorted(keys)[20]
    assert list(c.iter_hashkeys(after=mid)) == sorted(keys)[21:]
    assert c.count_objects().loose == 35


def test_counts_and_sizes(mixed, folder: Path) -> None:  # type: ignore[no-untyped-def]
    c, expected = mixed
    count = c.count_objects()
    assert count.packed == 100 and count["loose"] == 20
    assert count.pack_files == len(os.listdir(folder / "packs"))
    total = c.get_total_size()
    sizes = [len(expected[k]) for k in expected]
    assert total.total_size_packed + total.total_size_loose == sum(sizes)
    assert total["total_size_packfiles_on_disk"] == sum(
        (folder / "packs" / p).stat().st_size for p in os.listdir(folder / "packs")
    )
    assert total.total_size_packindexes_on_disk > 0


def test_windows_per_window_match_the_walk() -> None:
    """The bisecting window plan equals the row-by-row one on random layouts (gaps, big
    objects, empty objects, objects just at the window size)."""
    rng = random.Random(5)
    for _ in range(300):
        gap = rng.choice([LOCAL_GAP, 128 * 1024, 10])
        offsets, ends, pos = [], [], 0
        for _k in range(rng.randrange(1, 60)):
            pos += rng.choice([0, 0, 1, 7, gap, gap + 1, 5 * gap])
            length = rng.choice([0, 1, 100, bulk_mod.WINDOW // 3, bulk_mod.WINDOW,
                                 bulk_mod.WINDOW + 1])
            offsets.append(pos)
            ends.append(pos + length)
            pos += length
        assert bulk_mod._windows(offsets, ends, gap) == bulk_mod._windows_walk(offsets, ends, gap)
