"""Everything at once on one mounted container, as separate processes: writers through incoming/
(cp) and through the library, a packer and a cleaner looping, readers through the mount (and one
file held open across every pack round). Afterwards: no process saw an error or a wrong byte,
every written object reads back through the mount and the library, and the container validates
(for dosfs and for disk-objectstore)."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from dosfs import Container
from tests.fs.conftest import Mounted, wait_for

pytestmark = [pytest.mark.mount, pytest.mark.slow]

LIBRARY_WRITER = """
import random, sys
from dosfs import Container
folder, seed, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rng = random.Random(seed)
c = Container(folder)
with open(out, "w") as f:
    for _ in range(100):
        blob = rng.randbytes(rng.randrange(0, 200_000))
        f.write(c.add_object(blob) + "\\n")
        f.flush()
"""

MOUNT_WRITER = """
set -eu
mnt=$1; w=$2; scratch=$3; out=$4
for i in $(seq 1 60); do
    head -c $(( (RANDOM * 7 + i) % 300000 )) /dev/urandom > "$scratch/src"
    cp "$scratch/src" "$mnt/incoming/w$w-$i"
    echo "$(sha256sum < "$scratch/src" | cut -c1-64) w$w-$i" >> "$out"
done
"""

PACKER = """
import os, sys
from dosfs import Container
folder, stop = sys.argv[1], sys.argv[2]
c = Container(folder)
rounds = 0
while rounds < 3 or (not os.path.exists(stop) and rounds < 500):
    c.pack_all_loose(compress="auto" if rounds % 2 else False)
    c.clean_storage()
    rounds += 1
print(rounds)
"""

READER = """
import hashlib, os, random, sys
by_hash, stop, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
names = sys.argv[4:]
rng = random.Random(seed)
big = os.open(os.path.join(by_hash, names[0]), os.O_RDONLY)  # held open across pack rounds
whole = b""
while True:
    chunk = os.pread(big, 1 << 20, len(whole))
    if not chunk:
        break
    whole += chunk
assert hashlib.sha256(whole).hexdigest() == names[0]
reads = 0
while reads < 50 or (not os.path.exists(stop) and reads < 20000):
    name = rng.choice(names)
    with open(os.path.join(by_hash, name), "rb") as f:
        data = f.read()
    if hashlib.sha256(data).hexdigest() != name:
        sys.exit(f"wrong bytes in {name}")
    off = rng.randrange(len(whole))
    if os.pread(big, 65536, off) != whole[off : off + 65536]:
        sys.exit(f"wrong bytes at {off} of the held-open file")
    reads += 1
print(reads)
"""


def test_writers_packer_cleaner_and_readers_at_once(
    mount: Callable[..., Mounted], make_container: Callable[..., Path], tmp_path: Path
) -> None:
    folder = make_container()
    c = Container(folder)
    rng = random.Random(5)
    text = b"".join(b"%07d stress text\n" % i for i in range(300_000))  # ~5 MiB, compressible
    seed = [c.add_object(text)]
    seed += [c.add_object(rng.randbytes(rng.randrange(0, 150_000))) for _ in range(60)]
    seed += c.add_objects_to_pack([rng.randbytes(50_000) for _ in range(20)], compress=True)
    c.close()
    m = mount(folder)
    stop = tmp_path / "stop"
    py = [sys.executable, "-c"]

    def spawn(cmd: list[str], name: str) -> tuple[str, subprocess.Popen[str]]:
        return name, subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    writers = [
        spawn([*py, LIBRARY_WRITER, str(folder), str(i), str(tmp_path / f"lib{i}.txt")], f"lib{i}")
        for i in range(2)
    ]
    for i in range(2):
        scratch = tmp_path / f"scratch{i}"
        scratch.mkdir()
        script = textwrap.dedent(MOUNT_WRITER)
        args = [str(m.path), str(i), str(scratch), str(tmp_path / f"mnt{i}.txt")]
        writers.append(spawn(["bash", "-c", script, "writer", *args], f"cp{i}"))
    others = [spawn([*py, PACKER, str(folder), str(stop)], "packer")]
    others += [
        spawn([*py, READER, str(m.by_hash), str(stop), str(i), *seed], f"reader{i}")
        for i in range(2)
    ]
    procs = writers + others
    try:
        for name, proc in writers:
            out, err = proc.communicate(timeout=240)
            assert proc.returncode == 0, f"{name}: {err}"
        stop.touch()
        results = {}
        for name, proc in others:
            out, err = proc.communicate(timeout=240)
            assert proc.returncode == 0, f"{name}: {err}"
            results[name] = int(out.strip())
    finally:
        for _name, proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert results["packer"] >= 3
    assert all(results[f"reader{i}"] >= 50 for i in range(2))

    # every object written by the library reads back, through the mount and the library
    c = Container(folder)
    written = [h for i in range(2) for h in (tmp_path / f"lib{i}.txt").read_text().split()]
    assert len(written) == 200
    for h in written:
        assert hashlib.sha256(c.get_object_content(h)).hexdigest() == h
        assert hashlib.sha256((m.by_hash / h).read_bytes()).hexdigest() == h
    # every file copied in became a link to the object with its sha256
    copied = [
        line.split()
        for i in range(2)
        for line in (tmp_path / f"mnt{i}.txt").read_text().splitlines()
    ]
    assert len(copied) == 120
    for h, name in copied:
        wait_for(lambda n=name: os.path.islink(m.incoming / n), what=f"link {name}")
        assert os.readlink(m.incoming / name) == f"../by-hash/{h}"
        assert hashlib.sha256(c.get_object_content(h)).hexdigest() == h
    # one final pack round with nothing else running leaves a clean container
    c.pack_all_loose()
    c.clean_storage()
    report = c.validate_report()
    assert report.is_valid(), report
    counts = c.count_objects()
    assert counts.loose == 0
    assert counts.packed >= len(set(seed) | set(written) | {h for h, _ in copied})
    c.close()

    from disk_objectstore import Container as DosContainer

    with DosContainer(str(folder)) as other:
        problems = other.validate()
        assert problems.is_valid(), problems


def test_daemon_killed_mid_write_leaves_a_valid_container(
    mount: Callable[..., Mounted], make_container: Callable[..., Path], tmp_path: Path
) -> None:
    folder = make_container()
    c = Container(folder)
    kept = c.add_object(b"an object that was there before")
    c.close()
    m = mount(folder)
    m.expect_errors = True
    # a writer that keeps writing through the mount until the daemon dies under it
    writer = subprocess.Popen(
        ["dd", "if=/dev/urandom", f"of={m.incoming / 'big'}", "bs=1M", "count=4096"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    sandbox = folder / "sandbox"
    wait_for(
        lambda: any(f.stat().st_size > (8 << 20) for f in sandbox.iterdir()),
        what="staged bytes in sandbox/",
    )
    assert m.proc is not None
    m.proc.kill()  # SIGKILL: no cleanup of any kind
    m.proc.wait()
    writer.wait(timeout=60)
    assert writer.returncode != 0  # the writer saw the failure
    subprocess.run(["fusermount3", "-uz", str(m.path)], capture_output=True)

    c = Container(folder)
    report = c.validate_report()
    assert report.is_valid(), report
    assert c.count_objects().loose == 1  # nothing partial became an object
    assert c.get_object_content(kept) == b"an object that was there before"
    c.clean_storage(sandbox_max_age=0)
    assert not list(sandbox.iterdir())
    assert not c.validate_report().has_warnings()
    c.close()
