"""What the S3 client or server said, as one short and complete line (RemoteError).

The client's text (obstore's) is a paragraph: the request, retries, the server's XML body and a
debug dump. A user needs what went wrong and what to do, the same words for the same cause in
every command (push, pull, status, mount): the S3 error code decides, then the HTTP status, then
the kind of transport failure; never raw XML, never a line cut mid-word.
"""

from __future__ import annotations

import re
import textwrap

from dosfs.remote.url import CREDENTIALS_HINT, RemoteError, RemoteURL

_CODE = re.compile(r"<Code>([A-Za-z0-9.]{1,64})</Code>")
_STATUS = re.compile(r"status code: (\d{3})|status: (\d{3})")
_REQUEST = re.compile(r"Error performing (?:\w+ request: Error performing )?([A-Z]+) (\S+)")
_HOST = re.compile(r"^(https?://[^/?\s]+)")
#: where an instance-metadata credentials probe goes (IMDS); its failure means "no credentials"
_METADATA = ("169.254.169.254", "fd00:ec2::254", "/latest/api/token", "/latest/meta-data")
_LIMIT = 240


def explain(text: str, url: RemoteURL | str, bucket: str) -> str:
    """One line for the client's error text `text` about `url`."""
    code_match = _CODE.search(text)
    code = code_match.group(1) if code_match else ""
    status_match = _STATUS.search(text)
    status = next((g for g in status_match.groups() if g), "") if status_match else ""
    request = _REQUEST.search(text)
    method, target = (request.group(1), request.group(2)) if request else ("", "")
    host_match = _HOST.match(target)
    host = host_match.group(1) if host_match else "the server"
    lowered = text.lower()
    if any(m in text for m in _METADATA):
        return f"{url}: no credentials: {CREDENTIALS_HINT}"
    if code == "NoSuchBucket":
        return f"{url}: bucket {bucket!r} does not exist"
    if code == "InvalidBucketName":
        return (f"{url}: {bucket!r} is not a valid bucket name (3 to 63 lowercase letters, "
                "digits, dots and hyphens)")
    if code == "InvalidAccessKeyId":
        return f"{url}: access denied: the server does not know this AWS_ACCESS_KEY_ID"
    if code == "SignatureDoesNotMatch":
        return (f"{url}: access denied: AWS_SECRET_ACCESS_KEY does not match "
                "AWS_ACCESS_KEY_ID")
    if code in ("AccessDenied", "AllAccessDisabled") or status == "403":
        return (f"{url}: access denied (check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or "
                "AWS_PROFILE)")
    if code == "NoSuchKey" or status == "404":
        return f"{url}: not found: {method} {target}".rstrip(": ")
    if any(w in lowered for w in ("timed out", "timedout", "kind: timeout")):
        return f"{url}: {host} did not answer in time"
    if any(w in lowered for w in ("error sending request", "connection refused",
                                  "dns error", "connect error", "tcp connect")):
        return f"{url}: cannot reach {host}"
    if code or status:
        said = " ".join(x for x in (code, f"(HTTP {status})" if status else "") if x)
        return f"{url}: the server answered {said} to {method} {target}".rstrip()
    first = re.sub(r"<[^>]*>", " ", text.strip().splitlines()[0] if text.strip() else "")
    first = first.split(" - ", 1)[0]
    return textwrap.shorten(f"{url}: {first or 'unknown error'}", _LIMIT, placeholder=" …")


def remote_error(exc: BaseException, url: RemoteURL) -> RemoteError:
    """One clear line for what the client or the server said."""
    if isinstance(exc, RemoteError):
        return exc
    return RemoteError(explain(str(exc) or type(exc).__name__, url, url.bucket))
