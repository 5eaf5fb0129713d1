"""Loaded by every Python process whose PYTHONPATH holds this folder (tests only): AiiDA's
`from disk_objectstore import Container` then gets dosfs's Container. Exceptions stay
disk-objectstore's classes where AiiDA catches them by name; dosfs raises its own (a subclass
relation does not exist), so the test sees whether AiiDA trips on that.

DOSFS_ROOT names the checkout whose `dosfs` package is used; DOSFS_SHIM_LOG, if set, gets one
line per process that was shimmed (the test checks that verdi really ran on dosfs)."""

from __future__ import annotations

import os
import sys

_root = os.environ.get("DOSFS_ROOT")
if _root:
    sys.path.insert(0, _root)
    import disk_objectstore
    import disk_objectstore.container

    import dosfs

    disk_objectstore.Container = dosfs.Container  # type: ignore[misc]
    disk_objectstore.container.Container = dosfs.Container  # type: ignore[misc]
    _log = os.environ.get("DOSFS_SHIM_LOG")
    if _log:
        _init = dosfs.Container.__init__

        def _logged_init(self: dosfs.Container, folder: object, *args: object,
                         **kwargs: object) -> None:
            with open(_log, "a") as f:  # type: ignore[arg-type]
                f.write(f"{os.getpid()} {os.path.basename(sys.argv[0])} {folder}\n")
            _init(self, folder, *args, **kwargs)  # type: ignore[arg-type]

        dosfs.Container.__init__ = _logged_init  # type: ignore[method-assign]
