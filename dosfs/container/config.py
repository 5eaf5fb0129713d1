"""config.json and the folder layout of a container; hash keys are validated here before any path
is built from them (a key is only ever turned into a path after `Layout.check_hashkey`).

The format is disk-objectstore 1.x (see docs/format.md): `config.json`, `loose/`, `sandbox/`,
`duplicates/`, `packs/`, `packs.idx`. dosfs adds one file of its own, `.dosfs-pack.lock`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dosfs.container.db import create_schema
from dosfs.container.errors import InvalidContainer, InvalidHashKey, NotInitialised

#: hash types disk-objectstore 1.x knows, with the length of their hex digest
HASH_LENGTHS: dict[str, int] = {"sha256": 64, "sha1": 40}

DEFAULT_PACK_SIZE_TARGET = 4 * 1024 * 1024 * 1024
DEFAULT_LOOSE_PREFIX_LEN = 2
DEFAULT_HASH_TYPE = "sha256"
DEFAULT_COMPRESSION = "zlib+1"

CONFIG_NAME = "config.json"
LOOSE_NAME = "loose"
SANDBOX_NAME = "sandbox"
DUPLICATES_NAME = "duplicates"
PACKS_NAME = "packs"
INDEX_NAME = "packs.idx"
#: dosfs's own lock file in the container root (disk-objectstore ignores unknown names there)
PACK_LOCK_NAME = ".dosfs-pack.lock"
#: the pack id disk-objectstore (and dosfs) use as the temporary target of a repack
REPACK_PACK_ID = -1


def parse_compression(algorithm: str) -> int:
    """Return the zlib level of a `zlib+N` string; anything else is refused early."""
    match = re.fullmatch(r"zlib\+([1-9])", algorithm)
    if not match:
        raise ValueError(
            f"unknown compression algorithm {algorithm!r} (expected zlib+1 ... zlib+9)"
        )
    return int(match.group(1))


def new_hasher(hash_type: str) -> Any:
    """A fresh hashlib object for the container's hash type."""
    if hash_type not in HASH_LENGTHS:
        raise InvalidContainer(f"unsupported hash_type {hash_type!r}")
    return hashlib.new(hash_type)


@dataclass(frozen=True)
class ContainerConfig:
    """The parsed config.json; unknown keys are kept so a rewrite would not lose them."""

    loose_prefix_len: int = DEFAULT_LOOSE_PREFIX_LEN
    pack_size_target: int = DEFAULT_PACK_SIZE_TARGET
    hash_type: str = DEFAULT_HASH_TYPE
    container_id: str = ""
    compression_algorithm: str = DEFAULT_COMPRESSION
    container_version: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def hash_length(self) -> int:
        return HASH_LENGTHS[self.hash_type]

    @property
    def compression_level(self) -> int:
        return parse_compression(self.compression_algorithm)

    def to_json(self) -> dict[str, Any]:
        data = dict(self.extra)
        data.update(
            {
                "container_version": self.container_version,
                "loose_prefix_len": self.loose_prefix_len,
                "pack_size_target": self.pack_size_target,
                "hash_type": self.hash_type,
                "container_id": self.container_id,
                "compression_algorithm": self.compression_algorithm,
            }
        )
        return data

    @classmethod
    def new(
        cls,
        pack_size_target: int = DEFAULT_PACK_SIZE_TARGET,
        loose_prefix_len: int = DEFAULT_LOOSE_PREFIX_LEN,
        hash_type: str = DEFAULT_HASH_TYPE,
        compression_algorithm: str = DEFAULT_COMPRESSION,
    ) -> ContainerConfig:
        """Validate user choices and make a config with a fresh container id."""
        if not isinstance(loose_prefix_len, int) or loose_prefix_len < 0:
            raise ValueError("loose_prefix_len must be an integer >= 0")
        if hash_type not in HASH_LENGTHS:
            raise ValueError(f"unknown hash_type {hash_type!r} (known: {', '.join(HASH_LENGTHS)})")
        if loose_prefix_len >= HASH_LENGTHS[hash_type]:
            raise ValueError("loose_prefix_len must be shorter than the hash")
        if not isinstance(pack_size_target, int) or pack_size_target <= 0:
            raise ValueError("pack_size_target must be a positive integer")
        parse_compression(compression_algorithm)
        return cls(
            loose_prefix_len=loose_prefix_len,
            pack_size_target=pack_size_target,
            hash_type=hash_type,
            container_id=uuid.uuid4().hex,
            compression_algorithm=compression_algorithm,
        )

    @classmethod
    def from_json(cls, data: Any, where: Path) -> ContainerConfig:
        """Parse and check config.json, with errors that name the file."""
        if not isinstance(data, dict):
            raise InvalidContainer(f"{where}: config.json is not a JSON object")
        known = {
            "container_version",
            "loose_prefix_len",
            "pack_size_target",
            "hash_type",
            "container_id",
            "compression_algorithm",
        }
        try:
            config = cls(
                loose_prefix_len=int(data.get("loose_prefix_len", DEFAULT_LOOSE_PREFIX_LEN)),
                pack_size_target=int(data.get("pack_size_target", DEFAULT_PACK_SIZE_TARGET)),
                hash_type=str(data.get("hash_type", DEFAULT_HASH_TYPE)),
                container_id=str(data.get("container_id", "")),
                compression_algorithm=str(data.get("compression_algorithm", DEFAULT_COMPRESSION)),
                container_version=int(data.get("container_version", 1)),
                extra={k: v for k, v in data.items() if k not in known},
            )
        except (TypeError, ValueError) as exc:
            raise InvalidContainer(f"{where}: malformed config.json: {exc}") from exc
        if config.hash_type not in HASH_LENGTHS:
            raise InvalidContainer(f"{where}: unsupported hash_type {config.hash_type!r}")
        if not 0 <= config.loose_prefix_len < config.hash_length:
            raise InvalidContainer(f"{where}: invalid loose_prefix_len {config.loose_prefix_len}")
        if config.pack_size_target <= 0:
            raise InvalidContainer(f"{where}: invalid pack_size_target {config.pack_size_target}")
        try:
            parse_compression(config.compression_algorithm)
        except ValueError as exc:
            raise InvalidContainer(f"{where}: {exc}") from exc
        return config


class Layout:
    """Every path of a container, as plain strings for the hot paths (no pathlib in loops)."""

    def __init__(self, folder: Path, config: ContainerConfig) -> None:
        self.folder = folder
        self.config = config
        root = str(folder)
        self.loose = os.path.join(root, LOOSE_NAME)
        self.sandbox = os.path.join(root, SANDBOX_NAME)
        self.duplicates = os.path.join(root, DUPLICATES_NAME)
        self.packs = os.path.join(root, PACKS_NAME)
        self.index = os.path.join(root, INDEX_NAME)
        self.pack_lock = os.path.join(root, PACK_LOCK_NAME)
        self.prefix_len = config.loose_prefix_len
        self.hash_length = config.hash_length
        self._hash_re = re.compile(f"[0-9a-f]{{{self.hash_length}}}")
        self._prefix_re = re.compile(f"[0-9a-f]{{{self.prefix_len}}}")
        self._rest_re = re.compile(f"[0-9a-f]{{{self.hash_length - self.prefix_len}}}")
        self._loose_base = self.loose + os.sep

    def is_valid_hashkey(self, hashkey: object) -> bool:
        """Exact length, lowercase hex; cheap (one compiled regex)."""
        return type(hashkey) is str and self._hash_re.fullmatch(hashkey) is not None

    def all_valid_hashkeys(self, hashkeys: list[str]) -> bool:
        """One regex over all keys at once (bulk calls validate thousands of keys)."""
        n = self.hash_length
        # (C loops: a generator over 10^5 keys cost a tenth of a bulk read's own work)
        if set(map(type, hashkeys)) - {str} or set(map(len, hashkeys)) - {n}:
            return False
        try:
            joined = "".join(hashkeys).encode("ascii")
        except UnicodeEncodeError:
            return False
        return not joined.translate(None, b"0123456789abcdef")

    def check_hashkey(self, hashkey: object) -> str:
        if type(hashkey) is not str or self._hash_re.fullmatch(hashkey) is None:
            raise InvalidHashKey(
                f"invalid hash key {hashkey!r}: expected {self.hash_length} lowercase hex digits"
            )
        return hashkey

    def is_valid_prefix(self, name: str) -> bool:
        return self._prefix_re.fullmatch(name) is not None

    def is_valid_rest(self, name: str) -> bool:
        return self._rest_re.fullmatch(name) is not None

    def loose_path(self, hashkey: str) -> str:
        """Path of a loose object; the key must already be validated."""
        n = self.prefix_len
        if n:
            return f"{self._loose_base}{hashkey[:n]}/{hashkey[n:]}"
        return self._loose_base + hashkey

    def loose_shard(self, hashkey: str) -> str:
        n = self.prefix_len
        return f"{self._loose_base}{hashkey[:n]}" if n else self.loose

    def pack_path(self, pack_id: int) -> str:
        return f"{self.packs}{os.sep}{int(pack_id)}"

    def pack_lock_path(self, pack_id: int) -> str:
        return f"{self.packs}{os.sep}{int(pack_id)}.lock"


def is_valid_pack_name(name: str) -> bool:
    """Decimal, no leading zeros: the names disk-objectstore lists as packs (not `-1`)."""
    return name.isdigit() and name.isascii() and (name == "0" or name[0] != "0")


def read_config(folder: Path) -> ContainerConfig:
    """Load config.json, raising NotInitialised (with the path) unless the folder is a container."""
    config_file = folder / CONFIG_NAME
    try:
        with open(config_file, encoding="utf8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise NotInitialised(
            f"{folder} is not an initialised dosfs/disk-objectstore container "
            f"(no {CONFIG_NAME}); run `dosfs init {folder}`"
        ) from None
    except NotADirectoryError:
        raise NotInitialised(f"{folder} is not a folder") from None
    except ValueError as exc:
        raise NotInitialised(f"{config_file} is not valid JSON: {exc}") from exc
    config = ContainerConfig.from_json(data, config_file)
    for name in (LOOSE_NAME, SANDBOX_NAME, DUPLICATES_NAME, PACKS_NAME):
        if not (folder / name).is_dir():
            raise NotInitialised(f"{folder} is not a complete container: {name}/ is missing")
    return config


def write_config(folder: Path, config: ContainerConfig) -> None:
    """Write config.json durably (temp file, fsync, rename, fsync folder)."""
    target = folder / CONFIG_NAME
    tmp = folder / f".{CONFIG_NAME}.{uuid.uuid4().hex}.tmp"
    with open(tmp, "w", encoding="utf8") as handle:
        json.dump(config.to_json(), handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, target)
    fsync_dir(str(folder))


def fsync_dir(path: str) -> None:
    """Make a new/removed directory entry durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_container(folder: Path, config: ContainerConfig, clear: bool = False) -> None:
    """Make `folder` an empty container: the four folders, packs.idx, then config.json last
    (only then is the folder a container, so a crash halfway leaves no half container)."""
    if clear:
        if folder.exists():
            shutil.rmtree(folder)
    else:
        try:
            read_config(folder)
        except NotInitialised:
            pass
        else:
            raise FileExistsError(f"{folder} is already a container")
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        raise FileExistsError(f"{folder} is not empty; refusing to initialise it")
    for name in (LOOSE_NAME, SANDBOX_NAME, DUPLICATES_NAME, PACKS_NAME):
        (folder / name).mkdir()
    create_schema(str(folder / INDEX_NAME))
    write_config(folder, config)
