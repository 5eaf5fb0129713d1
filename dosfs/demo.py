"""Builds a small demo container so a newcomer has something to mount: `python -m dosfs.demo DIR`.

It holds loose objects, packed objects across two packs and one compressed object, so every read
path of the mount can be tried by hand. Running it again on an existing demo container does nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

from dosfs import Container

_TEXTS = [
    b"Hello from dosfs: this object is loose (one file under loose/).\n",
    b"Content-addressed: the file name is the sha256 of these bytes.\n",
    b"Objects are immutable; add new ones through incoming/.\n",
]


def build_demo(folder: Path) -> Container:
    """Create (once) and return the demo container in `folder`."""
    container = Container(folder)
    if container.is_initialised:
        return container
    container.init_container(pack_size_target=64 * 1024)
    for text in _TEXTS:
        container.add_object(text)
    packed = [f"packed object number {i}\n".encode() * (i + 1) for i in range(40)]
    packed.append(b"")  # the empty object exists too
    packed.append(bytes(range(256)) * 512)  # 128 KiB of binary data, forces a second pack
    container.add_objects_to_pack(packed)
    line = "line {}: compressed objects are random-access\n"
    story = "".join(line.format(i) for i in range(20000)).encode()
    container.add_objects_to_pack([story], compress=True)
    return container


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m dosfs.demo DIR", file=sys.stderr)
        return 2
    with build_demo(Path(args[0])) as container:
        counts = container.count_objects()
        print(f"demo container: {container.folder} ({counts.loose} loose, {counts.packed} packed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
