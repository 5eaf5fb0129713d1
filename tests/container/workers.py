"""Child processes for the multi-process and crash tests: `python workers.py ROLE FOLDER ...`.

Kept as a plain script (run by path) so children start clean, without pytest or fork state.
"""

from __future__ import annotations

import hashlib
import os
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from dosfs import Container  # noqa: E402


def blob(seed: int, i: int) -> bytes:
    rnd = random.Random(seed * 1_000_003 + i)
    size = rnd.choice([0, 5, 100, 1000, 20_000, 150_000])
    if rnd.random() < 0.5:
        return (b"%d-%d " % (seed, i)) * (size // 6 + 1)
    return rnd.randbytes(size) + b"%d-%d" % (seed, i)


def writer(folder: str, seed: int, count: int, log: str) -> None:
    """Loose writes (plain, streamed via staged objects), each read back at once."""
    c = Container(folder)
    with open(log, "a") as out:
        for i in range(count):
            data = blob(seed, i)
            if i % 3 == 0:
                staged = c.new_staged_object()
                half = len(data) // 2
                staged.pwrite(data[half:], half)  # out of order: hashed at commit
                staged.pwrite(data[:half], 0)
                h = staged.commit()
            else:
                h = c.add_object(data)
            assert h == hashlib.sha256(data).hexdigest()
            assert c.get_object_content(h) == data
            out.write(h + "\n")
            out.flush()


def packer(folder: str, stop: str) -> None:
    c = Container(folder)
    rounds = 0
    while True:
        done = os.path.exists(stop)
        c.pack_all_loose(compress="auto", clean_loose_per_pack=True)
        c.clean_storage()
        rounds += 1
        if done:
            break
    print(rounds)


def reader(folder: str, stop: str) -> None:
    """Read everything listed, over and over, verifying hashes; hold readers across packing."""
    c = Container(folder)
    held = []
    checked = 0
    while not os.path.exists(stop):
        for h in list(c.iter_hashkeys()):
            data = c.get_object_content(h)
            assert hashlib.sha256(data).hexdigest() == h, h
            checked += 1
            if len(held) < 20 and checked % 7 == 0:
                r = c.open_object(h)
                held.append((r, data))
        got = c.get_objects_content(list(c.iter_hashkeys()))
        for h, data in got.items():
            assert data is not None and hashlib.sha256(data).hexdigest() == h
        for r, data in held:
            assert r.pread(0, len(data) + 1) == data
    print(checked)


# -- crash scenarios: run until killed ------------------------------------------------------------
def crash_loose(folder: str, seed: int, log: str) -> None:
    writer(folder, seed, 10**6, log)


def crash_pack_loose(folder: str) -> None:
    c = Container(folder)
    print("ready", flush=True)
    c.pack_all_loose(compress=True, clean_loose_per_pack=True)
    c.pack_all_loose(compress=False)
    print("finished", flush=True)


def crash_pack_direct(folder: str, seed: int, log: str) -> None:
    c = Container(folder)
    with open(log, "a") as out:
        for i in range(10**6):
            batch = [blob(seed, i * 50 + j) for j in range(50)]
            keys = c.add_objects_to_pack(batch, compress=bool(i % 2))
            out.write("\n".join(keys) + "\n")
            out.flush()


def crash_repack(folder: str) -> None:
    c = Container(folder)
    print("ready", flush=True)
    for mode in ("yes", "no", "yes", "no"):
        c.repack(compress_mode=mode)
    print("finished", flush=True)


if __name__ == "__main__":
    role, *args = sys.argv[1:]
    fn = globals()[role]
    fn(*[int(a) if a.isdigit() else a for a in args])
