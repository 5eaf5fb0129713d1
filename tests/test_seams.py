"""The seams of the code, checked: the engine never loads the FUSE stack, no import cycles, no
module over 500 lines, and the errors of a missing pyfuse3 reach the user."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "dosfs"


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)


def test_the_engine_imports_neither_pyfuse3_nor_trio() -> None:
    result = run_python(
        "import sys, dosfs, dosfs.container, dosfs.container.backup, dosfs.engine\n"
        "import dosfs.remote.engine, dosfs.remote.push, dosfs.remote.pull, dosfs.remote.status\n"
        "from dosfs import Container\n"
        "bad = [m for m in ('pyfuse3', 'trio') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"loaded by the engine: {result.stdout}"


def test_the_mount_module_imports_without_pyfuse3() -> None:
    # mount.py's lifecycle code must import (and so can report a missing pyfuse3 itself)
    result = run_python(
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name in ('pyfuse3', 'trio'):\n"
        "            raise ImportError(f'No module named {name!r} (blocked)')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from dosfs import mount\n"
        "for load in (True, False):\n"
        "    try:\n"
        "        mount.check_fuse(load=load)\n"
        "    except mount.MountError as exc:\n"
        "        print(exc)\n"
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and all("dosfs[mount]" in x and "libfuse3-dev" in x for x in lines)


def test_the_mount_command_imports_neither_the_engine_nor_fuse() -> None:
    # `dosfs mount` only checks and starts the daemon: every import is mount start (issue 19)
    result = run_python(
        "import sys\n"
        "import dosfs, dosfs.cli, dosfs.mount\n"
        "dosfs.mount.check_fuse(load=False)\n"
        "print(sorted(m for m in ('dosfs.container', 'dosfs.remote', 'pyfuse3', 'trio')\n"
        "             if m in sys.modules))\n"
        "from dosfs import Container, CorruptObject\n"
        "print(Container.__module__, CorruptObject.__module__)\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "[]", "dosfs.container.container dosfs.container.errors"]


def _imports(path: Path, lazy: bool = False) -> set[str]:
    """dosfs modules imported at module level (not inside functions or TYPE_CHECKING); with
    `lazy`, also those imported inside functions (they run, only later)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    nodes = list(ast.walk(tree)) if lazy else tree.body
    for node in nodes:
        if isinstance(node, ast.If) and not lazy:  # `if TYPE_CHECKING:` blocks do not run
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("dosfs"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dosfs"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_import_cycles_inside_dosfs_lazy_imports_included() -> None:
    """Not even through an import inside a function (issue 20): the mount module no longer
    starts the daemon (the CLI does), the two sources of node rows share views/rows.py, and
    the S3 error texts sit below the client that raises them."""
    _check_no_cycles(PACKAGE, lazy=True)


def test_the_engines_and_views_import_nothing_above_them() -> None:
    """dosfs.container, dosfs.remote and dosfs.views (and the contract, dosfs.engine) import
    neither the FUSE adapter nor the mount, the daemon or the CLI, lazy imports included: the
    engines are peers below the adapter (issue 20)."""
    above = ("dosfs.fs", "dosfs.mount", "dosfs.daemon", "dosfs.cli", "dosfs.options")
    found = []
    for sub in ("container", "remote", "views", "engine.py"):
        for path in sorted((PACKAGE / sub).rglob("*.py") if sub != "engine.py"
                           else [PACKAGE / sub]):
            bad = sorted(m for m in _imports(path, lazy=True)
                         if any(m == a or m.startswith(a + ".") for a in above))
            if bad:
                found.append(f"{path.relative_to(ROOT)}: {', '.join(bad)}")
    assert not found, "\n".join(found)


def test_only_the_container_package_talks_sql_to_an_index() -> None:
    """The index schema has one owner (issue 20): push and status see a container's storage
    through Container.snapshot() and IndexCopy, never through their own SQL. (The views talk
    SQL to an AiiDA profile's database, which is not an index.)"""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith("container/") or rel.startswith("views/sources"):
            continue
        text = path.read_text()
        if "db_object" in text or "sqlite3.connect" in text:
            found.append(rel)
    assert not found, found


def _check_no_cycles(package: Path, lazy: bool) -> None:
    modules = {_module_name(p): p for p in package.rglob("*.py")}
    graph = {
        name: {m for m in _imports(path, lazy) if m in modules and m != name}
        for name, path in modules.items()
    }
    # a package's __init__ re-exporting its modules is not a cycle of the modules themselves
    for name in graph:
        graph[name] = {m for m in graph[name] if not name.startswith(m + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


def test_no_module_over_500_lines() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 500
    }
    assert not long, long


#: what a request handler of Operations may touch on ``self``: the inode and handle tables, the
#: table of namespaces, and what is the same for every namespace (statistics, statfs)
HANDLER_STATE = {"table", "files", "dirs", "_spaces", "stats", "engine", "_statfs"}


def test_operations_is_a_table_of_namespaces() -> None:
    """Operations dispatches through the table of namespaces, not by type checks (issue 20):
    no isinstance/issubclass/type() or match anywhere in operations.py, and no request handler
    reaches a namespace, a node or an inode number of its own (``self.by_hash``,
    ``self.root``, ``BY_HASH_INODE``, ...): a fourth namespace touches no handler."""
    path = PACKAGE / "fs" / "operations.py"
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in (
                "isinstance", "issubclass", "type"):
            found.append(f"line {node.lineno}: {node.func.id}()")
        elif isinstance(node, ast.Match):
            found.append(f"line {node.lineno}: match")
    ops = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Operations")
    handlers = [f for f in ops.body if isinstance(f, ast.AsyncFunctionDef)]
    assert len(handlers) > 20  # every request handler of pyfuse3 that the mount answers
    for handler in handlers:
        for node in ast.walk(handler):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id == "self" and node.attr not in HANDLER_STATE):
                found.append(f"{handler.name}, line {node.lineno}: self.{node.attr}")
            elif isinstance(node, ast.Name) and node.id.endswith("_INODE"):
                found.append(f"{handler.name}, line {node.lineno}: {node.id}")
    assert not found, "operations.py dispatches by hand:\n" + "\n".join(found)
