"""The frame every `dosfs` command runs in: one error style, global options anywhere, the form
mount(8) uses, and the small helpers commands share (the container argument, progress bars,
sizes, JSON). No storage or mount logic here.

Errors: every failure is one line on stderr, `dosfs: error: … (try 'dosfs CMD --help')`, exit
status 2 for a usage error and 1 for anything else; `--debug` shows the traceback instead.
`--debug` and `--log-file FILE` may come before or after the subcommand. mount(8) (through
fuse3's mount.fuse3) runs `dosfs CONTAINER MOUNTPOINT -o OPTS`: that is `dosfs mount`.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

CONTAINER_ENV = "DOSFS_CONTAINER"
ENV_HELP = f"CONTAINER may be omitted when ${CONTAINER_ENV} is set."

_GLOBAL_FLAGS = ("--debug",)
_GLOBAL_VALUES = ("--log-file",)


def hoist_globals(args: list[str]) -> list[str]:
    """Move --debug and --log-file from wherever they are to the front (before `--` only)."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest += args[i:]
            break
        if arg in _GLOBAL_FLAGS:
            front.append(arg)
        elif arg in _GLOBAL_VALUES and i + 1 < len(args):
            front += [arg, args[i + 1]]
            i += 1
        elif arg.split("=", 1)[0] in _GLOBAL_VALUES and "=" in arg:
            front.append(arg)
        else:
            rest.append(arg)
        i += 1
    return front + rest


def _command_index(args: Sequence[str]) -> int:
    """Position of the first argument that is not a global option."""
    i = 0
    while i < len(args):
        if args[i] in _GLOBAL_FLAGS or args[i].startswith("--log-file="):
            i += 1
        elif args[i] in _GLOBAL_VALUES:
            i += 2
        else:
            return i
    return i


#: dostore's (disk-objectstore's CLI) verbs that dosfs spells differently: the hint they get
DOSTORE_VERBS = {
    "optimize": "dostore's optimize is `dosfs pack --compress yes` (packs, then removes the "
                "loose copies) followed by `dosfs clean --vacuum`",
    "create": "dostore's create is `dosfs init`",
    "add-files": "dostore's add-files is `dosfs add`",
}


class DosfsGroup(click.Group):
    """The `dosfs` group: the error boundary, global options anywhere, mount(8)'s form."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else ""
        if name not in self.commands and name in DOSTORE_VERBS:
            raise click.UsageError(f"no command {name!r}: {DOSTORE_VERBS[name]} "
                                   "(docs/compat.md has the whole table)")
        return super().resolve_command(ctx, args)

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        argv = hoist_globals(list(sys.argv[1:] if args is None else args))
        i = _command_index(argv)
        if i < len(argv) and argv[i] not in self.commands and not argv[i].startswith("-"):
            first = argv[i]
            if "://" in first or os.path.isdir(first) or os.sep in first:
                # `dosfs CONTAINER MOUNTPOINT -o OPTS` (mount.fuse3): said, because mount(8)
                # adds `rw` to every helper's options by itself
                argv[i:i] = ["mount", "--mount-helper"]
        debug = "--debug" in argv[:i]
        command = argv[i] if i < len(argv) and argv[i] in self.commands else ""
        try:
            result = super().main(
                argv, prog_name="dosfs", complete_var=complete_var, standalone_mode=False,
                **extra,
            )
        except click.exceptions.Exit as exc:
            code = exc.exit_code
        except click.exceptions.Abort:
            click.echo("dosfs: error: aborted", err=True)
            code = 1
        except click.UsageError as exc:
            hint = f"dosfs {command} --help" if command else "dosfs --help"
            message = exc.format_message()
            if isinstance(exc, click.MissingParameter) and exc.param is not None \
                    and exc.param.name == "container":
                message = f"missing CONTAINER (or set ${CONTAINER_ENV})"
            click.echo(f"dosfs: error: {message} (try '{hint}')", err=True)
            code = 2
        except click.ClickException as exc:
            if debug:
                traceback.print_exc()
            click.echo(f"dosfs: error: {exc.format_message()}", err=True)
            code = exc.exit_code
        except KeyboardInterrupt:
            click.echo("dosfs: interrupted", err=True)
            code = 130
        except Exception as exc:  # noqa: BLE001 - the one place that turns errors into exit codes
            if debug:
                raise
            click.echo(f"dosfs: error: {describe(exc)}", err=True)
            code = 1
        else:
            code = result if isinstance(result, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


def describe(exc: BaseException) -> str:
    """An exception as the user should read it (no Python class names)."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    if type(exc) is sqlite3.DatabaseError:  # "malformed", "not a database": not busy, full
        return f"a damaged SQLite index (packs.idx): {exc}"
    return str(exc) or type(exc).__name__


def setup_logging(debug: bool, log_file: Path | None) -> None:
    """Engine and CLI messages to stderr, or to `log_file` (the mount has its own, daemon.py)."""
    if log_file is None and not debug:
        return
    handler: logging.Handler = (
        logging.FileHandler(log_file) if log_file is not None else logging.StreamHandler()
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("dosfs")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG if debug else logging.INFO)


# -- arguments ------------------------------------------------------------------------------------
#: CONTAINER as a positional argument, or $DOSFS_CONTAINER
container_argument = click.argument(
    "container", envvar=CONTAINER_ENV, metavar="[CONTAINER]",
    type=click.Path(file_okay=False, path_type=Path),
)


def split_container(args: tuple[str, ...], what: str) -> tuple[Path, tuple[str, ...]]:
    """`[CONTAINER] ITEM...`: the first argument is the container if it is a folder (items are
    files or hash keys, never folders), otherwise $DOSFS_CONTAINER is used."""
    env = os.environ.get(CONTAINER_ENV)
    if args and (Path(args[0]).is_dir() or not env):
        container, rest = Path(args[0]), args[1:]
    elif env:
        container, rest = Path(env), args
    else:
        raise click.UsageError(f"missing CONTAINER (or set ${CONTAINER_ENV})")
    if not rest:
        raise click.UsageError(f"missing {what}")
    return container, rest


def open_container(folder: Path, *, check_index: bool = False) -> Any:
    """The Container in `folder`, or a one-line error that says what to do. `check_index`:
    refuse a damaged packs.idx now (commands that read or rewrite all of it)."""
    from dosfs import Container
    from dosfs.container.errors import InvalidContainer, NotInitialised

    path = Path(os.path.abspath(folder))
    from dosfs.mount import daemon_died

    if daemon_died(path):
        raise click.ClickException(dead_mount_message(path))
    if not path.exists():
        raise click.ClickException(
            f"no container at {path}: the folder does not exist (create one: dosfs init {path})"
        )
    c = Container(path)
    try:
        c.layout  # noqa: B018 - reads config.json now, so the error names the folder
        if check_index:
            c.check_index()
    except (NotInitialised, InvalidContainer) as exc:
        raise click.ClickException(str(exc)) from None
    return c


def dead_mount_message(mountpoint: Path | str) -> str:
    return (f"the dosfs daemon of {mountpoint} has died (the mount is left without it): "
            f"unmount with `dosfs umount {mountpoint}`, then mount again")


# -- output ---------------------------------------------------------------------------------------
class Progress:
    """disk-objectstore's progress callback -> a click progress bar, only on a terminal."""

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._bar: Any = None

    def __call__(self, action: str, value: Any) -> None:
        if not self.enabled:
            return
        if action == "init":
            self.close()
            self._bar = click.progressbar(
                length=max(int(value.get("total") or 0), 1),
                label=str(value.get("description", "")),
                file=sys.stderr,
            )
            self._bar.__enter__()
        elif action == "update" and self._bar is not None:
            self._bar.update(int(value or 1))
        elif action == "close":  # the stage is done: its bar shows 100% even when it was empty
            if self._bar is not None and self._bar.pos < self._bar.length:
                self._bar.update(self._bar.length - self._bar.pos)
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


def human(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(n)  # pragma: no cover


class Size(click.ParamType[int]):
    """A byte size: 4294967296, 4GiB, 512MiB, 4G (binary), 4GB (decimal)."""

    name = "SIZE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        from dosfs.options import parse_size

        try:
            return parse_size(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
