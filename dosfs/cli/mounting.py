"""The mount commands: mount, umount, stats (the lifecycle itself is dosfs/mount.py)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click

from dosfs.cli.frame import CONTAINER_ENV, emit_json


def register(main: click.Group) -> None:
    for command in (mount, umount, stats, views):
        main.add_command(command)


class _MountCommand(click.Command):
    """`dosfs mount`: its help ends with the table of -o options."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from dosfs.options import OPTIONS_TABLE

        super().format_options(ctx, formatter)
        with formatter.section("Options for -o (comma-separated, -o may be repeated)"):
            formatter.write_dl(OPTIONS_TABLE)


@click.command(
    cls=_MountCommand,
    epilog=f"CONTAINER may be omitted when ${CONTAINER_ENV} is set. mount(8) and /etc/fstab run "
    "`dosfs CONTAINER MOUNTPOINT -o OPTS` (type fuse.dosfs), which is this command.",
    context_settings={"ignore_unknown_options": False},
)
@click.argument("args", nargs=-1, required=True, metavar="[CONTAINER] MOUNTPOINT")
@click.option("-o", "options", multiple=True, metavar="OPTS",
              help="Comma-separated mount options: see below.")
@click.option("--aiida-db", "aiida_db", metavar="PATH",
              help="An AiiDA profile's database.sqlite, or its PostgreSQL URL "
              "(postgresql://user:pw@host:port/db): its nodes' files under nodes/ "
              "(see `dosfs views`).")
@click.option("-f", "--foreground", is_flag=True, help="Stay attached (systemd, debugging).")
@click.option("-n", "--no-mtab", "no_mtab", is_flag=True, hidden=True)  # mount(8) may pass it
@click.option("--ready-fd", type=int, hidden=True)
@click.option("--mount-helper", "helper", is_flag=True, hidden=True)  # run by mount(8)
@click.pass_context
def mount(ctx: click.Context, args: tuple[str, ...], options: tuple[str, ...],
          aiida_db: str | None, foreground: bool, no_mtab: bool, ready_fd: int | None,
          helper: bool) -> None:
    """Mount CONTAINER at MOUNTPOINT; returns once the mount is ready (the daemon runs on in
    the background, or attached with --foreground).

    CONTAINER may be s3://BUCKET/PREFIX, a container published with `dosfs push`: by-hash/ is
    then read-only from the bucket (ranged GETs, an extent cache on disk, every object verified
    before it is served in full), and new generations are picked up every -o refresh=SECONDS
    (files already open keep theirs). Endpoint and credentials come from AWS_ENDPOINT_URL,
    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE and ~/.aws/config."""
    from dosfs import mount as lifecycle

    source: str
    if len(args) == 2:
        source, mountpoint = args[0], Path(args[1])
    elif len(args) == 1 and os.environ.get(CONTAINER_ENV):
        source, mountpoint = os.environ[CONTAINER_ENV], Path(args[0])
    elif len(args) == 1:
        raise click.UsageError(f"missing CONTAINER (or set ${CONTAINER_ENV}) before MOUNTPOINT")
    else:
        raise click.UsageError("expected [CONTAINER] MOUNTPOINT")
    container: Path | str = source if source.startswith("s3://") else Path(source)
    debug = bool(ctx.obj and ctx.obj.get("debug"))
    log_file = ctx.obj.get("log_file") if ctx.obj else None
    try:
        opts = lifecycle.parse_options(options)
        if helper:
            opts.rw_given = False  # mount(8) says rw unless ro: not the user's request
        if aiida_db:
            if "," in aiida_db:
                raise lifecycle.MountError("--aiida-db needs a path without commas")
            opts.aiida_db = aiida_db if "://" in aiida_db else str(Path(aiida_db).absolute())
        if foreground:  # this process is the daemon
            lifecycle.prepare(container, opts)
            from dosfs.daemon import serve

            serve(container, mountpoint, opts, debug=debug or opts.debug, log_file=log_file,
                  ready_fd=ready_fd)
        else:
            lifecycle.mount(container, mountpoint, opts, debug=debug, log_file=log_file)
    except lifecycle.MountError as exc:
        if ready_fd is not None:  # the daemon of a background mount: the waiting parent prints it
            sys.exit(1)
        raise click.ClickException(str(exc)) from None


@click.command()
@click.argument("mountpoint", type=click.Path(path_type=Path))
@click.option("-z", "--lazy", is_flag=True, help="Detach now even if files are open.")
def umount(mountpoint: Path, lazy: bool) -> None:
    """Unmount a dosfs mount and wait for its daemon to finish (pending commits included)."""
    from dosfs import mount as lifecycle

    try:
        lifecycle.umount(mountpoint, lazy=lazy)
    except lifecycle.MountError as exc:
        raise click.ClickException(str(exc)) from None


@click.command()
@click.argument("mountpoint", required=False, metavar="MOUNTPOINT", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="The raw JSON the daemon answers.")
@click.option("--watch", is_flag=False, flag_value="2", default=None, metavar="[SECONDS]",
              help="Refresh every SECONDS (default 2) with rates over the last interval, until "
              "Ctrl-C.")
def stats(mountpoint: Path | None, as_json: bool, watch: str | None) -> None:
    """Live statistics of a mount: requests, bytes, commits, errors and latencies per
    operation, with rates per second (the xattr user.dosfs.stats of MOUNTPOINT)."""
    from dosfs.cli.statsview import read_stats, render

    if mountpoint is None and watch is not None and not _is_number(watch):
        mountpoint, watch = Path(watch), "2"  # `stats --watch MP`: the default interval
    if mountpoint is None:
        raise click.UsageError("missing MOUNTPOINT")
    interval = None if watch is None else _interval(watch)
    before = None
    try:
        while True:
            data = read_stats(mountpoint)
            if as_json:
                emit_json(data)
            else:
                if interval is not None and sys.stdout.isatty():
                    click.clear()
                click.echo(render(data, before))
            if interval is None:
                return
            before = data
            time.sleep(interval)
    except KeyboardInterrupt:  # Ctrl-C ends --watch: what it is for, not an error
        return


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _interval(text: str) -> float:
    if not _is_number(text) or not float(text) > 0:
        raise click.UsageError(f"--watch needs a positive number of seconds, got {text!r}")
    return float(text)


VIEWS_HELP = """\b
MOUNTPOINT/nodes/ (with --aiida-db PATH|URL: an AiiDA profile's database.sqlite,
or postgresql://user:password@host:port/database for a core.psql_dos profile):
  nodes/by-pk/<pk>/...        a node's files and folders, by their names
  nodes/by-uuid/<uuid>/...    the same by uuid; a unique prefix of >= 8 characters
                              is a symlink to the full uuid
\b
Files are read-only and are their by-hash/ objects (same bytes, verification, page
cache; xattr user.dosfs.hash). A node's folder has the xattrs user.dosfs.pk, .uuid,
.node_type and .label. The database is opened read-only (AiiDA keeps storing and
packing); a new node appears at once, a deleted one is gone within 1 s. Errors: an
unknown pk, uuid or name, or an ambiguous prefix: ENOENT; any write: EROFS (EACCES).
\b
Example:
  dosfs mount ~/.aiida/repository/PROFILE/container /mnt/objs \\
      --aiida-db ~/.aiida/repository/PROFILE/database.sqlite
  ls /mnt/objs/nodes/by-pk/1234/
"""


@click.command(help=VIEWS_HELP,
               short_help="The nodes/ views of an AiiDA profile (mount --aiida-db).")
def views() -> None:
    """Describe the nodes/ views of an AiiDA profile (mount with --aiida-db)."""
    click.echo(click.get_current_context().get_help())
