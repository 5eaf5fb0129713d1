"""Crash safety: a child is SIGKILLed at random points while writing loose objects, packing,
writing packs directly or repacking. Afterwards the container validates, every object that was
reported stored reads back intact, nothing partial is visible, and work can simply resume."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dosfs import Container

WORKERS = str(Path(__file__).with_name("workers.py"))
sys.path.insert(0, str(Path(__file__).parent))
from workers import blob  # noqa: E402

pytestmark = pytest.mark.slow
ROUNDS = 3


def _spawn(*args: object) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, WORKERS, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(cond, proc: subprocess.Popen, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"child exited early: {proc.stderr.read() if proc.stderr else ''}")
        assert time.monotonic() < deadline, "child did not get going"
        time.sleep(0.005)


def _kill(proc: subprocess.Popen) -> bool:
    """SIGKILL; True if the child was still working (had not printed 'finished')."""
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    out = proc.stdout.read() if proc.stdout else ""
    if proc.stdout:
        proc.stdout.close()
    if proc.stderr:
        proc.stderr.close()
    return "finished" not in out


def _check_clean(folder: Path, expected: dict[str, bytes]) -> None:
    c = Container(folder)
    report = c.validate_report()
    assert report.is_valid(), report.summary()
    for h, data in expected.items():
        assert c.get_object_content(h) == data
    for h in c.iter_hashkeys():  # nothing partial: every visible object is intact
        assert hashlib.sha256(c.get_object_content(h)).hexdigest() == h
    # work resumes: stale pack locks of the dead child are recognised, leftovers cleaned
    c.pack_all_loose(clean_loose_per_pack=True)
    c.repack()
    c.clean_storage(sandbox_max_age=0)
    report = c.validate_report()
    assert report.is_valid() and not report.has_warnings(), report.summary()
    for h, data in expected.items():
        assert c.get_object_content(h) == data
    c.close()


def _logged(log: Path, seed: int, first: int = 0) -> dict[str, bytes]:
    keys = log.read_text().split() if log.exists() else []
    return {h: blob(seed, first + i) for i, h in enumerate(keys)}


def test_crash_while_writing_loose(tmp_path: Path) -> None:
    rnd = random.Random(11)
    for r in range(ROUNDS):
        folder = tmp_path / f"c{r}"
        Container(folder).init_container()
        log = tmp_path / f"log{r}"
        proc = _spawn("crash_loose", folder, 5, log)
        _wait_for(lambda log=log: log.exists() and log.stat().st_size > 0, proc)
        time.sleep(rnd.uniform(0, 0.3))
        _kill(proc)
        expected = _logged(log, 5)
        assert expected
        _check_clean(folder, expected)


def _fill_loose(folder: Path, n: int) -> dict[str, bytes]:
    c = Container(folder)
    c.init_container(pack_size_target=200 * 1024)
    expected = {}
    for i in range(n):
        data = blob(9, i)
        expected[c.add_object(data)] = data
    c.close()
    return expected


def test_crash_while_packing_loose(tmp_path: Path) -> None:
    rnd = random.Random(12)
    interrupted: list[bool] = []
    for r in range(ROUNDS):
        folder = tmp_path / f"c{r}"
        expected = _fill_loose(folder, 400)
        proc = _spawn("crash_pack_loose", folder)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(rnd.uniform(0, 0.15))
        interrupted.append(_kill(proc))
        _check_clean(folder, expected)
    assert any(interrupted)


def test_crash_while_writing_packs(tmp_path: Path) -> None:
    rnd = random.Random(13)
    for r in range(ROUNDS):
        folder = tmp_path / f"c{r}"
        Container(folder).init_container(pack_size_target=500 * 1024)
        log = tmp_path / f"log{r}"
        proc = _spawn("crash_pack_direct", folder, 7, log)
        _wait_for(lambda log=log: log.exists() and log.stat().st_size > 0, proc)
        time.sleep(rnd.uniform(0, 0.3))
        _kill(proc)
        _check_clean(folder, _logged(log, 7))


def test_crash_while_repacking(tmp_path: Path) -> None:
    rnd = random.Random(14)
    interrupted: list[bool] = []
    for r in range(ROUNDS):
        folder = tmp_path / f"c{r}"
        c = Container(folder)
        c.init_container(pack_size_target=300 * 1024)
        blobs = [blob(3, i) for i in range(400)]
        keys = c.add_objects_to_pack(blobs)
        c.delete_objects(keys[::4])
        expected = {k: b for i, (k, b) in enumerate(zip(keys, blobs, strict=True)) if i % 4}
        c.close()
        proc = _spawn("crash_repack", folder)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(rnd.uniform(0, 0.25))
        interrupted.append(_kill(proc))
        assert os.path.isdir(folder / "packs")
        _check_clean(folder, expected)
    assert any(interrupted)
