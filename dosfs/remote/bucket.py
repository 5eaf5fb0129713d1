"""CreateBucket, which obstore does not offer: one SigV4-signed PUT with the standard library."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import http.client
from urllib.parse import urlsplit

from dosfs.remote.errors import explain
from dosfs.remote.url import RemoteError, no_credentials, settings


def create_bucket(bucket: str, timeout: float = 30.0) -> None:
    cfg = settings()
    endpoint = cfg.get("endpoint") or f"https://s3.{cfg['region']}.amazonaws.com"
    if "access_key_id" not in cfg or "secret_access_key" not in cfg:
        raise no_credentials(f"s3://{bucket}")
    url = urlsplit(endpoint)
    region = cfg["region"]
    now = datetime.datetime.now(datetime.UTC)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    body = b""
    if region != "us-east-1" and cfg.get("endpoint") is None:
        body = (
            f"<CreateBucketConfiguration><LocationConstraint>{region}</LocationConstraint>"
            "</CreateBucketConfiguration>"
        ).encode()
    payload = hashlib.sha256(body).hexdigest()
    headers = {"host": url.netloc, "x-amz-date": amz_date, "x-amz-content-sha256": payload}
    if "token" in cfg:
        headers["x-amz-security-token"] = cfg["token"]
    path = f"/{bucket}"
    signed = ";".join(sorted(headers))
    canonical = "\n".join(
        ["PUT", path, "", "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)), signed, payload]
    )
    scope = f"{amz_date[:8]}/{region}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = ("AWS4" + cfg["secret_access_key"]).encode()
    for part in (amz_date[:8], region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={cfg['access_key_id']}/{scope}, "
        f"SignedHeaders={signed}, Signature={sig}"
    )
    cls = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    conn = cls(url.hostname or "", url.port, timeout=timeout)
    try:
        conn.request("PUT", path, body=body, headers=headers)
        r = conn.getresponse()
        text = r.read()
    except OSError as exc:
        reason = exc.strerror or exc
        raise RemoteError(f"s3://{bucket}: cannot reach {endpoint} ({reason})") from exc
    finally:
        conn.close()
    if r.status not in (200, 409):
        said = explain(f"Error performing PUT {endpoint}{path} - status code: {r.status}: "
                       + text.decode(errors="replace"), f"s3://{bucket}", bucket)
        raise RemoteError(f"cannot create the bucket: {said}")
