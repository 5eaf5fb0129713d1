"""A real S3 endpoint for the tests: `scripts/s3-server` (single-node Ceph RADOS Gateway).

Fixtures:

- ``s3_server`` (session): starts the server once in a pytest temp folder and ALWAYS stops it in
  teardown (also when tests fail, on Ctrl-C, and on SIGTERM to pytest). Attributes: ``endpoint``,
  ``access_key``, ``secret_key``, ``region``, ``env`` (the AWS_* variables as a dict), ``dir``;
  helpers ``store(bucket)`` (an obstore S3Store configured explicitly), ``request(...)`` (a raw
  SigV4-signed HTTP request, for what a client library does not offer), ``create_bucket(name)``,
  ``delete_bucket(name)``.
- ``aws_env`` (function): the server's AWS_* variables set in the environment.
- ``bucket`` (function): a fresh, created, uniquely named bucket; afterwards its objects, object
  versions, unfinished multipart uploads and the bucket itself are deleted.

When radosgw is not installed the tests are skipped with the install hint, but fail when the
environment variable CI is set. A server orphaned by a killed session (SIGKILL) is stopped by the
next session that uses the fixture.
"""

from __future__ import annotations

import base64
import datetime
import getpass
import hashlib
import hmac
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit
from xml.sax.saxutils import escape

import pytest

from tests.fs.conftest import _sweep_leftover_mounts, fuse, mount  # noqa: F401 - fixtures

# The S3 client must never ask a cloud's instance metadata service (169.254.169.254) for
# credentials in tests: dosfs honours the aws CLI's switch (dosfs.remote.url.metadata_allowed)
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "scripts" / "s3-server"
INSTALL_HINT = "apt-get install ceph-mon ceph-osd radosgw ceph-common (or run scripts/setup)"
BINARIES = ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "monmaptool", "ceph")
S3NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


class S3Error(Exception):
    def __init__(self, status: int, body: bytes, what: str) -> None:
        super().__init__(f"{what}: HTTP {status}: {body[:500]!r}")
        self.status = status
        self.body = body

    @property
    def code(self) -> str:
        try:
            return ET.fromstring(self.body).findtext("Code") or ""
        except ET.ParseError:
            return ""


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def xml(self) -> ET.Element:
        return ET.fromstring(self.body)


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    region: str
    dir: Path

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS variables for this server (AWS_ALLOW_HTTP: obstore reads it)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ALLOW_HTTP": "true",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def store(self, bucket: str, **kwargs: Any) -> Any:
        """An obstore S3Store for `bucket`, configured explicitly (never from ~/.aws or the
        instance-metadata endpoint)."""
        from obstore.store import S3Store

        return S3Store(
            bucket,
            endpoint=self.endpoint,
            access_key_id=self.access_key,
            secret_access_key=self.secret_key,
            region=self.region,
            virtual_hosted_style_request=False,
            client_options={"allow_http": True},
            metadata_endpoint="http://127.0.0.1:9",  # never the cloud's metadata service
            **kwargs,
        )

    # ------------------------------------------------------------ raw signed requests

    def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        expect: tuple[int, ...] = (200, 204),
    ) -> Response:
        """One SigV4-signed request (path-style: ``/bucket/key``); S3Error unless the status is
        in `expect`."""
        query = query or {}
        url = urlsplit(self.endpoint)
        now = datetime.datetime.now(datetime.UTC)
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        payload = hashlib.sha256(body).hexdigest()
        hdrs = {k.lower(): v for k, v in (headers or {}).items()}
        hdrs.update({"host": url.netloc, "x-amz-date": amz_date, "x-amz-content-sha256": payload})
        qs = "&".join(
            f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(query.items())
        )
        epath = quote(path, safe="/-_.~")
        signed = ";".join(sorted(hdrs))
        canonical = "\n".join(
            [
                method,
                epath,
                qs,
                "".join(f"{k}:{hdrs[k].strip()}\n" for k in sorted(hdrs)),
                signed,
                payload,
            ]
        )
        scope = f"{amz_date[:8]}/{self.region}/s3/aws4_request"
        to_sign = "\n".join(
            ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
        )
        key = ("AWS4" + self.secret_key).encode()
        for part in (amz_date[:8], self.region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        sig = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        hdrs["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, "
            f"SignedHeaders={signed}, Signature={sig}"
        )
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        try:
            conn.request(method, epath + (f"?{qs}" if qs else ""), body=body, headers=hdrs)
            r = conn.getresponse()
            resp = Response(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
        finally:
            conn.close()
        if resp.status not in expect:
            raise S3Error(resp.status, resp.body, f"{method} {path}")
        return resp

    def create_bucket(self, name: str) -> None:
        self.request("PUT", f"/{name}")

    def delete_bucket(self, name: str) -> None:
        """Delete every object version, abort unfinished multipart uploads, delete the bucket.
        A bucket that is already gone is fine."""
        marker: dict[str, str] = {}
        while True:
            r = self.request("GET", f"/{name}", query={"versions": "", **marker}, expect=(200, 404))
            if r.status == 404:
                return
            root = r.xml()
            objs = [
                (e.findtext(f"{S3NS}Key") or "", e.findtext(f"{S3NS}VersionId") or "")
                for tag in ("Version", "DeleteMarker")
                for e in root.iter(f"{S3NS}{tag}")
            ]
            if objs:
                xml = (
                    "<Delete><Quiet>true</Quiet>"
                    + "".join(
                        f"<Object><Key>{escape(k)}</Key>"
                        + (f"<VersionId>{escape(v)}</VersionId>" if v else "")
                        + "</Object>"
                        for k, v in objs
                    )
                    + "</Delete>"
                )
                data = xml.encode()
                md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
                self.request(
                    "POST",
                    f"/{name}",
                    query={"delete": ""},
                    body=data,
                    headers={"content-md5": md5, "content-type": "application/xml"},
                )
            if root.findtext(f"{S3NS}IsTruncated") != "true":
                break
            marker = {
                "key-marker": root.findtext(f"{S3NS}NextKeyMarker") or "",
                "version-id-marker": root.findtext(f"{S3NS}NextVersionIdMarker") or "",
            }
        while True:
            root = self.request("GET", f"/{name}", query={"uploads": ""}).xml()
            uploads = [
                (u.findtext(f"{S3NS}Key") or "", u.findtext(f"{S3NS}UploadId") or "")
                for u in root.iter(f"{S3NS}Upload")
            ]
            for key, upload_id in uploads:
                self.request(
                    "DELETE", f"/{name}/{key}", query={"uploadId": upload_id}, expect=(204, 404)
                )
            if not uploads or root.findtext(f"{S3NS}IsTruncated") != "true":
                break
        self.request("DELETE", f"/{name}", expect=(204, 404))


# ---------------------------------------------------------------- process helpers


def _proc_start(pid: int) -> int | None:
    """Start time of a live (non-zombie) process, None when there is none."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rindex(")") + 2 :].split()
    return None if rest[0] in ("Z", "X") else int(rest[19])


def s3_unavailable() -> str | None:
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        return f"the S3 test server needs Ceph ({', '.join(missing)} missing): {INSTALL_HINT}"
    try:
        import obstore  # noqa: F401
    except ImportError:
        return "obstore is not installed: run scripts/setup (pip install -e '.[test]')"
    return None


def _server(cmd: str, d: Path, *extra: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run scripts/s3-server; on any interruption let it clean up (SIGTERM, not SIGKILL)."""
    p = subprocess.Popen(
        [sys.executable, str(SERVER), cmd, str(d), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    try:
        out, err = p.communicate(timeout=timeout)
    except BaseException:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=60)
        raise
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def _sweep_orphans(config: pytest.Config) -> None:
    """Stop servers whose pytest session died without teardown (SIGKILL): those of the last
    sessions in pytest's default temp root whose owning process is gone."""
    if config.option.basetemp is not None:
        return
    root = Path(tempfile.gettempdir()) / f"pytest-of-{getpass.getuser()}"
    for state in root.glob("pytest-*/s3server*/cluster/state.json"):
        try:
            if not json.loads(state.read_text()).get("daemons"):
                continue  # stopped cleanly
            o = json.loads((state.parent.parent / "owner.json").read_text())
        except (OSError, ValueError):
            continue
        if _proc_start(o["pid"]) != o["start"]:
            _server("down", state.parent, "--purge", timeout=60)


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI is set and {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def ceph() -> None:
    """Skip (fail under CI) unless the server's packages are installed."""
    reason = s3_unavailable()
    if reason is not None:
        _skip_or_fail(reason)


@pytest.fixture(scope="session")
def s3_server(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[S3Server]:
    reason = s3_unavailable()
    if reason is not None:
        _skip_or_fail(reason)
    _sweep_orphans(pytestconfig)
    base = tmp_path_factory.mktemp("s3server")
    (base / "owner.json").write_text(
        json.dumps({"pid": os.getpid(), "start": _proc_start(os.getpid())})
    )
    d = base / "cluster"
    # SIGTERM to pytest would skip every teardown: make it unwind like Ctrl-C while we run
    previous = signal.getsignal(signal.SIGTERM)
    if previous == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        r = _server("up", d)
        if r.returncode != 0:
            pytest.fail(f"scripts/s3-server up failed:\n{r.stderr}", pytrace=False)
        env = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
        yield S3Server(
            endpoint=env["AWS_ENDPOINT_URL"],
            access_key=env["AWS_ACCESS_KEY_ID"],
            secret_key=env["AWS_SECRET_ACCESS_KEY"],
            region=env["AWS_DEFAULT_REGION"],
            dir=d,
        )
    finally:
        try:
            down = _server("down", d, "--purge", timeout=90)
            if down.returncode != 0:
                print(f"scripts/s3-server down failed:\n{down.stderr}", file=sys.stderr)
        finally:
            if previous == signal.SIG_DFL:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@pytest.fixture
def bucket(s3_server: S3Server) -> Iterator[str]:
    """A fresh bucket (created); emptied and deleted afterwards."""
    name = f"dosfs-test-{uuid.uuid4().hex[:16]}"
    s3_server.create_bucket(name)
    try:
        yield name
    finally:
        s3_server.delete_bucket(name)


@pytest.fixture
def aws_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The standard AWS_* variables of the test server in this process (and its children)."""
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    yield


class Freezer:
    """SIGSTOP / SIGCONT of the test server's gateway (radosgw): connections are then accepted
    by the kernel and never answered, as a congested or half-dead server does."""

    def __init__(self, server: S3Server) -> None:
        state = json.loads((server.dir / "state.json").read_text())
        rgw = next(d for d in state["daemons"] if d["name"] == "rgw")
        if _proc_start(rgw["pid"]) != rgw["start"]:
            raise AssertionError(f"the gateway (pid {rgw['pid']}) is not running")
        self.pid: int = rgw["pid"]
        self.frozen = False

    def freeze(self) -> None:
        self.frozen = True
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.pid, signal.SIGCONT)
        self.frozen = False


@pytest.fixture
def freezer(s3_server: S3Server) -> Iterator[Freezer]:
    """The gateway frozen on demand; ALWAYS resumed in teardown, whatever happened."""
    f = Freezer(s3_server)
    try:
        yield f
    finally:
        f.thaw()
