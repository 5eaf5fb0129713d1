"""Views by name: an AiiDA profile's node repositories (names -> hash keys), read-only.

``sources`` reads the profile's database (SQLite today), ``trees`` turns a node's
``repository_metadata`` into a tree. Neither imports pyfuse3 or trio; the FUSE namespace that
serves them is ``dosfs.fs.nodes``.
"""

from dosfs.views.rows import NodeRow
from dosfs.views.sources import SqliteSource, open_source
from dosfs.views.trees import Tree, TreeCache, parse_tree

__all__ = ["NodeRow", "SqliteSource", "Tree", "TreeCache", "open_source", "parse_tree"]
