"""dosfs(1): the man page, generated from the command line's own help (so it cannot drift).

`python -m dosfs.cli.manpage > dosfs.1` (scripts/manpage writes docs/dosfs.1). Each command's
help is set as click prints it (fixed width), inside roff's no-fill blocks.
"""

from __future__ import annotations

import click

import dosfs

WIDTH = 78
#: as the group's context_settings say (click caches the help option of the first context)
HELP_NAMES = ["-h", "--help"]


def _roff(text: str) -> str:
    """Plain text as roff: backslashes escaped, no line read as a request."""
    lines = []
    for line in text.replace("\\", "\\e").splitlines():
        lines.append("\\&" + line if line.startswith((".", "'")) else line)
    return "\n".join(lines)


def _help(command: click.Command, name: str, parent: click.Context | None) -> str:
    ctx = click.Context(command, info_name=name, parent=parent, terminal_width=WIDTH,
                        max_content_width=WIDTH, help_option_names=HELP_NAMES)
    return command.get_help(ctx)


def render(group: click.Group) -> str:
    top = click.Context(group, info_name="dosfs", terminal_width=WIDTH, max_content_width=WIDTH,
                        help_option_names=HELP_NAMES)
    parts = [
        f'.TH DOSFS 1 "" "dosfs {dosfs.__version__}" "User Commands"',
        ".SH NAME",
        "dosfs \\- a disk-objectstore compatible object store, and a FUSE mount of it",
        ".SH SYNOPSIS",
        ".B dosfs",
        "[\\fB--debug\\fR] [\\fB--log-file\\fR \\fIFILE\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]...",
        ".br",
        ".B dosfs",
        "\\fICONTAINER MOUNTPOINT\\fR \\fB-o\\fR \\fIOPTS\\fR   (as mount(8) runs it)",
        ".SH DESCRIPTION",
        ".nf",
        _roff(group.get_help(top)),
        ".fi",
        ".SH COMMANDS",
    ]
    for name in group.list_commands(top):
        command = group.commands[name]
        if command.hidden:
            continue
        parts += [f".SS {name}", ".nf", _roff(_help(command, name, top)), ".fi"]
    parts += [
        ".SH ENVIRONMENT",
        ".TP",
        ".B DOSFS_CONTAINER",
        "the container of commands given none",
        ".TP",
        ".B AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ...",
        "the S3 endpoint and credentials of push, pull, status and mounts of s3:// URLs",
        ".SH SEE ALSO",
        "mount(8), fusermount3(1); docs/operations.md of the dosfs sources",
    ]
    return "\n".join(parts) + "\n"


def main() -> None:
    from dosfs.cli import main as dosfs_main

    click.echo(render(dosfs_main), nl=False)


if __name__ == "__main__":
    main()
