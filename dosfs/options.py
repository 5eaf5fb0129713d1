"""Mount options: what `-o` accepts (dosfs's own and the standard ones of mount(8) and fstab),
parsed into MountOptions and written back (the daemon gets the same string).

Unknown options are an error, not ignored; the standard ones other FUSE filesystems accept are
accepted too: passed to the kernel (ro, nosuid, nodev, noexec, noatime), applied to what the mount
shows (uid=, gid=, umask=), or ignored because they concern mount(8) and systemd, not the
filesystem (defaults, auto, _netdev, nofail, user, users, x-systemd.*, ...).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from dosfs.fs.limits import DEFAULT_MAX_INODES, DEFAULT_MAX_NAMES

#: s3:// mounts: on-disk block cache, seconds between looks for a new generation, request timeout
DEFAULT_CACHE_SIZE = 1024**3
DEFAULT_REFRESH = 60.0
DEFAULT_TIMEOUT = 30.0

#: Kernel readahead set on the mount after mounting (KiB): 1 MiB read requests instead of 128 KiB.
DEFAULT_READAHEAD_KB = 1024

#: `dosfs mount --help`'s table of -o options: (option, what it does)
OPTIONS_TABLE: list[tuple[str, str]] = [
    ("ro, rw", "incoming/ read-only or writable (default rw)"),
    ("allow_other", "other users may use the mount (with default_permissions, always on)"),
    ("auto_unmount", "the kernel unmounts if the daemon dies"),
    ("uid=N, gid=N, umask=OCTAL", "owner and permission bits the mount shows"),
    ("nosuid, nodev, noexec, noatime", "passed to the kernel"),
    ("verify=on|off", "hash every object before serving it in full (default on)"),
    ("nolisting", "by-hash/ cannot be listed"),
    ("max_names=N", "names kept in incoming/"),
    ("max_inodes=N", "loose-object inodes kept for the kernel"),
    ("readahead_kb=N", "kernel readahead (0: the kernel default)"),
    ("workers=N", "worker threads"),
    ("fsname=NAME", "the source shown in the mount table"),
    ("debug", "debug logging in the daemon's log (as --debug)"),
    ("aiida_db=PATH", "an AiiDA profile's database.sqlite: its nodes' files under nodes/ "
     "(also --aiida-db; see dosfs views)"),
    ("cache_dir=PATH", "s3:// only: the extent cache (default ~/.cache/dosfs/...)"),
    ("cache_size=SIZE", "s3:// only: the extent cache's size (default 1GiB)"),
    ("refresh=SECONDS", "s3:// only: look for a new generation this often (default 60; "
     "0: never)"),
    ("timeout=SECONDS", "s3:// only: a read that needs the server is EIO once this long has "
     "passed, retries included (default 30)"),
    ("endpoint=URL", "s3:// only: the S3 endpoint (as AWS_ENDPOINT_URL)"),
    ("profile=NAME", "s3:// only: the AWS profile (as AWS_PROFILE)"),
    ("credentials_file=PATH", "s3:// only: the AWS credentials file (as "
     "AWS_SHARED_CREDENTIALS_FILE)"),
    ("ignored", "defaults, auto, noauto, _netdev, nofail, user, users, nouser, owner, suid, "
     "dev, exec, atime, relatime, async, sync, x-systemd.*, x-*, comment= (for mount(8), "
     "fstab and systemd)"),
    ("refused", "allow_root (use allow_other), dirsync (incoming/'s names live in memory only)"),
]

OPTIONS_HELP = "; ".join(f"{name}: {text}" for name, text in OPTIONS_TABLE)

#: -o options that set the S3 client's environment for an s3:// mount (fstab has no environment)
REMOTE_ENV_OPTIONS = {"endpoint": "AWS_ENDPOINT_URL", "profile": "AWS_PROFILE",
                      "credentials_file": "AWS_SHARED_CREDENTIALS_FILE"}

_IGNORED = {"defaults", "auto", "noauto", "_netdev", "nofail", "user", "users", "nouser",
            "owner", "suid", "dev", "exec", "atime", "relatime", "async", "sync"}
_REFUSED = {
    "allow_root": "use allow_other (dosfs checks permissions itself, default_permissions)",
    "dirsync": "incoming/'s names live in the mount's memory only, there is nothing to sync "
               "(docs/semantics.md); drop it",
}
_KERNEL_FLAGS = ("nosuid", "nodev", "noexec")


class MountError(Exception):
    """A mount or unmount that cannot happen, with a message that says what to do."""


@dataclass
class MountOptions:
    read_only: bool = False
    #: `rw` was asked for (an s3:// mount refuses it rather than silently mount read-only)
    rw_given: bool = False
    allow_other: bool = False
    listing: bool = True
    max_names: int = DEFAULT_MAX_NAMES
    max_inodes: int = DEFAULT_MAX_INODES
    readahead_kb: int = DEFAULT_READAHEAD_KB
    workers: int = 4
    fsname: str | None = None
    verify: bool = True
    auto_unmount: bool = False
    uid: int | None = None
    gid: int | None = None
    umask: int = 0
    kernel_flags: list[str] = field(default_factory=list)
    aiida_db: str | None = None
    # s3:// containers (dosfs mount s3://bucket/prefix)
    cache_dir: str | None = None
    cache_size: int = DEFAULT_CACHE_SIZE
    refresh: float = DEFAULT_REFRESH
    timeout: float = DEFAULT_TIMEOUT
    #: endpoint=, profile=, credentials_file= (REMOTE_ENV_OPTIONS), as given
    remote_env: dict[str, str] = field(default_factory=dict)
    debug: bool = False

    def remote_options(self) -> list[str]:
        """The s3-only options given (for the error when the container is local)."""
        return [name for name, given in (
            ("cache_dir", self.cache_dir is not None),
            ("cache_size", self.cache_size != DEFAULT_CACHE_SIZE),
            ("refresh", self.refresh != DEFAULT_REFRESH),
            ("timeout", self.timeout != DEFAULT_TIMEOUT),
            *((name, name in self.remote_env) for name in REMOTE_ENV_OPTIONS)) if given]

    def environment(self) -> dict[str, str]:
        """The AWS variables endpoint=, profile= and credentials_file= stand for."""
        return {REMOTE_ENV_OPTIONS[name]: value for name, value in self.remote_env.items()}

    def to_args(self) -> str:
        """The same options as one ``-o`` string (handed to the daemon process)."""
        parts = ["ro" if self.read_only else "rw"]
        parts += [name for name, on in (("allow_other", self.allow_other),
                                        ("nolisting", not self.listing),
                                        ("verify=off", not self.verify),
                                        ("auto_unmount", self.auto_unmount)) if on]
        parts += [f"max_names={self.max_names}", f"max_inodes={self.max_inodes}",
                  f"readahead_kb={self.readahead_kb}", f"workers={self.workers}"]
        if self.uid is not None:
            parts.append(f"uid={self.uid}")
        if self.gid is not None:
            parts.append(f"gid={self.gid}")
        if self.umask:
            parts.append(f"umask={self.umask:03o}")
        parts += self.kernel_flags
        if self.fsname:
            parts.append(f"fsname={self.fsname}")
        if self.aiida_db:
            parts.append(f"aiida_db={self.aiida_db}")
        if self.cache_dir is not None:
            parts.append(f"cache_dir={self.cache_dir}")
        for name in self.remote_options():
            if name in self.remote_env:
                parts.append(f"{name}={self.remote_env[name]}")
            elif name != "cache_dir":
                parts.append(f"{name}={getattr(self, name)}")
        if self.debug:
            parts.append("debug")
        return ",".join(parts)


def _integer(key: str, arg: str, low: int, base: int = 10) -> int:
    try:
        number = int(arg, base)
    except ValueError:
        what = "an octal number" if base == 8 else "an integer"
        raise MountError(f"mount option {key} needs {what}, got {arg!r}") from None
    if number < low:
        raise MountError(f"mount option {key} must be >= {low}")
    return number


_UNITS = {"": 1, "b": 1, "k": 1024, "kib": 1024, "m": 1024**2, "mib": 1024**2, "g": 1024**3,
          "gib": 1024**3, "t": 1024**4, "tib": 1024**4, "kb": 1000, "mb": 1000**2,
          "gb": 1000**3, "tb": 1000**4}


def parse_size(text: str) -> int:
    """A byte size: 4294967296, 4GiB, 512MiB, 4G (binary), 4GB (decimal); ValueError if not."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise ValueError(f"{text!r} is not a size (e.g. 4GiB, 512MiB, 1000000)")
    number = int(float(match.group(1)) * _UNITS[unit])
    if number <= 0:
        raise ValueError("the size must be positive")
    return number


def _seconds(key: str, arg: str, low: float) -> float:
    try:
        number = float(arg)
    except ValueError:
        raise MountError(f"mount option {key} needs a number of seconds, got {arg!r}") from None
    if not number >= low:
        raise MountError(f"mount option {key} must be >= {low:g}")
    return number


def parse_options(values: Iterable[str]) -> MountOptions:
    """Parse ``-o a,b=c`` values (repeatable)."""
    opts = MountOptions()
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            key, eq, arg = item.partition("=")
            flags = ("ro", "rw", "allow_other", "nolisting", "listing", "default_permissions",
                     "auto_unmount", "noatime", *_KERNEL_FLAGS)
            if key in flags:
                if eq:
                    raise MountError(f"mount option {key} takes no value")
                if key in ("ro", "rw"):
                    opts.read_only = key == "ro"
                    opts.rw_given = key == "rw"
                elif key == "allow_other":
                    opts.allow_other = True
                elif key in ("nolisting", "listing"):
                    opts.listing = key == "listing"
                elif key == "auto_unmount":
                    opts.auto_unmount = True
                elif key in _KERNEL_FLAGS and key not in opts.kernel_flags:
                    opts.kernel_flags.append(key)
                # default_permissions and noatime: always on
            elif key in _IGNORED or key.startswith("x-") or key == "comment":
                continue  # for mount(8), fstab and systemd, not for the filesystem
            elif key in ("max_names", "max_inodes", "readahead_kb", "workers"):
                setattr(opts, key, _integer(key, arg, 0 if key == "readahead_kb" else 1))
            elif key in ("uid", "gid"):
                setattr(opts, key, _integer(key, arg, 0))
            elif key == "umask":
                opts.umask = _integer(key, arg, 0, base=8) & 0o777
            elif key == "verify":
                if arg not in ("on", "off"):
                    raise MountError(f"mount option verify must be on or off, got {arg!r}")
                opts.verify = arg == "on"
            elif key == "cache_dir":
                if not arg or "," in arg:
                    raise MountError("mount option cache_dir needs a path without commas")
                opts.cache_dir = os.path.abspath(os.path.expanduser(arg))
            elif key == "cache_size":
                try:
                    opts.cache_size = parse_size(arg)
                except ValueError as exc:
                    raise MountError(f"mount option cache_size: {exc}") from None
            elif key in ("refresh", "timeout"):
                setattr(opts, key, _seconds(key, arg, 0.0 if key == "refresh" else 0.1))
            elif key == "aiida_db":
                if not arg or "," in arg:
                    raise MountError("mount option aiida_db needs a path without commas")
                opts.aiida_db = arg
            elif key in REMOTE_ENV_OPTIONS:
                if not arg:
                    raise MountError(f"mount option {key} needs a value")
                if key == "credentials_file":
                    arg = os.path.abspath(os.path.expanduser(arg))
                opts.remote_env[key] = arg
            elif key == "debug":
                if eq:
                    raise MountError("mount option debug takes no value")
                opts.debug = True
            elif key in _REFUSED:
                raise MountError(f"mount option {key} is not supported: {_REFUSED[key]}")
            elif key == "fsname":
                if not arg or "," in arg:
                    raise MountError("mount option fsname needs a name without commas")
                opts.fsname = arg
            else:
                raise MountError(
                    f"unknown mount option {item!r} (see dosfs mount --help for the list)"
                )
    return opts
