"""The container commands: init, add, cat, status, pack, clean, validate, repack, delete,
backup. Each parses, calls the engine (dosfs.container) and reports; `--json` where it reports."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

import click

from dosfs.cli.frame import (
    CONTAINER_ENV,
    ENV_HELP,
    Progress,
    Size,
    container_argument,
    emit_json,
    human,
    open_container,
    split_container,
)

AWS_HELP_SHORT = "endpoint and credentials come from the AWS variables, as for push."
COMPRESSION_LEVELS = [f"zlib+{i}" for i in range(1, 10)]
_COMPRESS = click.Choice(["no", "yes", "auto"])


def register(main: click.Group) -> None:
    for command in (init, add, cat, status, pack, clean, validate, repack, delete, backup):
        main.add_command(command)


def _mounted_at(container: Path) -> list[str]:
    from dosfs.mount import mounts_of

    return mounts_of(container)


@click.command(epilog=ENV_HELP)
@container_argument
@click.option("--pack-size-target", type=Size(), default="4GiB", show_default=True,
              help="A pack receives objects until it is this big (e.g. 4GiB, 512MiB).")
@click.option("--loose-prefix-len", type=click.IntRange(0, 39), default=2, show_default=True,
              help="Hex digits of the key that name a loose object's folder (0: no folders).")
@click.option("--hash-type", type=click.Choice(["sha256", "sha1"]), default="sha256",
              show_default=True, help="Hash that names the objects.")
@click.option("--compression-algorithm", type=click.Choice(COMPRESSION_LEVELS),
              default="zlib+1", show_default=True, help="zlib level of compressed objects.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def init(ctx: click.Context, container: Path, pack_size_target: int, loose_prefix_len: int,
         hash_type: str, compression_algorithm: str, as_json: bool) -> None:
    """Create an empty container in CONTAINER (a new or empty folder whose parent exists).

    Idempotent: on an existing container it changes nothing and exits 0, unless an option given
    here differs from the container's configuration (exit 1).
    """
    from dosfs import Container

    path = Path(os.path.abspath(container))
    if not path.parent.is_dir():
        raise click.ClickException(
            f"cannot create {path}: its parent folder {path.parent} does not exist"
        )
    c = Container(path)
    wanted = {"pack_size_target": pack_size_target, "loose_prefix_len": loose_prefix_len,
              "hash_type": hash_type, "compression_algorithm": compression_algorithm}
    created = not c.is_initialised
    if created:
        if path.exists() and any(path.iterdir()):
            raise click.ClickException(f"{path} is not empty: init needs a new or empty folder")
        c.init_container(pack_size_target=pack_size_target, loose_prefix_len=loose_prefix_len,
                         hash_type=hash_type, compression_algorithm=compression_algorithm)
    else:
        given = {name: value for name, value in wanted.items()
                 if ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT}
        have = {name: getattr(c.config, name) for name in wanted}
        differ = [f"{name.replace('_', '-')} {have[name]} (not {value})"
                  for name, value in given.items() if have[name] != value]
        if differ:
            raise click.ClickException(
                f"{path} is already a container with another configuration: "
                + ", ".join(differ) + " (nothing was changed)"
            )
    if as_json:
        emit_json({"folder": str(c.folder), "container_id": c.container_id,
                   "created": created, **{name: getattr(c.config, name) for name in wanted}})
    elif created:
        click.echo(f"initialised container {c.container_id} in {c.folder}")
    else:
        click.echo(f"{c.folder} is already container {c.container_id} (nothing was changed)")


class _LazyFile:
    """Opens a file (or stdin for '-') only when a pack writer gets to it; counts bytes."""

    def __init__(self, name: str, progress: Progress | None = None) -> None:
        self.name = name
        self._handle: Any = None
        self._progress = progress

    def __enter__(self) -> Any:
        self._handle = sys.stdin.buffer if self.name == "-" else open(self.name, "rb")  # noqa: SIM115
        return self

    def read(self, n: int = -1) -> bytes:
        data: bytes = self._handle.read(n)
        if self._progress is not None and data:
            self._progress("update", len(data))
        return data

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None and self.name != "-":
            self._handle.close()


@click.command(epilog=ENV_HELP)
@click.argument("args", nargs=-1, required=True, metavar="[CONTAINER] FILE...")
@click.option("--pack", "to_pack", is_flag=True, help="Write straight into packs (maintenance).")
@click.option("--compress", type=_COMPRESS, help="With --pack: compress (auto: what shrinks).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def add(args: tuple[str, ...], to_pack: bool, compress: str | None, as_json: bool) -> None:
    """Store files as objects; prints `HASH  FILE` per file ('-' reads stdin)."""
    if compress is not None and not to_pack:
        raise click.UsageError("--compress applies to --pack only (loose objects are never "
                               "compressed; pack them later with dosfs pack --compress)")
    container, files = split_container(args, "FILE")
    c = open_container(container)
    for name in files:
        if name != "-" and not os.path.exists(name):
            raise click.ClickException(f"no such file: {name}")
        if name != "-" and not os.path.isfile(name):
            raise click.ClickException(f"{name} is not a regular file (add takes files)")
    progress = Progress()
    sizes = sum(os.path.getsize(n) for n in files if n != "-")
    progress("init", {"total": sizes, "description": "Adding"})
    try:
        lazy = [_LazyFile(n, progress) for n in files]
        if to_pack:
            keys = c.add_streamed_objects_to_pack(lazy, compress=compress or "no",
                                                  open_streams=True)
        else:
            keys = []
            for item in lazy:
                with item as stream:
                    keys.append(c.add_streamed_object(stream))
        progress("close", None)
    finally:
        progress.close()
    if as_json:
        emit_json([{"hashkey": k, "file": n} for k, n in zip(keys, files, strict=True)])
        return
    for key, name in zip(keys, files, strict=True):
        click.echo(f"{key}  {name}")


@click.command(epilog=ENV_HELP)
@click.argument("args", nargs=-1, required=True, metavar="[CONTAINER] HASH")
@click.option("--no-verify", is_flag=True,
              help="Write the stored bytes as they are, without hashing them.")
def cat(args: tuple[str, ...], no_verify: bool) -> None:
    """Write an object's content to stdout, verified as the mount does. HASH may be short (a
    unique prefix of at least 8 hex digits), as in by-hash/.

    An object of up to 1 MiB is hashed before its first byte is written; a bigger one streams,
    and its last piece is written only if the whole object hashed to its name: otherwise the
    output stops short and the exit status is 1.
    """
    from dosfs import InvalidHashKey, NotExistent
    from dosfs.container.verify import copy_verified

    container, keys = split_container(args, "HASH")
    if len(keys) != 1:
        raise click.UsageError("cat takes exactly one HASH")
    c = open_container(container)
    key = keys[0]
    if len(key) < c.hash_length:  # a short hash, as by-hash/ takes it
        key = _resolve_short(c, key)
    try:
        reader = c.open_object(key)
    except InvalidHashKey as exc:
        raise click.ClickException(str(exc)) from None
    except NotExistent:
        raise click.ClickException(f"no object {key} in {c.folder}") from None
    out = sys.stdout.buffer
    with reader:
        copy_verified(reader, c.hash_type, out.write, verify=not no_verify)
    out.flush()


def _resolve_short(c: Any, prefix: str) -> str:
    """The one key that starts with `prefix` (git's short hashes; the mount's rule)."""
    from dosfs.container.bulk import MIN_PREFIX

    if len(prefix) < MIN_PREFIX or prefix.strip("0123456789abcdef"):
        raise click.ClickException(
            f"invalid hash key {prefix!r}: neither a whole key nor a short one (at least "
            f"{MIN_PREFIX} lowercase hex digits)"
        )
    found = c.keys_with_prefix(prefix)
    if not found:
        raise click.ClickException(f"no object starting with {prefix} in {c.folder}")
    if len(found) > 1:
        raise click.ClickException(
            f"{prefix} is ambiguous: {', '.join(k[:len(prefix) + 4] + '…' for k in found[:3])} "
            "and maybe more start with it (give more digits)"
        )
    return str(found[0])


@click.command(epilog=ENV_HELP + " For s3:// URLs: " + AWS_HELP_SHORT)
@click.argument("container", envvar=CONTAINER_ENV, metavar="[CONTAINER|s3://BUCKET/PREFIX]")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="s3:// only: seconds before one request to the server gives up.")
def status(container: str, as_json: bool, timeout: float) -> None:
    """Counts and sizes of a container, or of what is published at s3://BUCKET/PREFIX.

    For s3://: the current generation (number, creation time in UTC), its object count, packs,
    segments and their bytes, the index snapshot's size, the generations in the bucket and
    which of them a prune would delete now (grace 24 h).
    """
    if container.startswith("s3://"):
        from dosfs.cli.remote import remote_status

        remote_status(container, timeout=timeout, as_json=as_json)
        return
    c = open_container(Path(container), check_index=True)
    count, size, config = c.count_objects(), c.get_total_size(), c.config
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
        "mounted_at": _mounted_at(c.folder),
    }
    from dosfs.mount import daemon_died

    info["dead_mounts"] = [p for p in info["mounted_at"] if daemon_died(p)]
    if as_json:
        emit_json(info)
        return
    click.echo(f"container   {info['folder']} ({config.container_id})")
    click.echo(f"objects     {count.packed} packed in {count.pack_files} pack file(s), "
               f"{count.loose} loose")
    click.echo(
        f"sizes       packed {human(size.total_size_packed)} "
        f"({human(size.total_size_packed_on_disk)} on disk, pack files "
        f"{human(size.total_size_packfiles_on_disk)}), loose {human(size.total_size_loose)}, "
        f"index {human(size.total_size_packindexes_on_disk)}"
    )
    click.echo(f"config      {config.hash_type}, loose prefix {config.loose_prefix_len}, pack "
               f"target {human(config.pack_size_target)}, {config.compression_algorithm}")
    if info["busy"]:
        click.echo(f"busy        {info['busy']}")
    for point in info["mounted_at"]:
        dead = point in info["dead_mounts"]
        click.echo(f"mounted at  {point}" + (f" (its daemon has died: dosfs umount {point}, "
                                              "then mount again)" if dead else ""))


@click.command(epilog=ENV_HELP)
@container_argument
@click.option("--compress", type=_COMPRESS, default="no", show_default=True,
              help="Compress what is packed (auto: what shrinks).")
@click.option("--keep-loose", is_flag=True, help="Keep the loose copies of packed objects.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def pack(container: Path, compress: str, keep_loose: bool, as_json: bool) -> None:
    """Move loose objects into packs (then remove their loose copies)."""
    c = open_container(container, check_index=True)
    before = c.count_objects()
    progress = Progress()
    try:
        c.pack_all_loose(compress=compress, callback=progress, clean_loose_per_pack=not keep_loose)
    finally:
        progress.close()
    after = c.count_objects()
    if as_json:
        emit_json({"packed": after.packed - before.packed, "loose_left": after.loose,
                   "pack_files": after.pack_files})
        return
    click.echo(f"packed {after.packed - before.packed} object(s); {after.loose} loose left")


@click.command(epilog=ENV_HELP)
@container_argument
@click.option("--vacuum", is_flag=True, help="Also VACUUM the SQLite index.")
@click.option("--sandbox-max-age", type=click.FloatRange(min=0), default=3600.0,
              show_default=True, metavar="SECONDS",
              help="Remove abandoned staging files older than this.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def clean(container: Path, vacuum: bool, sandbox_max_age: float, as_json: bool) -> None:
    """Remove loose copies of packed objects and leftovers of crashed writers; commit files a
    dead mount had closed but not committed."""
    c = open_container(container)
    report = c.clean_storage(vacuum=vacuum, sandbox_max_age=sandbox_max_age)
    if as_json:
        emit_json(report.to_dict())
        return
    lines = [
        f"removed {report.loose_removed} loose cop{'y' if report.loose_removed == 1 else 'ies'} "
        "of packed objects",
        f"removed {len(report.sandbox_removed)} abandoned staging file(s)",
    ]
    if report.recovered:
        lines.append(f"committed {len(report.recovered)} staging file(s) a dead mount had closed")
    if report.duplicates:
        lines.append(f"resolved duplicates of {len(report.duplicates)} object(s)")
    if report.pack_locks_removed:
        lines.append(f"removed stale pack locks: {', '.join(report.pack_locks_removed)}")
    if report.repack_leftovers_removed:
        lines.append("removed leftovers of an interrupted repack: "
                     + ", ".join(report.repack_leftovers_removed))
    if vacuum:
        lines.append("vacuumed the index")
    click.echo("\n".join(lines))


@click.command(epilog=ENV_HELP)
@container_argument
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
def validate(container: Path, as_json: bool) -> None:
    """Re-hash every object and check the packs; exit status 1 if anything is wrong."""
    c = open_container(container, check_index=True)
    progress = Progress()
    try:
        report = c.validate_report(callback=progress)
    finally:
        progress.close()
    if as_json:
        emit_json({**report.to_dict(), "is_valid": report.is_valid()})
    else:
        click.echo(report.summary())
    if not report.is_valid():
        sys.exit(1)


@click.command(epilog=ENV_HELP)
@container_argument
@click.option("--compress", type=click.Choice(["keep", "no", "yes", "auto"]), default="keep",
              show_default=True, help="Compression of the rewritten objects.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def repack(container: Path, compress: str, as_json: bool) -> None:
    """Rewrite packs without the holes left by deleted objects. A mount of the container keeps
    serving: open files read their pinned bytes, new reads find the objects' new places."""
    c = open_container(container, check_index=True)
    for point in _mounted_at(c.folder):
        click.echo(f"dosfs: note: {c.folder} is mounted at {point}; the mount keeps serving "
                   "during the repack", err=True)
    before = c.get_total_size().total_size_packfiles_on_disk
    progress = Progress()
    try:
        c.repack(compress_mode=compress, callback=progress)
    finally:
        progress.close()
    after = c.get_total_size().total_size_packfiles_on_disk
    if as_json:
        emit_json({"packfiles_bytes_before": before, "packfiles_bytes_after": after})
        return
    click.echo(f"repacked: pack files {human(before)} -> {human(after)}")


@click.command(epilog=ENV_HELP)
@click.argument("args", nargs=-1, required=True, metavar="[CONTAINER] HASH...")
@click.option("--force", is_flag=True, help="Delete even while the container is mounted.")
@click.option("--json", "as_json", is_flag=True,
              help="Machine-readable output ({deleted: [...], missing: [...]}).")
def delete(args: tuple[str, ...], force: bool, as_json: bool) -> None:
    """Delete objects; exit status 1 if some did not exist. Refused while the container is
    mounted (its by-hash/ names would vanish, links in incoming/ dangle) unless --force."""
    container, keys = split_container(args, "HASH")
    c = open_container(container, check_index=True)
    mounted = _mounted_at(c.folder)
    if mounted and not force:
        raise click.ClickException(
            f"{c.folder} is mounted at {', '.join(mounted)}: deleted objects would vanish from "
            "by-hash/ (open files keep reading them); rerun with --force to delete anyway"
        )
    deleted = set(c.delete_objects(list(keys)))
    missing = [k for k in keys if k not in deleted]
    if as_json:
        emit_json({"deleted": [k for k in keys if k in deleted], "missing": missing})
    else:
        for key in keys:
            if key in deleted:
                click.echo(f"deleted {key}")
    if missing:
        raise click.ClickException(
            f"no object {missing[0]} in {c.folder}"
            + (f" (and {len(missing) - 1} more not found)" if len(missing) > 1 else "")
        )


@click.command(epilog=ENV_HELP)
@click.argument("args", nargs=-1, required=True, metavar="[CONTAINER] DEST")
@click.option("--keep", type=click.IntRange(min=0), default=1, show_default=True,
              help="Previous backups to keep in DEST besides the new one (as dostore).")
@click.option("--rsync-exe", metavar="PATH",
              help="rsync to use; for a local DEST, copy with it instead of dosfs's own copier.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def backup(args: tuple[str, ...], keep: int, rsync_exe: str | None, as_json: bool) -> None:
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
    c = open_container(container, check_index=True)
    progress = Progress()
    try:
        result = run_backup(c, dest, keep=keep, rsync_exe=rsync_exe, callback=progress)
    finally:
        progress.close()
        c.close()
    for warning in result.warnings:
        click.echo(f"dosfs: warning: {warning}", err=True)
    if as_json:
        emit_json(dataclasses.asdict(result))
        return
    click.echo(result.folder)
    if result.method != "copy":
        return
    click.echo(
        f"dosfs: {result.copied_files} file(s) copied ({human(result.copied_bytes)}), "
        f"{result.linked_files} hard-linked to the previous backup"
        + (f", {len(result.removed)} old backup(s) removed" if result.removed else ""),
        err=True,
    )
