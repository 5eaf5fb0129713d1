"""A frozen server (its gateway SIGSTOPped: connections accepted, never answered) costs only
the reads that need it: a reader of an uncached object gets EIO (RemoteError through
RemoteContainer) within the timeout, and meanwhile metadata, listings and cached objects are
answered, on the s3 mount and through RemoteContainer in another thread.

Nothing here asserts speed: "answered meanwhile" is checked by order (the cached reads complete
while the frozen read is still pending); the only time bounds are hang detectors."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dosfs.container import Container
from dosfs.remote.container import RemoteContainer
from dosfs.remote.push import push
from dosfs.remote.url import RemoteError
from tests.fs.conftest import Mounted
from tests.remote.conftest import Freezer

MiB = 1024 * 1024
#: -o timeout / RemoteContainer(timeout=): long enough for the checks made meanwhile to run
TIMEOUT = 8.0


@pytest.fixture
def published(tmp_path: Path, bucket: str, aws_env: None) -> Iterator[tuple[str, dict[str, bytes]]]:
    """One pack: a 9 MiB object first (nobody reads it before the freeze), then small ones,
    compressed and not."""
    objects: dict[str, bytes] = {}
    with Container(tmp_path / "c") as c:
        c.init_container()
        big = os.urandom(9 * MiB)
        objects[c.add_objects_to_pack([big])[0]] = big
        small = [os.urandom(n) for n in (1000, 5000, 70_000, 300_000)]
        for h, data in zip(c.add_objects_to_pack(small), small, strict=True):
            objects[h] = data
        z = os.urandom(1000) * 50
        objects[c.add_objects_to_pack([z], compress=True)[0]] = z
    target = f"s3://{bucket}/frozen"
    push(tmp_path / "c", target)
    yield target, objects


class Pending:
    """A call in a thread of its own: did it finish, how, and after how long."""

    def __init__(self, fn: Callable[[], object]) -> None:
        self.error: BaseException | None = None
        self.result: object = None
        self.elapsed = -1.0
        self._fn = fn
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = time.monotonic()
        self._thread.start()

    def _run(self) -> None:
        try:
            self.result = self._fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self.error = exc
        self.elapsed = time.monotonic() - self._started

    @property
    def pending(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"still waiting after {timeout} s: a hang"


def _drop_page_cache(path: Path) -> None:
    """Forget the kernel's cached pages of one file: the next read asks the daemon."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def test_frozen_server_mount_answers_cached_and_metadata_and_eio_within_timeout(
    tmp_path: Path, published: tuple[str, dict[str, bytes]], mount: Callable[..., Mounted],
    freezer: Freezer,
) -> None:
    target, objects = published
    big = max(objects, key=lambda h: len(objects[h]))
    cached = [h for h in objects if h != big]
    m = mount(target, f"cache_dir={tmp_path / 'cache'}", f"timeout={TIMEOUT:g}", "refresh=0")
    m.expect_errors = True
    for h in cached:  # now in the block cache
        assert (m.by_hash / h).read_bytes() == objects[h]
    freezer.freeze()
    reader = Pending(lambda: subprocess.run(["cat", str(m.by_hash / big)], capture_output=True,
                                            timeout=60))
    # meanwhile: listings, stat of names the kernel has not seen, cached objects read by the
    # daemon again (the kernel's copy dropped), all while the frozen read is still pending
    rounds = 0
    while rounds < 3:
        assert reader.pending, "the frozen read ended before the checks ran"
        assert sorted(os.listdir(m.by_hash)) == sorted(objects)
        for h in objects:
            assert os.stat(m.by_hash / h).st_size == len(objects[h])
        for h in cached:
            _drop_page_cache(m.by_hash / h)
            got = subprocess.run(["cat", str(m.by_hash / h)], capture_output=True, check=True,
                                 timeout=TIMEOUT).stdout
            assert got == objects[h], h
        rounds += 1
    assert reader.pending, "the cached reads were answered only after the frozen read ended"
    reader.join(TIMEOUT + 30)
    done = reader.result
    assert isinstance(done, subprocess.CompletedProcess)
    assert done.returncode != 0 and b"Input/output error" in done.stderr, done
    assert reader.elapsed < TIMEOUT + 2, f"EIO after {reader.elapsed:.1f} s (timeout {TIMEOUT:g})"
    assert m.is_mounted()
    freezer.thaw()
    assert (m.by_hash / big).read_bytes() == objects[big]  # served again once it is back


def test_frozen_server_remote_container_answers_cached_and_raises_within_timeout(
    tmp_path: Path, published: tuple[str, dict[str, bytes]], freezer: Freezer,
) -> None:
    target, objects = published
    big = max(objects, key=lambda h: len(objects[h]))
    cached = [h for h in objects if h != big]
    with RemoteContainer(target, timeout=TIMEOUT, cache_dir=tmp_path / "cache") as rc:
        assert rc.get_objects_content(cached) == {h: objects[h] for h in cached}
        freezer.freeze()
        reader = Pending(lambda: rc.get_object_content(big))
        rounds = 0
        while rounds < 3:
            assert reader.pending, "the frozen read ended before the checks ran"
            assert rc.has_objects(list(objects)) == [True] * len(objects)
            assert sorted(rc.list_all_objects()) == sorted(objects)
            for h in cached:
                assert rc.get_object_content(h) == objects[h]
            rounds += 1
        assert reader.pending, "the cached reads were answered only after the frozen read ended"
        reader.join(TIMEOUT + 30)
        assert isinstance(reader.error, RemoteError), reader.error
        assert reader.elapsed < TIMEOUT + 2, f"RemoteError after {reader.elapsed:.1f} s"
        freezer.thaw()
        assert rc.get_object_content(big) == objects[big]


def test_frozen_server_during_verification_is_eio_not_a_corrupt_verdict(
    tmp_path: Path, published: tuple[str, dict[str, bytes]], mount: Callable[..., Mounted],
    freezer: Freezer,
) -> None:
    """The tail of a big object is cached (by another client sharing the cache folder), its
    head is not: a read of the tail is served, and completes the object, whose verification
    then cannot read the head. That is EIO, not "corrupt": once the server is back the object
    is served whole."""
    target, objects = published
    big = max(objects, key=lambda h: len(objects[h]))
    cache = tmp_path / "cache"
    tail = 4096
    with RemoteContainer(target, cache_dir=cache) as rc, rc.get_object_stream(
            big, verify=False) as stream:
        stream.seek(len(objects[big]) - tail)
        assert stream.read() == objects[big][-tail:]
    m = mount(target, f"cache_dir={cache}", f"timeout={TIMEOUT:g}", "refresh=0")
    m.expect_errors = True
    freezer.freeze()
    started = time.monotonic()
    with open(m.by_hash / big, "rb", buffering=0) as f:
        f.seek(len(objects[big]) - tail)
        with pytest.raises(OSError) as info:
            f.read(tail)
    elapsed = time.monotonic() - started
    assert info.value.errno == 5
    assert elapsed < TIMEOUT + 2, f"EIO after {elapsed:.1f} s"  # the kernel's retry: at once
    freezer.thaw()
    _drop_page_cache(m.by_hash / big)
    assert (m.by_hash / big).read_bytes() == objects[big]
    assert "corrupt" not in m.log_text()


def test_twenty_hung_readers_hold_up_no_cached_read(
    tmp_path: Path, bucket: str, aws_env: None, mount: Callable[..., Mounted], freezer: Freezer,
) -> None:
    """More readers of uncached objects than the mount has network workers (8) and than the
    kernel allows background requests (12): while all of them wait on the frozen server,
    `stat` and cached objects are still answered, and every waiting reader gets EIO within
    the timeout of its own request."""
    objects: dict[str, bytes] = {}
    with Container(tmp_path / "c") as c:
        c.init_container()
        cold = [os.urandom(MiB + i) for i in range(20)]
        warm = [os.urandom(20_000 + i) for i in range(4)]
        for h, data in zip(c.add_objects_to_pack(cold + warm), cold + warm, strict=True):
            objects[h] = data
    hung = [h for h in objects if len(objects[h]) >= MiB]
    cached = [h for h in objects if h not in hung]
    target = f"s3://{bucket}/hung"
    push(tmp_path / "c", target)
    m = mount(target, f"cache_dir={tmp_path / 'cache'}", f"timeout={TIMEOUT:g}", "refresh=0")
    m.expect_errors = True
    for h in cached:
        assert (m.by_hash / h).read_bytes() == objects[h]
    freezer.freeze()
    readers = [Pending(lambda h=h: subprocess.run(["cat", str(m.by_hash / h)],
                                                  capture_output=True, timeout=120))
               for h in hung]
    for h in cached:  # answered while all twenty wait
        assert all(r.pending for r in readers), "a frozen read ended before the checks ran"
        assert os.stat(m.by_hash / h).st_size == len(objects[h])
        _drop_page_cache(m.by_hash / h)
        got = subprocess.run(["cat", str(m.by_hash / h)], capture_output=True, check=True,
                             timeout=TIMEOUT).stdout
        assert got == objects[h]
    assert any(r.pending for r in readers), "the cached reads waited for the frozen ones"
    for r in readers:
        r.join(4 * TIMEOUT + 30)
        done = r.result
        assert isinstance(done, subprocess.CompletedProcess)
        assert done.returncode != 0 and b"Input/output error" in done.stderr, done
    slowest = max(r.elapsed for r in readers)  # one deadline per request, queued or not
    assert slowest < TIMEOUT + 4, f"the last EIO came after {slowest:.1f} s"
    assert m.is_mounted()
    freezer.thaw()
    assert (m.by_hash / hung[0]).read_bytes() == objects[hung[0]]
