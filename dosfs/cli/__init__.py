"""The `dosfs` command line: parses arguments and calls the engine or the mount; no logic here.

frame.py is the frame (errors, global options, mount(8)'s form, shared helpers); container.py
the container commands; mounting.py mount, umount and stats; remote.py push and pull.
"""

from __future__ import annotations

from pathlib import Path

import click

from dosfs.cli import container, mounting, remote
from dosfs.cli.frame import DosfsGroup, setup_logging


@click.group(cls=DosfsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dosfs", prog_name="dosfs")  # read when asked for
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logging (anywhere).")
@click.option("--log-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Log to this file (the mount daemon too, from its first line).")
@click.pass_context
def main(ctx: click.Context, debug: bool, log_file: Path | None) -> None:
    """dosfs: a disk-objectstore compatible object store, and a FUSE mount of it."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    ctx.obj["log_file"] = log_file
    if ctx.invoked_subcommand != "mount":
        setup_logging(debug, log_file)


container.register(main)
mounting.register(main)
remote.register(main)

__all__ = ["main"]
