"""The published index read on demand (issue 21): tables that verify every page they serve,
pushes that send only what changed (runs, tombstones, merges, a new base when rows moved), and
readers that never fetch the whole index."""

from __future__ import annotations

import errno
import json
import random
from collections.abc import Callable
from pathlib import Path

import obstore
import pytest

from dosfs.container import Container
from dosfs.remote import index_publish
from dosfs.remote import table as tb
from dosfs.remote.container import RemoteContainer
from dosfs.remote.layout import Generation, generation_key
from dosfs.remote.push import push
from dosfs.remote.tableindex import WHOLE, _Paged
from dosfs.remote.url import RemoteError, parse_url
from tests.fs.conftest import Mounted
from tests.remote.conftest import S3Server
from tests.remote.legacy import downgrade


def _rows(n: int, seed: int = 1) -> list[tuple[str, tb.Row | None]]:
    rng = random.Random(seed)
    keys = sorted({rng.randbytes(32).hex() for _ in range(n)})
    out: list[tuple[str, tb.Row | None]] = []
    for i, h in enumerate(keys):
        row = None if i % 17 == 5 else (h, i % 2, i * 3, i * 100, i * 2 + 1, i % 4)
        out.append((h, row))
    return out


def _local_reader(path: Path) -> Callable[[tb.TableRef, int, int], bytes]:
    data = path.read_bytes()
    return lambda _ref, lo, hi: data[lo:hi]


def test_a_table_finds_every_row_and_lists_in_order(tmp_path: Path) -> None:
    rows = _rows(5000)
    writer = tb.TableWriter(str(tmp_path / "t"), len(rows))
    for h, row in rows:
        writer.add(h, row)
    ref = writer.finish()
    assert ref.records == 5000 and ref.bits == tb.bits_for(5000) > 0
    table = _Paged(ref, _local_reader(tmp_path / "t"))
    for i, (h, row) in enumerate(rows):
        assert table.get(h) == (row, i)
    assert table.get("f" * 64) is None and table.get("0" * 64) is None
    listed = [(h, row) for h, row, _pos in table.scan("")]
    assert listed == rows
    middle = rows[2500][0]
    assert [h for h, _r, _p in table.scan(middle)] == [h for h, _r in rows[2501:]]
    w = tb.TableWriter(str(tmp_path / "v"), 2)
    w.add(rows[1][0], None)
    with pytest.raises(ValueError):
        w.add(rows[0][0], None)  # out of order


@pytest.mark.parametrize("where", ["head", "fan", "bucket", "whole"])
def test_a_flipped_byte_in_a_table_is_never_a_row(tmp_path: Path, where: str) -> None:
    rows = _rows(3000, seed=2)
    writer = tb.TableWriter(str(tmp_path / "t"), len(rows))
    for h, row in rows:
        writer.add(h, row)
    ref = writer.finish()
    data = bytearray((tmp_path / "t").read_bytes())
    target = rows[1234][0]
    bucket = ref.bucket_of(bytes.fromhex(target))
    if where == "head":
        pos = 20
    elif where == "fan":
        pos = ref.page_range(bucket // tb.FAN_PER_PAGE)[0] + 12 * (bucket % tb.FAN_PER_PAGE) + 4
    else:
        pos = ref.records_offset + 1234 * tb.RECORD + 40  # the row's offset field
    data[pos] ^= 0x10
    if where == "whole":
        with pytest.raises(tb.TableCorrupt):
            tb.parse_whole(ref, bytes(data))
        return
    blob = bytes(data)
    with pytest.raises(tb.TableCorrupt):
        table = _Paged(ref, lambda _r, lo, hi: blob[lo:hi])
        table.get(target)
    assert issubclass(tb.TableCorrupt, RemoteError)


def _container(folder: Path, n: int, seed: int = 0) -> dict[str, bytes]:
    rng = random.Random(seed)
    datas = [rng.randbytes(rng.randint(50, 3000)) for _ in range(n)]
    with Container(folder) as c:
        if not c.is_initialised:
            c.init_container()
        keys = c.add_objects_to_pack(datas, compress=rng.random() < 0.5)
    return dict(zip(keys, datas, strict=True))


def _generation(store: object, prefix: str) -> Generation:
    head = json.loads(bytes(obstore.get(store, f"{prefix}/HEAD").bytes()))
    key = f"{prefix}/{generation_key(int(head['generation']), 'json')}"
    return Generation.from_json(json.loads(bytes(obstore.get(store, key).bytes())))


def _check_reads(target: str, objects: dict[str, bytes], gone: frozenset[str] = frozenset()
                 ) -> None:
    with RemoteContainer(target) as rc:
        assert rc.get_objects_content(list(objects)) == objects
        assert rc.has_objects(sorted(gone)) == [False] * len(gone)
        assert sorted(rc.list_all_objects()) == sorted(objects)
        count = rc.count_objects()
        assert count.packed + count.loose == len(objects)


def test_pushes_send_runs_tombstones_and_a_new_base_when_rows_move(
    tmp_path: Path, bucket: str, aws_env: None, s3_server: S3Server
) -> None:
    folder = tmp_path / "c"
    objects = _container(folder, 300)
    target = f"s3://{bucket}/p"
    store = s3_server.store(bucket)
    first = push(folder, target)
    g1 = _generation(store, "p")
    assert len(g1.tables) == 1 and g1.tables[0].records == 300 and g1.objects == 300
    _check_reads(target, objects)

    new = _container(folder, 100, seed=1)
    with Container(folder) as c:
        loose = {c.add_object(b"loose %d" % i): b"loose %d" % i for i in range(3)}
    objects |= new | loose
    second = push(folder, target)
    g2 = _generation(store, "p")
    assert g2.tables[0] == g1.tables[0] and len(g2.tables) == 2
    assert g2.tables[1].records == 103 and g2.objects == 403
    assert second.uploaded_bytes < first.uploaded_bytes
    _check_reads(target, objects)

    unchanged = push(folder, target)
    assert unchanged.unchanged and unchanged.generation == g2.number
    assert _generation(store, "p").number == g2.number

    doomed = next(iter(loose))
    with Container(folder) as c:  # one loose object goes, the others get packed
        c.delete_objects([doomed])
        c.pack_all_loose()
        c.clean_storage()
    del objects[doomed]
    push(folder, target)
    g3 = _generation(store, "p")
    assert g3.tables[:2] == g2.tables and len(g3.tables) == 3
    runs = index_publish.fetch_records(store, parse_url(target), g3.tables[2])
    assert (doomed, None) in runs  # a tombstone hides it in the tables below
    _check_reads(target, objects, gone=frozenset({doomed}))

    with Container(folder) as c:  # rows move: the next push writes a new base
        packed = next(h for h in new)
        c.delete_objects([packed])
        c.repack()
    del objects[packed]
    push(folder, target)
    g4 = _generation(store, "p")
    assert len(g4.tables) == 1 and g4.tables[0].records == len(objects)
    _check_reads(target, objects, gone=frozenset({doomed, packed}))


def test_runs_merge_and_then_fold_into_a_new_base(
    tmp_path: Path, bucket: str, aws_env: None, s3_server: S3Server,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(index_publish, "MAX_RUNS", 2)
    monkeypatch.setattr(index_publish, "RUN_RECORDS", 45)
    folder = tmp_path / "c"
    objects = _container(folder, 50)
    target = f"s3://{bucket}/m"
    store = s3_server.store(bucket)
    push(folder, target)
    shapes = []
    for i in range(5):
        objects |= _container(folder, 10, seed=10 + i)
        push(folder, target)
        gen = _generation(store, "m")
        shapes.append([t.records for t in gen.tables])
        _check_reads(target, objects)
    # base + run, base + 2 runs, base + merged run of 30, base + 2 runs (30, 10), new base
    assert shapes == [[50, 10], [50, 10, 10], [50, 30], [50, 30, 10], [100]], shapes


def test_a_corrupt_page_in_the_bucket_is_a_remote_error(
    tmp_path: Path, bucket: str, aws_env: None, s3_server: S3Server,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("dosfs.remote.tableindex.WHOLE", 0)  # page even a small base
    folder = tmp_path / "c"
    objects = _container(folder, 2000)
    target = f"s3://{bucket}/bad"
    push(folder, target)
    store = s3_server.store(bucket)
    ref = _generation(store, "bad").tables[0]
    data = bytearray(bytes(obstore.get(store, f"bad/{ref.key}").bytes()))
    victim = sorted(objects)[700]
    data[ref.records_offset + 700 * tb.RECORD + 45] ^= 1
    obstore.put(store, f"bad/{ref.key}", bytes(data))
    with RemoteContainer(target) as rc:
        with pytest.raises(RemoteError, match="corrupt"):
            rc.get_object_content(victim)
        other = sorted(objects)[0]
        assert rc.get_object_content(other) == objects[other]  # other pages still serve


def test_a_format_1_generation_reads_and_the_next_push_upgrades_it(
    tmp_path: Path, bucket: str, aws_env: None, s3_server: S3Server
) -> None:
    folder = tmp_path / "c"
    objects = _container(folder, 200)
    target = f"s3://{bucket}/old"
    push(folder, target)
    store = s3_server.store(bucket)
    downgrade(store, "old", folder, 1)
    assert not _generation(store, "old").tables
    _check_reads(target, objects)
    objects |= _container(folder, 20, seed=3)
    push(folder, target)
    gen = _generation(store, "old")
    assert gen.number == 2 and len(gen.tables) == 1 and gen.objects == 220
    _check_reads(target, objects)


def test_prune_keeps_exactly_the_tables_kept_generations_name(
    tmp_path: Path, bucket: str, aws_env: None, s3_server: S3Server
) -> None:
    folder = tmp_path / "c"
    objects = _container(folder, 100)
    target = f"s3://{bucket}/pr"
    store = s3_server.store(bucket)
    push(folder, target, grace=0)
    for i in range(3):  # runs on the first base
        objects |= _container(folder, 5, seed=30 + i)
        push(folder, target, grace=0)
    with Container(folder) as c:  # a new base, then a run on it
        victim = sorted(objects)[0]
        c.delete_objects([victim])
        c.repack()
    del objects[victim]
    push(folder, target, grace=0)
    objects |= _container(folder, 5, seed=40)
    push(folder, target, grace=0)
    listed = [m["path"] for batch in obstore.list(store, prefix="pr/") for m in batch]
    tables = {p.removeprefix("pr/") for p in listed if p.startswith("pr/index/")}
    gens = [p for p in listed if p.startswith("pr/generations/") and p.endswith(".json")]
    assert len(gens) == 2  # the current one and the one before
    named = set()
    for key in gens:
        gen = Generation.from_json(json.loads(bytes(obstore.get(store, key).bytes())))
        named |= {t.key for t in gen.tables}
    assert tables == named and len(named) == 2  # the new base and its run
    _check_reads(target, objects, gone=frozenset({victim}))


def test_through_the_mount_a_corrupt_index_page_is_eio_and_the_daemon_serves_on(
    tmp_path: Path, bucket: str, aws_env: None, s3_server: S3Server,
    mount: Callable[..., Mounted],
) -> None:
    folder = tmp_path / "c"
    rng = random.Random(9)
    with Container(folder) as c:  # 20,000 rows: a base of 1.3 MB, read by pages
        c.init_container()
        datas = [rng.randbytes(100) for _ in range(20_000)]
        objects = dict(zip(c.add_objects_to_pack(datas), datas, strict=True))
    target = f"s3://{bucket}/badmount"
    push(folder, target)
    store = s3_server.store(bucket)
    ref = _generation(store, "badmount").tables[0]
    assert ref.size > WHOLE
    keys = sorted(objects)
    data = bytearray(bytes(obstore.get(store, f"badmount/{ref.key}").bytes()))
    data[ref.records_offset + 7000 * tb.RECORD + 45] ^= 1
    obstore.put(store, f"badmount/{ref.key}", bytes(data))
    m = mount(target, f"cache_dir={tmp_path / 'cache'}", "refresh=0")
    m.expect_errors = True
    with pytest.raises(OSError) as info:
        (m.by_hash / keys[7000]).read_bytes()
    assert info.value.errno == errno.EIO
    assert (m.by_hash / keys[0]).read_bytes() == objects[keys[0]]  # other pages serve
    assert "corrupt" in m.log_text() and m.is_mounted()


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_random_histories_publish_exactly_the_local_container(
    tmp_path: Path, bucket: str, aws_env: None, s3_server: S3Server,
    monkeypatch: pytest.MonkeyPatch, seed: int,
) -> None:
    """Whatever a publisher does between pushes (add packed or loose, delete either, pack,
    clean, repack), every generation holds exactly the local container's objects and bytes,
    whether push sent a run (small limits here: merges and new bases happen too) or a base."""
    monkeypatch.setattr(index_publish, "MAX_RUNS", 3)
    monkeypatch.setattr(index_publish, "RUN_RECORDS", 40)
    rng = random.Random(seed)
    folder = tmp_path / "c"
    target = f"s3://{bucket}/h{seed}"
    with Container(folder) as c:
        c.init_container()
    objects: dict[str, bytes] = {}
    shapes = set()
    for _step in range(20):
        with Container(folder) as c:
            for _op in range(rng.randint(1, 3)):
                op = rng.choice(["packed", "packed", "loose", "loose", "delete", "pack",
                                 "clean", "repack"])
                if op == "packed":
                    datas = [rng.randbytes(rng.randint(1, 4000)) for _ in range(rng.randint(1, 12))]
                    objects.update(zip(c.add_objects_to_pack(datas, compress=rng.random() < 0.3),
                                       datas, strict=True))
                elif op == "loose":
                    for _ in range(rng.randint(1, 5)):
                        data = rng.randbytes(rng.randint(0, 3000))
                        objects[c.add_object(data)] = data
                elif op == "delete" and objects:
                    victims = rng.sample(sorted(objects), min(len(objects), rng.randint(1, 3)))
                    c.delete_objects(victims)
                    for h in victims:
                        del objects[h]
                elif op == "pack":
                    c.pack_all_loose()
                elif op == "clean":
                    c.clean_storage()
                elif op == "repack":
                    c.repack()
        report = push(folder, target)
        gen = _generation(s3_server.store(bucket), f"h{seed}")
        shapes.add(len(gen.tables))
        assert report.unchanged or gen.number == report.generation
        assert gen.objects == len(objects) and gen.size == sum(len(d) for d in objects.values())
        with RemoteContainer(target) as rc:
            assert sorted(rc.list_all_objects()) == sorted(objects)
            assert rc.get_objects_content(list(objects)) == objects
        with Container(folder) as c:  # and the local side agrees
            count = c.count_objects()
            assert set(c.list_all_objects()) == set(objects), count
    assert len(shapes) > 1  # bases and runs both happened
