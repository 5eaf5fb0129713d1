"""Property tests: any sequence of seeks and reads equals slicing the original bytes."""

from __future__ import annotations

import io
import os
import random
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dosfs import Container

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

_CACHE: dict[str, tuple[Container, dict[str, tuple[str, bytes]]]] = {}


def _setup(tmp_root: Path) -> tuple[Container, dict[str, tuple[str, bytes]]]:
    key = str(tmp_root)
    if key not in _CACHE:
        rnd = random.Random(7)
        c = Container(tmp_root / "c")
        c.init_container()
        small = rnd.randbytes(5000)
        text = b"".join(b"%d,%d\n" % (i, i * i) for i in range(400_000))  # ~5 MiB, compressible
        noise = rnd.randbytes(3 * 1024 * 1024 + 11)
        objs = {
            "loose": (c.add_object(small), small),
            "packed": (c.add_objects_to_pack([noise])[0], noise),
            "compressed-small": (
                c.add_objects_to_pack([small + b"!"], compress=True)[0],
                small + b"!",
            ),
            "compressed-big": (c.add_objects_to_pack([text], compress=True)[0], text),
            "compressed-noise": (
                c.add_objects_to_pack([noise + b"z"], compress=True)[0],
                noise + b"z",
            ),
        }
        _CACHE[key] = (c, objs)
    return _CACHE[key]


ops = st.lists(
    st.tuples(
        st.sampled_from(["set", "cur", "end", "read", "readall"]),
        st.integers(min_value=-(1 << 23), max_value=1 << 23),
        st.integers(min_value=0, max_value=1 << 21),
    ),
    min_size=1,
    max_size=12,
)


@SETTINGS
@given(
    kind=st.sampled_from(
        ["loose", "packed", "compressed-small", "compressed-big", "compressed-noise"]
    ),
    ops=ops,
)
def test_stream_ops_equal_slices(tmp_path_factory, kind: str, ops: list) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.getbasetemp() / "props"
    root.mkdir(exist_ok=True)
    c, objs = _setup(root)
    h, data = objs[kind]
    pos = 0
    with c.get_object_stream(h) as s:
        for op, off, size in ops:
            if op in ("set", "cur", "end"):
                whence = {"set": io.SEEK_SET, "cur": io.SEEK_CUR, "end": io.SEEK_END}[op]
                base = {"set": 0, "cur": pos, "end": len(data)}[op]
                target = base + off
                if target < 0:
                    continue
                assert s.seek(off, whence) == target
                pos = target
            elif op == "read":
                assert s.read(size) == data[pos : pos + size]
                if pos < len(data):
                    pos = min(pos + size, len(data))
            else:
                if len(data) - pos > 4 * 1024 * 1024:
                    continue
                assert s.read() == data[pos:]
                pos = max(pos, len(data))
            assert s.tell() == pos


@SETTINGS
@given(
    kind=st.sampled_from(["packed", "compressed-big", "compressed-noise"]),
    reads=st.lists(
        st.tuples(st.integers(min_value=0, max_value=6 * 1024 * 1024), st.integers(0, 300_000)),
        min_size=1,
        max_size=8,
    ),
)
def test_reader_pread_equals_slices(tmp_path_factory, kind: str, reads: list) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.getbasetemp() / "props"
    root.mkdir(exist_ok=True)
    c, objs = _setup(root)
    h, data = objs[kind]
    with c.open_object(h) as r:
        for off, size in reads:
            assert r.pread(off, size) == data[off : off + size]


def test_sanity_of_fixture(tmp_path: Path) -> None:
    c, objs = _setup(tmp_path)
    for h, data in objs.values():
        assert c.get_object_content(h) == data
    assert os.listdir(tmp_path / "c" / "sandbox") == []
