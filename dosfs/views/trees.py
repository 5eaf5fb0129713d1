"""A node's repository tree, parsed from its ``repository_metadata`` and cached with a bound.

AiiDA (>= 2.0) stores a node's files as ``{"o": {name: entry}}`` where an entry is a folder
(``{"o": {...}}``, or ``{}`` when empty) or a file (``{"k": "<hashkey>"}``). A stored node's
tree never changes (AiiDA refuses to modify a stored node's repository), so a parsed tree can be
cached; a cached tree carries its node's uuid, so a pk reused after a delete is not confused.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Union

#: a folder: name -> sub-folder or hash key (names sorted, as the listing gives them)
Tree = dict[str, Union["Tree", str]]

#: trees kept (a tree is a few hundred bytes for typical nodes)
DEFAULT_TREES = 4096


def _parse(entry: object) -> Tree:
    if not isinstance(entry, dict):
        raise ValueError("repository_metadata entry is not an object")
    out: Tree = {}
    for name, sub in sorted((entry.get("o") or {}).items()):
        if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
            continue  # not a name a filesystem can show
        if isinstance(sub, dict) and isinstance(sub.get("k"), str):
            out[name] = sub["k"]
        else:
            out[name] = _parse(sub)
    return out


def parse_tree(metadata: str) -> Tree:
    """The tree of a node from its repository_metadata JSON text."""
    return _parse(json.loads(metadata) if metadata else {})


def walk(tree: Tree, path: tuple[str, ...]) -> Tree | str | None:
    """The folder or hash key at ``path`` in ``tree`` (None if absent)."""
    here: Tree | str = tree
    for name in path:
        if isinstance(here, str):
            return None
        found = here.get(name)
        if found is None:
            return None
        here = found
    return here


class TreeCache:
    """pk -> (uuid, parsed tree), least recently used dropped past ``size``. A node folder's
    lookup reads the row afresh and replaces the entry when the pk now names another node."""

    def __init__(self, size: int = DEFAULT_TREES) -> None:
        self.size = size
        self._trees: OrderedDict[int, tuple[str, Tree]] = OrderedDict()

    def get(self, pk: int) -> tuple[str, Tree] | None:
        found = self._trees.get(pk)
        if found is not None:
            self._trees.move_to_end(pk)
        return found

    def put(self, pk: int, uuid: str, tree: Tree) -> None:
        self._trees[pk] = (uuid, tree)
        self._trees.move_to_end(pk)
        while len(self._trees) > self.size:
            self._trees.popitem(last=False)

    def __len__(self) -> int:
        return len(self._trees)
