"""The S3 test server (scripts/s3-server) against real requests: what the publishing feature will
rely on, and the Ceph 16 (Pacific) gateway's quirks that it must live with. No mocks."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import obstore
import pytest
from obstore.exceptions import AlreadyExistsError, PreconditionError

from tests.remote.conftest import SERVER, S3Error, S3Server

MiB = 1 << 20


def test_bucket_is_created_and_listed(s3_server: S3Server, bucket: str) -> None:
    s3_server.request("HEAD", f"/{bucket}")
    names = [e.text for e in s3_server.request("GET", "/").xml().iter() if e.tag.endswith("Name")]
    assert bucket in names


def test_put_get_head(s3_server: S3Server, bucket: str) -> None:
    store = s3_server.store(bucket)
    data = os.urandom(100_000)
    obstore.put(store, "dir/blob", data)
    assert bytes(obstore.get(store, "dir/blob").bytes()) == data
    meta = obstore.head(store, "dir/blob")
    assert meta["size"] == len(data)
    assert meta["e_tag"] == f'"{hashlib.md5(data).hexdigest()}"'  # single PUT: ETag = MD5


def test_ranged_get(s3_server: S3Server, bucket: str) -> None:
    store = s3_server.store(bucket)
    data = os.urandom(3 * MiB)
    obstore.put(store, "r", data, use_multipart=False)
    assert (
        bytes(obstore.get_range(store, "r", start=12345, length=128 * 1024))
        == data[12345 : 12345 + 128 * 1024]
    )
    parts = obstore.get_ranges(
        store, "r", starts=[0, MiB, 3 * MiB - 10], ends=[10, MiB + 7, 3 * MiB]
    )
    assert [bytes(p) for p in parts] == [data[:10], data[MiB : MiB + 7], data[-10:]]
    # the raw header: 206 with Content-Range
    r = s3_server.request("GET", f"/{bucket}/r", headers={"range": "bytes=5-9"}, expect=(206,))
    assert r.body == data[5:10] and r.headers["content-range"] == f"bytes 5-9/{len(data)}"


def test_multipart_upload(s3_server: S3Server, bucket: str) -> None:
    store = s3_server.store(bucket)
    data = os.urandom(12 * MiB + 1234)
    obstore.put(store, "big", data, chunk_size=5 * MiB, max_concurrency=3)
    meta = obstore.head(store, "big")
    assert meta["size"] == len(data)
    assert meta["e_tag"].endswith('-3"')  # 3 parts: a multipart ETag
    assert bytes(obstore.get(store, "big").bytes()) == data


def test_list_with_prefix(s3_server: S3Server, bucket: str) -> None:
    store = s3_server.store(bucket)
    for key in ("packs/1", "packs/2", "packs/sub/3", "packsx", "loose/1"):
        obstore.put(store, key, key.encode())
    found = sorted(m["path"] for batch in obstore.list(store, prefix="packs/") for m in batch)
    assert found == ["packs/1", "packs/2", "packs/sub/3"]
    top = obstore.list_with_delimiter(store, prefix="packs/")
    assert sorted(m["path"] for m in top["objects"]) == ["packs/1", "packs/2"]
    assert top["common_prefixes"] == ["packs/sub"]


def test_if_none_match_put_refuses_to_overwrite(s3_server: S3Server, bucket: str) -> None:
    """Ceph 16.2 honours `If-None-Match: *` on PUT: 412 when the key exists, object untouched."""
    store = s3_server.store(bucket)
    obstore.put(store, "c", b"first", mode="create")
    with pytest.raises(AlreadyExistsError):
        obstore.put(store, "c", b"second", mode="create")
    r = s3_server.request(
        "PUT", f"/{bucket}/c", body=b"third", headers={"if-none-match": "*"}, expect=(412,)
    )
    assert b"PreconditionFailed" in r.body
    assert bytes(obstore.get(store, "c").bytes()) == b"first"
    # obstore never turns a conditional put into a (non-atomic) multipart upload
    with pytest.raises(AlreadyExistsError):
        obstore.put(store, "c", os.urandom(6 * MiB), mode="create", chunk_size=5 * MiB)


def test_if_none_match_put_is_atomic(s3_server: S3Server, bucket: str) -> None:
    """Racing creators: exactly one wins, and the object holds the winner's bytes."""
    store = s3_server.store(bucket)

    def create(key: str, i: int, barrier: threading.Barrier, winners: list[int]) -> None:
        barrier.wait()
        try:
            obstore.put(store, key, f"writer {i}".encode(), mode="create")
            winners.append(i)
        except AlreadyExistsError:
            pass

    for round_ in range(3):
        key = f"race/{round_}"
        winners: list[int] = []
        barrier = threading.Barrier(8)
        threads = [
            threading.Thread(target=create, args=(key, i, barrier, winners)) for i in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(winners) == 1
        assert bytes(obstore.get(store, key).bytes()) == f"writer {winners[0]}".encode()


def test_complete_multipart_ignores_if_none_match(s3_server: S3Server, bucket: str) -> None:
    """Ceph 16 quirk: CompleteMultipartUpload ignores `If-None-Match: *` and overwrites. A
    create-only publish must use a single PUT (or another guard) for now."""
    s3_server.request("PUT", f"/{bucket}/k", body=b"original")
    up = s3_server.request("POST", f"/{bucket}/k", query={"uploads": ""}).xml()
    upload_id = up.findtext("{http://s3.amazonaws.com/doc/2006-03-01/}UploadId") or ""
    part = s3_server.request(
        "PUT", f"/{bucket}/k", query={"partNumber": "1", "uploadId": upload_id}, body=b"new"
    )
    done = (
        "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber>"
        f"<ETag>{part.headers['etag']}</ETag></Part></CompleteMultipartUpload>"
    ).encode()
    s3_server.request(
        "POST",
        f"/{bucket}/k",
        query={"uploadId": upload_id},
        body=done,
        headers={"if-none-match": "*"},
    )
    assert s3_server.request("GET", f"/{bucket}/k").body == b"new"


def test_if_match_wants_an_unquoted_etag(s3_server: S3Server, bucket: str) -> None:
    """Ceph 16 quirk: PUT with `If-Match` compares the header to the ETag without its quotes, so
    the standard quoted form (what HEAD returns, what obstore's `mode={"e_tag": ...}` sends)
    always fails with 412. Conditional *update* is not usable on this gateway."""
    store = s3_server.store(bucket)
    obstore.put(store, "u", b"v1")
    etag = obstore.head(store, "u")["e_tag"]
    assert etag.startswith('"')
    with pytest.raises(PreconditionError):
        obstore.put(store, "u", b"v2", mode={"e_tag": etag})
    s3_server.request("PUT", f"/{bucket}/u", body=b"v2", headers={"if-match": etag.strip('"')})
    assert bytes(obstore.get(store, "u").bytes()) == b"v2"


def test_delete(s3_server: S3Server, bucket: str) -> None:
    store = s3_server.store(bucket)
    obstore.put(store, "d1", b"x")
    obstore.put(store, "d2", b"y")
    obstore.delete(store, "d1")
    with pytest.raises(FileNotFoundError):
        obstore.get(store, "d1")
    obstore.delete(store, ["d2", "never-existed"])  # bulk, idempotent
    assert [m for batch in obstore.list(store) for m in batch] == []


def test_bucket_cleanup_handles_leftovers(s3_server: S3Server) -> None:
    """What the `bucket` fixture's teardown does, on a bucket with an object and an unfinished
    multipart upload (these make DeleteBucket fail with BucketNotEmpty)."""
    name = f"dosfs-test-{uuid.uuid4().hex[:16]}"
    s3_server.create_bucket(name)
    s3_server.request("PUT", f"/{name}/a/b", body=b"x")
    s3_server.request("POST", f"/{name}/pending", query={"uploads": ""})
    with pytest.raises(S3Error) as exc:
        s3_server.request("DELETE", f"/{name}")
    assert exc.value.code == "BucketNotEmpty"
    s3_server.delete_bucket(name)
    s3_server.request("HEAD", f"/{name}", expect=(404,))
    s3_server.delete_bucket(name)  # already gone: fine


def test_env_dict_configures_obstore(
    s3_server: S3Server, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """obstore picks up AWS_ENDPOINT_URL, the keys and the region from the environment (and needs
    AWS_ALLOW_HTTP for an http:// endpoint)."""
    from obstore.store import S3Store

    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    store = S3Store(bucket)
    obstore.put(store, "from-env", b"ok")
    assert bytes(obstore.get(s3_server.store(bucket), "from-env").bytes()) == b"ok"


def test_status_command(s3_server: S3Server) -> None:
    r = subprocess.run(
        [sys.executable, str(SERVER), "status", str(s3_server.dir)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "running" in r.stdout and s3_server.endpoint in r.stdout
    assert (
        (s3_server.dir / "env").read_text().startswith(f"AWS_ENDPOINT_URL={s3_server.endpoint}\n")
    )


def test_up_refuses_a_busy_port(ceph: None, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run(
            [sys.executable, str(SERVER), "up", str(tmp_path / "c"), "--port", str(port)],
            capture_output=True,
            text=True,
        )
    assert r.returncode == 1
    assert f"port {port} on 127.0.0.1 is busy" in r.stderr


def test_up_names_the_packages_when_ceph_is_missing(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, str(SERVER), "up", str(tmp_path / "c")],
        capture_output=True,
        text=True,
        env=dict(os.environ, PATH=str(tmp_path)),
    )
    assert r.returncode == 1
    assert "apt-get install ceph-mon ceph-osd radosgw ceph-common" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
