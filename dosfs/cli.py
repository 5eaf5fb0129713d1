"""The `dosfs` command line: parses arguments and calls the engine or the mount; no logic here."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from dosfs import __version__


class _Group(click.Group):
    """Turns expected errors into one line on stderr and exit code 1; --debug shows tracebacks."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            click.echo("dosfs: interrupted", err=True)
            sys.exit(130)
        except Exception as exc:  # noqa: BLE001 - the one place that turns errors into exit codes
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"dosfs: error: {_describe(exc)}", err=True)
            sys.exit(1)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    text = str(exc) or type(exc).__name__
    return text


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dosfs")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logging.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """dosfs: a disk-objectstore compatible object store, and a FUSE mount of it."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


# --- mount / umount (owner: mount lifecycle; logic lives in dosfs/mount.py) -----------------


@main.command()
@click.argument("container", type=click.Path(path_type=Path))
@click.argument("mountpoint", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "options",
    multiple=True,
    metavar="OPTS",
    help="Comma-separated mount "
    "options: ro, allow_other, nolisting, max_names=N, readahead_kb=N, workers=N, "
    "fsname=NAME.",
)
@click.option("-f", "--foreground", is_flag=True, help="Stay attached (systemd, debugging).")
@click.option(
    "--log-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where the background daemon logs (default: nowhere).",
)
@click.option("--ready-fd", type=int, hidden=True)
@click.pass_context
def mount(
    ctx: click.Context,
    container: Path,
    mountpoint: Path,
    options: tuple[str, ...],
    foreground: bool,
    log_file: Path | None,
    ready_fd: int | None,
) -> None:
    """Mount CONTAINER at MOUNTPOINT; returns once the mount is ready."""
    from dosfs import mount as lifecycle

    debug = bool(ctx.obj and ctx.obj.get("debug"))
    try:
        opts = lifecycle.parse_options(options)
        lifecycle.mount(
            container,
            mountpoint,
            opts,
            foreground=foreground,
            debug=debug,
            log_file=log_file,
            ready_fd=ready_fd,
        )
    except lifecycle.MountError:
        if ready_fd is not None:  # the daemon of a background mount: the waiting parent prints it
            sys.exit(1)
        raise


@main.command()
@click.argument("mountpoint", type=click.Path(path_type=Path))
@click.option("-z", "--lazy", is_flag=True, help="Detach now even if files are open.")
def umount(mountpoint: Path, lazy: bool) -> None:
    """Unmount a dosfs mount and wait for its daemon to finish."""
    from dosfs import mount as lifecycle

    lifecycle.umount(mountpoint, lazy=lazy)


if __name__ == "__main__":  # pragma: no cover
    main()
