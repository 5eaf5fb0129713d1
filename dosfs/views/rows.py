"""What a view knows of a node, whichever database it comes from (SQLite in sources.py,
PostgreSQL in sources_pg.py): the row, the source protocol, and the checks of uuid text that
keep anything else from reaching SQL. Its own module so that the two sources share it without
importing each other."""

from __future__ import annotations

import re
from typing import NamedTuple, Protocol

#: a UUID or a prefix of one (lowercase hex and dashes): anything else never reaches SQL
_UUID_CHARS = re.compile(r"^[0-9a-f-]{1,36}$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
#: a prefix shorter than this is not resolved (like short hashes)
MIN_PREFIX = 8
#: the db_dbsetting key of the profile's repository uuid (= its container's container_id)
REPOSITORY_UUID_KEY = "repository|uuid"


class NodeRow(NamedTuple):
    """One node as the view needs it; ``metadata`` is the raw repository_metadata JSON."""

    pk: int
    uuid: str
    node_type: str
    label: str
    metadata: str


class Ambiguous(Exception):
    """A UUID prefix that more than one node starts with."""


class Source(Protocol):
    """What the nodes/ namespace asks of a database (SQLite or PostgreSQL)."""

    def node(self, pk: int) -> NodeRow | None: ...
    def by_uuid(self, uuid: str) -> NodeRow | None: ...
    def resolve_prefix(self, prefix: str) -> str | None: ...
    def pks_after(self, after: int, limit: int) -> list[tuple[int, str]]: ...
    def uuids_after(self, after: str, limit: int) -> list[tuple[int, str]]: ...
    def repository_uuid(self) -> str | None: ...
    def close(self) -> None: ...


def valid_uuid_text(name: str) -> bool:
    return bool(_UUID_CHARS.match(name))


def is_uuid(text: object) -> bool:
    """A whole uuid in AiiDA's form (lowercase hex, dashed 8-4-4-4-12)."""
    return isinstance(text, str) and bool(_UUID.match(text))
