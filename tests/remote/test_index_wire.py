"""What a host and the publisher move on the wire at 2·10^5 objects (issue 21), counted by a
forwarder in front of the real gateway: a mount and its first read, a listing of its first
2000 names, a push of 100 new objects, and the mount's refresh plus a read of a new object each
move at most 2 MiB (the whole index
was 18.6 MiB per host and per push before the index was read on demand)."""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dosfs.container import Container
from dosfs.remote.push import push
from tests.fs.conftest import Mounted
from tests.remote.conftest import S3Server
from tests.remote.tcpproxy import FaultProxy

N = 200_000
BUDGET = 2 * 1024 * 1024


def _moved(proxy: FaultProxy, before: tuple[int, int, int]) -> int:
    down, up, _requests = proxy.counts()
    return down - before[0] + up - before[1]


def test_a_host_and_the_publisher_move_what_is_read_and_what_changed(
    tmp_path: Path, bucket: str, aws_env: None, s3_server: S3Server,
    mount: Callable[..., Mounted], monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(21)
    folder = tmp_path / "c"
    keys: list[str] = []
    with Container(folder) as c:
        c.init_container()
        for _batch in range(N // 20_000):
            keys += c.add_objects_to_pack(
                [rng.randbytes(rng.randint(100, 1000)) for _ in range(20_000)])
    target = f"s3://{bucket}/wire"
    push(folder, target)

    reader, publisher = FaultProxy(s3_server.endpoint), FaultProxy(s3_server.endpoint)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", reader.endpoint)
        m = mount(target, f"cache_dir={tmp_path / 'cache'}", "refresh=1")
        one = keys[12345]
        assert hashlib.sha256((m.by_hash / one).read_bytes()).hexdigest() == one
        first = _moved(reader, (0, 0, 0))
        assert first <= BUDGET, f"mount + first read moved {first} bytes"

        before = reader.counts()  # a listing pages through the index: the first 2000 names
        with os.scandir(m.by_hash) as entries:
            names = [e.name for _i, e in zip(range(2000), entries, strict=False)]
        assert names == sorted(keys)[:2000]
        listed = _moved(reader, before)
        assert listed <= BUDGET, f"listing 2000 names moved {listed} bytes"

        monkeypatch.setenv("AWS_ENDPOINT_URL", publisher.endpoint)
        with Container(folder) as c:
            new = c.add_objects_to_pack([rng.randbytes(500) for _ in range(100)])
        report = push(folder, target)
        assert report.generation == 2 and not report.unchanged
        pushed = _moved(publisher, (0, 0, 0))
        assert pushed <= BUDGET, f"a push of 100 objects moved {pushed} bytes"

        before = reader.counts()
        path = m.by_hash / new[42]
        deadline = time.monotonic() + 60
        while not path.exists():  # the mount checks HEAD every second
            assert time.monotonic() < deadline, "the mount never switched to generation 2"
            time.sleep(0.05)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == new[42]
        refreshed = _moved(reader, before)
        assert refreshed <= BUDGET, f"refresh + read of a new object moved {refreshed} bytes"
        print(f"\non the wire: mount + first read {first} B, 2000 names {listed} B, "
              f"push of 100 {pushed} B, refresh + read {refreshed} B")
    finally:
        reader.close()
        publisher.close()
