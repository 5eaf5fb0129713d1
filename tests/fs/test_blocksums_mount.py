"""Real mounts: reads of big objects are checked block by block against their recorded sums
(dosfs/container/blocksums.py), so a partial read is verified too; sums that are wrong never
make a good object unreadable; objects written by another tool get their sums from the first
whole verification and are checked block by block from then on."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from disk_objectstore import Container as DosContainer

from dosfs import Container
from dosfs.container.blocksums import BLOCK, FILE_NAME
from tests.fs.conftest import Mounted

pytestmark = pytest.mark.mount


def flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))


def dd(path: Path, skip_blocks: int, count: int = 1) -> subprocess.CompletedProcess[bytes]:
    """`count` reads of BLOCK bytes from block `skip_blocks` on (O_DIRECT is not used: the
    kernel's readahead may widen the read; the test data makes that harmless)."""
    return subprocess.run(
        ["dd", f"if={path}", "of=/dev/stdout", f"bs={BLOCK}", f"skip={skip_blocks}",
         f"count={count}", "status=none"], capture_output=True)


def test_a_partial_read_of_a_damaged_block_is_refused_and_the_rest_served(
    mount: Callable[..., Mounted], make_container: Callable[..., Path]
) -> None:
    """Before block sums, only the read that completed an object waited for its hash: 128 KiB
    from the middle of a damaged object were served as they were. A fresh mount also refuses
    a whole read of it from the damaged block on."""
    folder = make_container()
    c = Container(folder)
    data = os.urandom(64 * BLOCK)  # 8 MiB
    key = c.add_object(data)
    assert c.block_sums(key, len(data)) is not None
    c.close()
    flip(folder / "loose" / key[:2] / key[2:], 40 * BLOCK + 99)
    m = mount(folder)
    m.expect_errors = True
    good = dd(m.by_hash / key, 2, 2)  # intact blocks of it are served (checked)
    assert good.returncode == 0 and good.stdout == data[2 * BLOCK : 4 * BLOCK]
    bad = dd(m.by_hash / key, 40)
    assert bad.returncode != 0 and b"Input/output error" in bad.stderr
    assert bad.stdout == b""
    assert key in m.log_text()
    # known damaged from now on: every read of it the page cache does not hold fails
    assert dd(m.by_hash / key, 60).returncode != 0
    assert m.is_mounted()
    m.unmount()
    m = mount(folder, name="mnt2")
    m.expect_errors = True
    whole = subprocess.run(["cat", str(m.by_hash / key)], capture_output=True)
    assert whole.returncode != 0 and hashlib.sha256(whole.stdout).hexdigest() != key
    assert len(whole.stdout) <= 40 * BLOCK  # nothing from the damaged block on


def test_wrong_sums_of_a_good_object_are_replaced_and_the_bytes_served(
    mount: Callable[..., Mounted], make_container: Callable[..., Path]
) -> None:
    folder = make_container()
    c = Container(folder)
    data = os.urandom(24 * BLOCK + 5)
    key = c.add_object(data)
    right = c.block_sums(key, len(data))
    assert right is not None
    c.close()
    wrong = bytearray(right.sums)
    wrong[8 * 7] ^= 0xFF  # the sum of block 7
    with sqlite3.connect(folder / FILE_NAME) as conn:
        conn.execute("UPDATE blocksums SET sums = ? WHERE hashkey = ?", (bytes(wrong), key))
    conn.close()
    m = mount(folder)
    assert (m.by_hash / key).read_bytes() == data
    log = m.log_text()
    assert key in log and "hashing the whole object" in log
    c = Container(folder)
    again = c.block_sums(key, len(data))
    assert again is not None and again.sums == right.sums  # recorded again, right this time
    c.close()


def test_objects_of_another_tool_are_checked_by_blocks_after_one_whole_read(
    mount: Callable[..., Mounted], make_container: Callable[..., Path]
) -> None:
    folder = make_container()
    d = DosContainer(folder)
    data = os.urandom(48 * BLOCK)
    key = d.add_objects_to_pack([data], compress=True)[0]
    plain = d.add_objects_to_pack([os.urandom(48 * BLOCK)], compress=False)[0]
    d.close()
    c = Container(folder)
    assert c.block_sums(key, len(data)) is None
    c.close()
    m = mount(folder)
    assert hashlib.sha256((m.by_hash / key).read_bytes()).hexdigest() == key
    assert hashlib.sha256((m.by_hash / plain).read_bytes()).hexdigest() == plain
    c = Container(folder)
    assert c.block_sums(key, len(data)) is not None  # the whole verification took them
    meta = c.get_object_meta(plain)
    assert c.block_sums(plain, meta.size) is not None
    c.close()
    m.unmount()
    # damage the uncompressed one inside its pack: a fresh daemon refuses a read of that block
    flip(folder / "packs" / str(meta.pack_id), meta.pack_offset + 30 * BLOCK + 1)
    m = mount(folder, name="mnt2")
    m.expect_errors = True
    head = dd(m.by_hash / plain, 0)
    assert head.returncode == 0 and len(head.stdout) == BLOCK
    assert dd(m.by_hash / plain, 30).returncode != 0
    assert m.is_mounted()
