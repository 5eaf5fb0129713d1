"""A node's repository tree, parsed from its ``repository_metadata`` and cached with a bound.

AiiDA (>= 2.0) stores a node's files as ``{"o": {name: entry}}`` where an entry is a folder
(``{"o": {...}}``, or ``{}`` when empty) or a file (``{"k": "<hashkey>"}``). A stored node's
tree never changes (AiiDA refuses to modify a stored node's repository), so a parsed tree can be
cached; a cached tree carries its node's uuid, so a pk reused after a delete is not confused.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable
from typing import Union

#: a folder: name -> sub-folder or hash key (names sorted, as the listing gives them)
Tree = dict[str, Union["Tree", str]]

#: trees kept (a tree is a few hundred bytes for typical nodes)
DEFAULT_TREES = 4096


#: the longest name a filesystem shows (bytes of UTF-8)
NAME_MAX = 255


def _shown(name: str) -> str:
    """A name as a log line can carry it (escaped, short)."""
    text = name.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")
    return repr(text if len(text) <= 60 else text[:57] + "...")


def name_problem(name: object) -> str | None:
    """Why `name` cannot be a file or folder name in the mount, or None."""
    if not isinstance(name, str) or not name:
        return "an empty name"
    if name in (".", ".."):
        return f"the name {name!r}"
    if "/" in name or "\0" in name:
        return f"the name {_shown(name)} holds '/' or NUL"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return f"the name {_shown(name)} is not valid Unicode"
    if size > NAME_MAX:
        return f"the name {_shown(name)} is {size} bytes (over {NAME_MAX})"
    return None


class _Parser:
    def __init__(self, valid_key: Callable[[str], bool] | None) -> None:
        self.valid_key = valid_key
        self.problems: list[str] = []

    def folder(self, entry: dict[str, object], path: str) -> Tree:
        out: Tree = {}
        children = entry.get("o") or {}
        if not isinstance(children, dict):
            self.problems.append(f"{path or '/'}: 'o' is not an object")
            return out
        for name, sub in sorted(children.items()):
            where = f"{path}/{_shown(name)[1:-1]}" if isinstance(name, str) else path
            why = name_problem(name)
            if why is not None:
                self.problems.append(f"{path or '/'}: {why}")
            elif not isinstance(sub, dict):
                self.problems.append(f"{where}: the entry is not an object")
            elif "k" in sub:
                key = sub["k"]
                if not isinstance(key, str) or (
                        self.valid_key is not None and not self.valid_key(key)):
                    self.problems.append(f"{where}: {_shown(str(key))} is not a hash key")
                else:
                    out[name] = key
            else:
                out[name] = self.folder(sub, where)
        return out


def parse_tree_checked(
    metadata: str, valid_key: Callable[[str], bool] | None = None
) -> tuple[Tree, list[str]]:
    """The tree of a node from its repository_metadata JSON text, without what cannot be
    shown (names empty, `.`, `..`, with `/` or NUL, not valid Unicode, over NAME_MAX bytes;
    entries that are not objects; file keys that `valid_key` refuses), and a line on each
    thing left out. Never raises: metadata that is not AiiDA's format is an empty tree."""
    parser = _Parser(valid_key)
    try:
        data = json.loads(metadata) if metadata else {}
    except ValueError as exc:
        return {}, [f"repository_metadata is not JSON ({exc})"]
    if not isinstance(data, dict):
        return {}, ["repository_metadata is not an object"]
    return parser.folder(data, ""), parser.problems


def parse_tree(metadata: str, valid_key: Callable[[str], bool] | None = None) -> Tree:
    """The tree of a node from its repository_metadata JSON text (what can be shown);
    ValueError when it is not a JSON object at all."""
    data = json.loads(metadata) if metadata else {}
    if not isinstance(data, dict):
        raise ValueError("repository_metadata is not an object")
    return _Parser(valid_key).folder(data, "")


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
