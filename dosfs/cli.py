"""The `dosfs` command line: parses arguments and calls the engine or the mount; no logic here."""

from __future__ import annotations

import sys
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


if __name__ == "__main__":  # pragma: no cover
    main()
