"""The remote commands: push, pull (s3:// URLs; endpoint and credentials from the standard AWS
environment and config). Each parses, calls dosfs.remote and reports; `--json` where it reports."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from dosfs.cli.frame import CONTAINER_ENV, ENV_HELP, emit_json, human, open_container

AWS_HELP_PULL = (
    "S3 endpoint and credentials come from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, "
    "AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_PROFILE and ~/.aws/config, as for the aws CLI."
)
AWS_HELP = AWS_HELP_PULL + " " + ENV_HELP


class TransferBar:
    """push's and pull's progress (bytes moved of bytes to move) as a bar on a terminal,
    nothing otherwise; a transfer of nothing shows a full bar."""

    def __init__(self, enabled: bool, label: str) -> None:
        self.enabled = enabled
        self.label = label
        self._bar: Any = None

    def update(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self._bar is None:
            self._bar = click.progressbar(length=max(total, 1), label=self.label,
                                          file=sys.stderr)
            self._bar.__enter__()
        target = self._bar.length if done >= total else done
        self._bar.update(target - self._bar.pos)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


def register(main: click.Group) -> None:
    for command in (push, pull):
        main.add_command(command)


@click.command(epilog=AWS_HELP)
@click.argument("args", nargs=-1, required=True, metavar="[CONTAINER] s3://BUCKET/PREFIX")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="Seconds before one request to the server gives up (retried with backoff).")
@click.option("--force", is_flag=True,
              help="Replace what is published there even if it is another container.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def push(args: tuple[str, ...], timeout: float, force: bool, as_json: bool) -> None:
    """Publish a container (it may be in use) to S3 as a new generation.

    Incremental: only bytes not yet in the bucket go up; the pointer to the new generation is
    written last, so readers see the old or the new generation whole. Creates the bucket if
    missing. A prefix that holds another container (another container id) is refused unless
    --force.
    """
    from dosfs.remote.push import push as run_push

    if len(args) == 2:
        container, target = Path(args[0]), args[1]
    elif len(args) == 1 and os.environ.get(CONTAINER_ENV):
        container, target = Path(os.environ[CONTAINER_ENV]), args[0]
    else:
        raise click.UsageError("expected [CONTAINER] s3://BUCKET/PREFIX")
    open_container(container).close()  # the CLI's clear errors for a missing container
    bar = TransferBar(enabled=sys.stderr.isatty() and not as_json, label="uploading")
    try:
        report = run_push(container, target, timeout=timeout, progress=bar.update, force=force)
    finally:
        bar.close()
    if as_json:
        emit_json(vars(report))
        return
    if report.unchanged:
        click.echo(f"{target}: up to date (generation {report.generation})")
        return
    click.echo(f"{target}: generation {report.generation}, {report.objects} objects; sent "
               f"{human(report.uploaded_bytes)} in {report.uploaded_objects} upload(s), "
               f"{report.skipped_segments} segment(s) already there")


@click.command(epilog=AWS_HELP_PULL)
@click.argument("target", metavar="s3://BUCKET/PREFIX")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@click.option("--timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="Seconds before one request to the server gives up (retried with backoff).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def pull(target: str, dest: Path, timeout: float, as_json: bool) -> None:
    """Make or update a local container DEST from a published one (every byte verified)."""
    from dosfs.remote.pull import pull as run_pull

    bar = TransferBar(enabled=sys.stderr.isatty() and not as_json, label="fetching")
    try:
        report = run_pull(target, dest, timeout=timeout, progress=bar.update)
    finally:
        bar.close()
    if as_json:
        emit_json(vars(report))
        return
    click.echo(f"{dest}: generation {report.generation}: fetched {report.fetched} objects "
               f"({human(report.fetched_bytes)}), {report.already_here} already there")


def remote_status(target: str, *, timeout: float, as_json: bool) -> None:
    """`dosfs status s3://…` (the status command dispatches here)."""
    from dosfs.remote.status import status as run_status

    st = run_status(target, timeout=timeout)
    if as_json:
        emit_json(st.to_json())
        return
    size = "" if st.objects_size is None else f" ({human(st.objects_size)})"
    click.echo(f"remote      {st.url} ({st.container_id})")
    click.echo(f"generation  {st.generation}, created {st.created}")
    click.echo(f"objects     {st.objects}{size}")
    click.echo(f"packs       {st.packs} in {st.segments} segment(s), {human(st.segments_bytes)}")
    click.echo(f"index       {human(st.index_size)} (zlib'ed snapshot)")
    click.echo(f"config      {st.hash_type}, {st.compression_algorithm}")
    doomed = ", ".join(map(str, st.prune_candidates)) or "none"
    click.echo(f"generations {', '.join(map(str, st.generations))} (prunable now: {doomed})")
