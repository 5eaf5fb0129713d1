"""Many processes at once: loose writers + one packer + readers, as the contract promises."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from dosfs import Container

WORKERS = str(Path(__file__).with_name("workers.py"))


def _spawn(*args: object) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, WORKERS, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_writers_packer_readers(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    c = Container(folder)
    c.init_container(pack_size_target=256 * 1024)
    for i in range(30):  # something to read from the start
        c.add_object(b"seed %d" % i)
    stop = tmp_path / "stop"
    logs = [tmp_path / f"w{i}.log" for i in range(3)]
    writers = [_spawn("writer", folder, i + 1, 60, log) for i, log in enumerate(logs)]
    packer = _spawn("packer", folder, stop)
    readers = [_spawn("reader", folder, stop) for _ in range(2)]
    try:
        for w in writers:
            _out, err = w.communicate(timeout=120)
            assert w.returncode == 0, err
    finally:
        stop.write_text("stop")
    for p in [packer, *readers]:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert int(out.strip()) > 0
    written = {h for log in logs for h in log.read_text().split()}
    assert len(written) == 180
    c = Container(folder)
    got = c.get_objects_content(sorted(written))
    assert set(got) == written
    for h, data in got.items():
        assert hashlib.sha256(data).hexdigest() == h
    c.pack_all_loose(clean_loose_per_pack=True)
    assert c.count_objects().loose == 0
    report = c.validate_report()
    assert report.is_valid() and not report.has_warnings(), report.summary()


def test_threads_share_one_container(container: Container) -> None:
    keys = container.add_objects_to_pack([b"t%d" % i * 100 for i in range(200)])
    doomed = container.add_objects_to_pack([b"doomed%d" % i * 100 for i in range(50)])
    loose = [container.add_object(b"l%d" % i) for i in range(50)]
    errors: list[BaseException] = []

    def read() -> None:
        try:
            for _ in range(5):
                for k in keys + loose:
                    assert hashlib.sha256(container.get_object_content(k)).hexdigest() == k
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def pack() -> None:
        try:
            container.pack_all_loose(clean_loose_per_pack=True)
            container.delete_objects(doomed)  # holes in the packs being read
            container.repack()
            container.add_objects_to_pack([b"new%d" % i for i in range(10)])
            container.repack(compress_mode="yes")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(4)] + [threading.Thread(target=pack)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert container.validate_report().is_valid()
