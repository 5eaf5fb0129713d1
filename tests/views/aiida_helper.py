"""Drives a real AiiDA for the view tests (run with the aiida venv's python, AIIDA_PATH set).

  create-psql HOST PORT   the same nodes in a core.psql_dos profile (database `aiida`, user
                  postgres, created here)
  create          a core.sqlite_dos profile `views` (verdi presto) with SinglefileData,
                  FolderData with nested folders, and a calculation-like node with a retrieved
                  folder; prints the profile (container, database) and every node as JSON
  add             one more FolderData; prints it
  show PK...      those nodes as JSON
  seal PK...      seal those process nodes (an archive takes only sealed ones)
  maintain        verdi storage maintain --full (packs the loose objects)
  many N          N small FolderData nodes (2 files, 1 subfolder each)
  dump DIR        every node's files copied into DIR/<pk> (what `verdi node repo dump` does)
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from typing import Any


def _tree(node: Any, path: str = "") -> dict[str, Any]:
    """Names, recursively, as AiiDA lists them: {name: {...} for folders, name: bytes-hex}."""
    repo = node.base.repository
    out: dict[str, Any] = {}
    for name in repo.list_object_names(path):
        sub = f"{path}/{name}" if path else name
        if repo.get_object(sub).file_type.name == "DIRECTORY":
            out[name] = _tree(node, sub)
        else:
            out[name] = repo.get_object_content(sub, mode="rb").hex()
    return out


def _describe(node: Any) -> dict[str, Any]:
    return {"pk": node.pk, "uuid": node.uuid, "node_type": node.node_type,
            "label": node.label, "tree": _tree(node)}


def _folder(files: dict[str, bytes], label: str = "") -> Any:
    from aiida import orm

    folder = orm.FolderData(label=label)
    for path, data in files.items():
        folder.base.repository.put_object_from_filelike(io.BytesIO(data), path)
    return folder.store()


def _profile() -> dict[str, str]:
    from aiida.manage import get_manager

    storage = get_manager().get_profile_storage()
    config = storage.profile.storage_config
    if "database_hostname" in config:
        from aiida.storage.psql_dos.backend import get_filepath_container

        url = (f"postgresql://{config['database_username']}@{config['database_hostname']}:"
               f"{config['database_port']}/{config['database_name']}")
        return {"container": str(get_filepath_container(storage.profile)), "database": url}
    folder = config["filepath"]
    return {"container": f"{folder}/container", "database": f"{folder}/database.sqlite"}


def main(argv: list[str]) -> None:
    cmd = argv[0]
    if cmd == "create":
        subprocess.run(["verdi", "presto", "--profile-name", "views"], check=True,
                       stdout=subprocess.DEVNULL)
    elif cmd == "create-psql":
        import os

        import psycopg

        host, port = argv[1], argv[2]
        with psycopg.connect(f"postgresql://postgres@{host}:{port}/postgres",
                             autocommit=True) as conn:
            conn.execute("CREATE DATABASE aiida")
        repo = os.path.join(os.environ["AIIDA_PATH"], "repository")
        subprocess.run(["verdi", "profile", "setup", "core.psql_dos", "-n", "--profile-name",
                        "views", "--email", "views@dosfs.test", "--first-name", "A",
                        "--last-name", "B", "--institution", "C", "--broker", "none",
                        "--database-hostname", host, "--database-port", port,
                        "--database-username", "postgres", "--database-password", "x",
                        "--database-name", "aiida", "--repository-uri", f"file://{repo}"],
                       check=True, stdout=subprocess.DEVNULL)
        cmd = "create"
    from aiida import load_profile, orm

    load_profile("views")
    nodes: list[Any] = []
    if cmd == "create":
        nodes.append(orm.SinglefileData(io.BytesIO(b"hello from aiida\n"),
                                        filename="hello.txt", label="single").store())
        nodes.append(_folder({"a.txt": b"A" * 10, "sub/b.dat": bytes(range(256)) * 40,
                              "sub/deeper/c.txt": b"c\n", "empty.txt": b"",
                              "big.bin": bytes(range(251)) * 20000}, label="folder"))
        calc = orm.CalcJobNode(computer=None, process_type="aiida.calculations:core.arithmetic.add")
        calc.label = "calc"
        calc.set_option("resources", {"num_machines": 1})
        calc.base.repository.put_object_from_filelike(io.BytesIO(b"x = 1\n"), "raw_input/aiida.in")
        calc.store()
        retrieved = _folder({"aiida.out": b"result 42\n" * 100, "_scheduler-stdout.txt": b"ok\n"},
                            label="retrieved")
        retrieved.base.links.add_incoming(calc, link_type=__import__(
            "aiida.common.links", fromlist=["LinkType"]).LinkType.CREATE, link_label="retrieved")
        nodes += [calc, retrieved]
    elif cmd == "add":
        nodes.append(_folder({"new.txt": b"stored after mounting\n", "d/e.txt": b"e\n"},
                             label="late"))
    elif cmd == "show":
        nodes = [orm.load_node(int(pk)) for pk in argv[1:]]
    elif cmd == "seal":  # a process node must be sealed before `verdi archive create` takes it
        for pk in argv[1:]:
            node = orm.load_node(int(pk))
            if not node.is_sealed:
                node.seal()
    elif cmd == "maintain":
        from aiida.manage import get_manager

        get_manager().get_profile_storage().maintain(full=True, dry_run=False)
    elif cmd == "dump":
        from pathlib import Path

        from aiida.orm import QueryBuilder

        for (node,) in QueryBuilder().append(orm.Node).iterall():
            node.base.repository.copy_tree(Path(argv[1]) / str(node.pk))
    elif cmd == "many":
        for i in range(int(argv[1])):
            _folder({"in.txt": f"input {i}\n".encode(), "out/res.txt": f"{i}\n".encode() * 50},
                    label=f"n{i}")
    print(json.dumps({**_profile(), "nodes": [_describe(n) for n in nodes]}))


if __name__ == "__main__":
    main(sys.argv[1:])
