"""`s3://bucket/prefix` URLs and the obstore client for them, configured from the standard AWS
environment and files, so one command works against AWS, Ceph, MinIO or Garage."""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from obstore.store import S3Store

from dosfs.container.errors import DosfsError
from dosfs.container.packstore import Unavailable


class RemoteError(DosfsError):
    """The remote store cannot be used (bad URL, credentials, bucket, server down)."""


#: what to do when no credentials are found (said in every command's one line)
CREDENTIALS_HINT = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with a credentials file"
)


def no_credentials(url: RemoteURL | str) -> RemoteError:
    return RemoteError(f"{url}: no credentials: {CREDENTIALS_HINT}")


class RemoteIOError(RemoteError, Unavailable):
    """A read from the server failed or did not finish in time: both a RemoteError (what
    RemoteContainer's callers catch) and an OSError EIO (what the mount answers)."""


@dataclass(frozen=True, slots=True)
class RemoteURL:
    bucket: str
    prefix: str  # no leading or trailing slash; may be empty

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def is_remote(text: str) -> bool:
    return str(text).startswith("s3://")


def parse_url(text: str) -> RemoteURL:
    if not is_remote(text):
        raise RemoteError(f"not an s3:// URL: {text!r}")
    bucket, _, prefix = text[5:].partition("/")
    if not bucket:
        raise RemoteError(f"no bucket in {text!r}")
    return RemoteURL(bucket, prefix.strip("/"))


def _profile_settings() -> dict[str, str]:
    """Settings of AWS_PROFILE (or default) from ~/.aws/config and ~/.aws/credentials."""
    profile = os.environ.get("AWS_PROFILE", "default")
    out: dict[str, str] = {}
    files = [
        (
            Path(os.environ.get("AWS_CONFIG_FILE", "~/.aws/config")).expanduser(),
            profile if profile == "default" else f"profile {profile}",
        ),
        (
            Path(os.environ.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials")).expanduser(),
            profile,
        ),
    ]
    for path, section in files:
        parser = configparser.ConfigParser()
        try:
            parser.read(path)
        except configparser.Error:
            continue
        if parser.has_section(section):
            out.update(parser[section])
    return out


def settings() -> dict[str, Any]:
    """endpoint, access_key_id, secret_access_key, token, region: environment first, then the
    profile's files."""
    prof = _profile_settings()
    env = os.environ
    config: dict[str, Any] = {}
    endpoint = env.get("AWS_ENDPOINT_URL") or prof.get("endpoint_url")
    if endpoint:
        config["endpoint"] = endpoint
    for key, env_name, prof_name in (
        ("access_key_id", "AWS_ACCESS_KEY_ID", "aws_access_key_id"),
        ("secret_access_key", "AWS_SECRET_ACCESS_KEY", "aws_secret_access_key"),
        ("token", "AWS_SESSION_TOKEN", "aws_session_token"),
        ("region", "AWS_DEFAULT_REGION", "region"),
    ):
        value = env.get(env_name) or prof.get(prof_name)
        if key == "region":
            value = env.get("AWS_REGION") or value
        if value:
            config[key] = value
    config.setdefault("region", "us-east-1")
    return config


#: where the client looks for instance credentials when it must not: nothing listens there
NO_METADATA = "http://127.0.0.1:9"


def _true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def metadata_allowed(config: dict[str, Any]) -> bool:
    """May the client ask the cloud's instance metadata service (169.254.169.254) for
    credentials? Only on AWS proper (no endpoint, or an amazonaws.com one), with no keys
    given, and unless AWS_EC2_METADATA_DISABLED says no (as for the aws CLI)."""
    if "access_key_id" in config or _true("AWS_EC2_METADATA_DISABLED"):
        return False
    endpoint = config.get("endpoint")
    if endpoint is None:
        return True
    host = (urlsplit(str(endpoint)).hostname or "").lower()
    return host == "amazonaws.com" or host.endswith(".amazonaws.com")


def make_store(url: RemoteURL, *, timeout: float = 30.0, retries: int = 3) -> S3Store:
    """An S3Store for `url`. Each request gives up after `timeout` seconds; transient errors
    are retried `retries` times with backoff. Without keys, and where the instance metadata
    service must not be asked (metadata_allowed), RemoteError "no credentials" at once
    (AWS_SKIP_SIGNATURE=true reads a public bucket unsigned)."""
    config = settings()
    if not metadata_allowed(config):
        config["metadata_endpoint"] = NO_METADATA  # obstore has no switch: point it nowhere
        has_keys = "access_key_id" in config and "secret_access_key" in config
        if not has_keys and not _true("AWS_SKIP_SIGNATURE"):
            raise no_credentials(url)
    endpoint = config.get("endpoint")
    allow_http = bool(endpoint and endpoint.startswith("http://"))
    client = {
        "allow_http": allow_http,
        "timeout": f"{max(timeout, 0.1)}s",
        "connect_timeout": f"{max(min(timeout, 10.0), 0.1)}s",
    }
    retry = {
        "max_retries": retries,
        "retry_timeout": timedelta(seconds=timeout),
        "backoff": {"init_backoff": timedelta(seconds=0.1),
                    "max_backoff": timedelta(seconds=2.0), "base": 2.0},
    }
    return S3Store(
        url.bucket,
        virtual_hosted_style_request=False,
        client_options=client,  # type: ignore[arg-type]
        retry_config=retry,  # type: ignore[arg-type]
        **config,
    )
