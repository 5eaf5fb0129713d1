"""The `dosfs` command line: parses arguments and calls the engine or the mount; no logic here."""

from __future__ import annotations

import json
import os
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


# --- container commands (owner: engine; logic lives in dosfs/container/) ----------------------
# Each takes the container folder as its first positional argument, or $DOSFS_CONTAINER.

CONTAINER_ENV = "DOSFS_CONTAINER"
_container_arg = click.argument(
    "container", envvar=CONTAINER_ENV, type=click.Path(file_okay=False, path_type=Path)
)


def _split_container(args: tuple[str, ...], what: str) -> tuple[Path, tuple[str, ...]]:
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


def _open(container: Path) -> Any:
    from dosfs import Container

    c = Container(container)
    c.layout  # noqa: B018 - raises NotInitialised (naming the folder) right away
    return c


class _Progress:
    """disk-objectstore style progress callback -> a click progress bar, only on a terminal."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
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
        elif action == "close":
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


_COMPRESS = click.Choice(["no", "yes", "auto"])


@main.command()
@_container_arg
@click.option("--pack-size-target", type=int, default=4 * 1024**3, show_default=True)
@click.option("--loose-prefix-len", type=int, default=2, show_default=True)
@click.option("--hash-type", type=click.Choice(["sha256", "sha1"]), default="sha256")
@click.option("--compression-algorithm", default="zlib+1", show_default=True)
def init(
    container: Path,
    pack_size_target: int,
    loose_prefix_len: int,
    hash_type: str,
    compression_algorithm: str,
) -> None:
    """Create an empty container in CONTAINER (an empty or new folder)."""
    from dosfs import Container

    c = Container(container)
    c.init_container(
        pack_size_target=pack_size_target,
        loose_prefix_len=loose_prefix_len,
        hash_type=hash_type,
        compression_algorithm=compression_algorithm,
    )
    click.echo(f"initialised container {c.container_id} in {c.folder}")


class _LazyFile:
    """Opens a file (or stdin for '-') only when a pack writer gets to it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._handle: Any = None

    def __enter__(self) -> Any:
        self._handle = sys.stdin.buffer if self.name == "-" else open(self.name, "rb")  # noqa: SIM115
        return self._handle

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None and self.name != "-":
            self._handle.close()


@main.command(context_settings={"ignore_unknown_options": False})
@click.argument("args", nargs=-1, required=True, metavar="[CONTAINER] FILE...")
@click.option("--pack", "to_pack", is_flag=True, help="Write straight into packs (maintenance).")
@click.option("--compress", type=_COMPRESS, default="no", help="With --pack: compression.")
def add(args: tuple[str, ...], to_pack: bool, compress: str) -> None:
    """Store files as objects; prints `HASH  FILE` per file ('-' reads stdin)."""
    container, files = _split_container(args, "FILE")
    c = _open(container)
    for name in files:
        if name != "-" and not os.path.isfile(name):
            raise click.UsageError(f"not a file: {name}")
    if to_pack:
        keys = c.add_streamed_objects_to_pack(
            [_LazyFile(n) for n in files], compress=compress, open_streams=True
        )
        for key, name in zip(keys, files, strict=True):
            click.echo(f"{key}  {name}")
        return
    for name in files:
        with _LazyFile(name) as handle:
            key = c.add_streamed_object(handle)
        click.echo(f"{key}  {name}")


@main.command()
@click.argument("args", nargs=-1, required=True, metavar="[CONTAINER] HASH")
def cat(args: tuple[str, ...]) -> None:
    """Write an object's content to stdout."""
    container, keys = _split_container(args, "HASH")
    if len(keys) != 1:
        raise click.UsageError("cat takes exactly one HASH")
    c = _open(container)
    out = sys.stdout.buffer
    with c.open_object(keys[0]) as reader:
        offset = 0
        while offset < reader.size:
            chunk = reader.pread(offset, 1024 * 1024)
            out.write(chunk)
            offset += len(chunk)
    out.flush()


@main.command()
@_container_arg
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(container: Path, as_json: bool) -> None:
    """Counts and sizes of a container."""
    c = _open(container)
    count = c.count_objects()
    size = c.get_total_size()
    config = c.config
    info = {
        "folder": str(c.folder),
        "container_id": config.container_id,
        "hash_type": config.hash_type,
        "loose_prefix_len": config.loose_prefix_len,
        "pack_size_target": config.pack_size_target,
        "compression_algorithm": config.compression_algorithm,
        **{f"count_{k}": v for k, v in count.to_dict().items()},
        **size.to_dict(),
        "busy": c.lock.holder() if c.lock.is_held_elsewhere() else None,
    }
    if as_json:
        click.echo(json.dumps(info, indent=2, sort_keys=True))
        return
    click.echo(f"container   {info['folder']} ({config.container_id})")
    click.echo(
        f"objects     {count.packed} packed in {count.pack_files} pack file(s), {count.loose} loose"
    )
    click.echo(
        f"sizes       packed {_human(size.total_size_packed)} "
        f"({_human(size.total_size_packed_on_disk)} on disk, pack files "
        f"{_human(size.total_size_packfiles_on_disk)}), loose {_human(size.total_size_loose)}, "
        f"index {_human(size.total_size_packindexes_on_disk)}"
    )
    click.echo(
        f"config      {config.hash_type}, loose prefix {config.loose_prefix_len}, pack target "
        f"{_human(config.pack_size_target)}, {config.compression_algorithm}"
    )
    if info["busy"]:
        click.echo(f"busy        {info['busy']}")


def _human(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(n)  # pragma: no cover


@main.command()
@_container_arg
@click.option("--compress", type=_COMPRESS, default="no", show_default=True)
@click.option("--keep-loose", is_flag=True, help="Keep the loose copies of packed objects.")
def pack(container: Path, compress: str, keep_loose: bool) -> None:
    """Move loose objects into packs (then remove their loose copies)."""
    c = _open(container)
    before = c.count_objects()
    progress = _Progress()
    try:
        c.pack_all_loose(compress=compress, callback=progress, clean_loose_per_pack=not keep_loose)
    finally:
        progress.close()
    after = c.count_objects()
    click.echo(f"packed {after.packed - before.packed} object(s); {after.loose} loose left")


@main.command()
@_container_arg
@click.option("--vacuum", is_flag=True, help="Also VACUUM the SQLite index.")
def clean(container: Path, vacuum: bool) -> None:
    """Remove loose copies of packed objects and leftovers of crashed writers."""
    c = _open(container)
    c.clean_storage(vacuum=vacuum)
    click.echo("clean")


@main.command()
@_container_arg
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
def validate(container: Path, as_json: bool) -> None:
    """Re-hash every object and check the packs; exit code 1 if anything is wrong."""
    c = _open(container)
    progress = _Progress()
    try:
        report = c.validate_report(callback=progress)
    finally:
        progress.close()
    if as_json:
        click.echo(json.dumps({**report.to_dict(), "is_valid": report.is_valid()}, indent=2))
    else:
        click.echo(report.summary())
    if not report.is_valid():
        sys.exit(1)


@main.command()
@_container_arg
@click.option(
    "--compress",
    type=click.Choice(["keep", "no", "yes", "auto"]),
    default="keep",
    show_default=True,
)
def repack(container: Path, compress: str) -> None:
    """Rewrite packs without the holes left by deleted objects."""
    c = _open(container)
    before = c.get_total_size().total_size_packfiles_on_disk
    progress = _Progress()
    try:
        c.repack(compress_mode=compress, callback=progress)
    finally:
        progress.close()
    after = c.get_total_size().total_size_packfiles_on_disk
    click.echo(f"repacked: pack files {_human(before)} -> {_human(after)}")


@main.command()
@click.argument("args", nargs=-1, required=True, metavar="[CONTAINER] HASH...")
def delete(args: tuple[str, ...]) -> None:
    """Delete objects; exit code 1 if some did not exist."""
    container, keys = _split_container(args, "HASH")
    c = _open(container)
    deleted = set(c.delete_objects(list(keys)))
    for key in keys:
        if key in deleted:
            click.echo(f"deleted {key}")
        else:
            click.echo(f"dosfs: not found: {key}", err=True)
    if any(k not in deleted for k in keys):
        sys.exit(1)


@main.command()
@click.argument("args", nargs=-1, required=True, metavar="[CONTAINER] DEST")
@click.option(
    "--keep",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Previous backups to keep in DEST besides the new one (as dostore).",
)
@click.option(
    "--rsync-exe",
    metavar="PATH",
    help="rsync to use; for a local DEST, copy with it instead of dosfs's own copier.",
)
def backup(args: tuple[str, ...], keep: int, rsync_exe: str | None) -> None:
    """Back up a container (it may be in use) into DEST, in dostore's backup layout.

    DEST is a folder or [user@]host:path (rsync over ssh). Each backup is a complete container
    DEST/backup_<timestamp>_<random>; DEST/last-backup points at the newest, and unchanged files
    are hard-links to the previous backup. Prints the folder made.
    """
    from dosfs.container.backup import backup as run_backup

    if len(args) == 2:
        container, dest = Path(args[0]), args[1]
    elif len(args) == 1 and os.environ.get(CONTAINER_ENV):
        container, dest = Path(os.environ[CONTAINER_ENV]), args[0]
    elif len(args) == 1:
        raise click.UsageError(f"missing CONTAINER (or set ${CONTAINER_ENV}) before DEST")
    else:
        raise click.UsageError("expected [CONTAINER] DEST")
    c = _open(container)
    progress = _Progress()
    try:
        result = run_backup(c, dest, keep=keep, rsync_exe=rsync_exe, callback=progress)
    finally:
        progress.close()
        c.close()
    for warning in result.warnings:
        click.echo(f"dosfs: warning: {warning}", err=True)
    click.echo(result.folder)
    if result.method != "copy":
        return
    click.echo(
        f"dosfs: {result.copied_files} file(s) copied ({_human(result.copied_bytes)}), "
        f"{result.linked_files} hard-linked to the previous backup"
        + (f", {len(result.removed)} old backup(s) removed" if result.removed else ""),
        err=True,
    )


if __name__ == "__main__":  # pragma: no cover
    main()
