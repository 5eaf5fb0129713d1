"""The command line as a new user meets it (issue 13): one error style, messages in the CLI's
words, help that mentions $DOSFS_CONTAINER, human sizes, --json where a command reports, and
mount(8)'s `dosfs CONTAINER MOUNTPOINT -o OPTS` form."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from dosfs import Container
from dosfs.cli import main
from tests.terminal import on_a_terminal

DOSFS = [sys.executable, "-m", "dosfs.cli"]


def dosfs(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ, **(env or {}))
    full_env.pop("DOSFS_CONTAINER", None) if env is None else None
    return subprocess.run([*DOSFS, *args], capture_output=True, text=True, env=full_env)


def one_error_line(proc: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dosfs: error: "), proc.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    Container(tmp_path / "c").init_container()
    return tmp_path / "c"


def test_usage_errors_are_one_line_with_a_hint(tmp_path: Path, folder: Path) -> None:
    one_error_line(dosfs("add", str(folder)), 2, "missing FILE", "(try 'dosfs add --help')")
    one_error_line(dosfs("nosuchcommand"), 2, "No such command", "(try 'dosfs --help')")
    one_error_line(dosfs("status", str(folder), "--bogus"), 2, "--bogus", "dosfs status --help")
    one_error_line(dosfs("add", str(folder), str(folder / "config.json"), "--compress", "yes"),
                   2, "--compress applies to --pack only")
    one_error_line(dosfs("init", str(tmp_path / "x"), "--pack-size-target", "lots"), 2,
                   "is not a size")


def test_messages_speak_the_cli(tmp_path: Path, folder: Path) -> None:
    one_error_line(dosfs("status", str(tmp_path / "nothing")), 1, "no container at",
                   "dosfs init")
    again = dosfs("init", str(folder))  # idempotent: the same container stays
    assert again.returncode == 0 and "already container" in again.stdout, again
    one_error_line(dosfs("init", str(folder), "--hash-type", "sha1"), 1,
                   "already a container with another configuration", "hash-type sha256",
                   "nothing was changed")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_bytes(b"")
    one_error_line(dosfs("init", str(tmp_path / "full")), 1, "not empty")
    one_error_line(dosfs("init", str(tmp_path / "deep" / "er" / "c")), 1,
                   "parent folder", "does not exist")
    assert not (tmp_path / "deep").exists()
    one_error_line(dosfs("add", str(folder), str(tmp_path / "missing.txt")), 1,
                   "no such file", "missing.txt")
    one_error_line(dosfs("delete", str(folder), "a" * 64), 1, "no object", "a" * 64)
    one_error_line(dosfs("cat", str(folder), "a" * 64), 1, "no object")
    for text in ("clear=True", "Traceback", "NotInitialised", "FileExistsError"):
        assert text not in dosfs("init", str(folder)).stderr


def test_debug_and_log_file_work_after_the_subcommand(tmp_path: Path, folder: Path) -> None:
    proc = dosfs("status", str(tmp_path / "nothing"), "--debug")
    assert proc.returncode == 1 and "Traceback" in proc.stderr
    log = tmp_path / "log"
    proc = dosfs("pack", str(folder), "--log-file", str(log))
    assert proc.returncode == 0, proc.stderr


def test_help_mentions_the_container_variable_and_every_mount_option() -> None:
    runner = CliRunner()
    for command in ("init", "add", "cat", "status", "pack", "clean", "validate", "repack",
                    "delete", "backup", "mount"):
        text = runner.invoke(main, [command, "--help"]).output
        assert "DOSFS_CONTAINER" in text, command
    mount_help = runner.invoke(main, ["mount", "--help"]).output
    for option in ("ro", "allow_other", "auto_unmount", "uid=", "gid=", "umask=", "nosuid",
                   "verify=", "nolisting", "max_names=", "max_inodes=", "readahead_kb=",
                   "workers=", "fsname=", "_netdev", "x-systemd"):
        assert option in mount_help, option
    init_help = runner.invoke(main, ["init", "--help"]).output
    assert "4GiB" in init_help and "zlib+9" in init_help and "sha1" in init_help


def test_sizes_are_human(tmp_path: Path) -> None:
    proc = dosfs("init", str(tmp_path / "c"), "--pack-size-target", "512MiB")
    assert proc.returncode == 0, proc.stderr
    assert Container(tmp_path / "c").pack_size_target == 512 * 1024**2


def test_json_on_every_reporting_command(tmp_path: Path, folder: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"json please")
    added = json.loads(dosfs("add", str(folder), str(f), "--json").stdout)
    assert added == [{"hashkey": __import__("hashlib").sha256(b"json please").hexdigest(),
                      "file": str(f)}]
    packed = json.loads(dosfs("pack", str(folder), "--json").stdout)
    assert packed["packed"] == 1 and packed["loose_left"] == 0
    cleaned = json.loads(dosfs("clean", str(folder), "--json").stdout)
    assert cleaned["loose_removed"] == 0 and "sandbox_removed" in cleaned
    status = json.loads(dosfs("status", str(folder), "--json").stdout)
    assert status["count_packed"] == 1 and status["mounted_at"] == []
    report = json.loads(dosfs("validate", str(folder), "--json").stdout)
    assert report["is_valid"] is True


def test_clean_says_what_it_removed(folder: Path) -> None:
    c = Container(folder)
    c.add_object(b"soon packed")
    c.pack_all_loose()
    (folder / "sandbox" / "old.dosfs-staged").write_bytes(b"abandoned")
    os.utime(folder / "sandbox" / "old.dosfs-staged", (0, 0))
    proc = dosfs("clean", str(folder), "--sandbox-max-age", "10")
    assert proc.returncode == 0, proc.stderr
    assert "removed 1 loose copy" in proc.stdout and "removed 1 abandoned staging" in proc.stdout
    assert os.listdir(folder / "sandbox") == []


def test_container_from_the_environment_for_mount_too(tmp_path: Path, folder: Path) -> None:
    proc = dosfs("mount", str(tmp_path / "missing-mountpoint"),
                 env={"DOSFS_CONTAINER": str(folder)})
    one_error_line(proc, 1, "mountpoint", "does not exist")


def test_the_form_mount8_uses(tmp_path: Path, folder: Path) -> None:
    # mount.fuse3 runs `dosfs CONTAINER MOUNTPOINT -o OPTS`: that is `dosfs mount`
    proc = dosfs(str(folder), str(tmp_path / "no-such-mountpoint"), "-o",
                 "rw,nosuid,nodev,noatime,_netdev,nofail,x-systemd.automount,defaults")
    one_error_line(proc, 1, "mountpoint", "does not exist")
    proc = dosfs(str(folder), str(tmp_path / "no-such-mountpoint"), "-o", "frobnicate")
    one_error_line(proc, 1, "unknown mount option", "frobnicate")


def test_add_shows_progress_on_a_terminal_only(tmp_path: Path, folder: Path) -> None:
    f = tmp_path / "big"
    f.write_bytes(os.urandom(3 * 1024 * 1024))
    piped = dosfs("add", str(folder), str(f))
    assert piped.returncode == 0 and "Adding" not in piped.stderr  # no bar into a pipe or log
    status, seen = on_a_terminal([*DOSFS, "add", str(folder), str(f)])
    assert status == 0
    assert b"Adding" in seen and b"100%" in seen, seen


def test_systemd_unit_documentation_exists() -> None:
    root = Path(__file__).resolve().parent.parent
    unit = (root / "systemd" / "dosfs@.service").read_text()
    docs = [line.split("=", 1)[1].split() for line in unit.splitlines()
            if line.startswith("Documentation=")]
    assert docs, "the unit has no Documentation="
    for url in (u for group in docs for u in group):
        assert url.startswith("file://"), url
        path = Path(url[len("file://"):])
        assert (root / "docs" / path.name).is_file(), url  # the file scripts/setup installs
        if os.geteuid() == 0 and Path("/usr/local/bin/dosfs").exists():  # set up on this host
            assert path.is_file(), f"{url}: run scripts/setup"


def test_mount_help_reads_cleanly() -> None:
    from dosfs.options import OPTIONS_TABLE

    text = dosfs("mount", "--help", env={"COLUMNS": "100"}).stdout
    prose, _, rest = text.partition("\nOptions:\n")
    assert "Options for -o" in rest
    for line in prose.splitlines():
        assert "  " not in line.strip(), line  # no runs of spaces inside the description
    table = rest.split("Options for -o", 1)[1].split("\n\n")[0].splitlines()
    starts = [line.strip().split("  ")[0] for line in table if line.startswith("  ")
              and not line.startswith("    ")]
    assert starts == [name for name, _ in OPTIONS_TABLE]  # one entry per row, none cut
    ignored = " ".join(text.split("ignored", 1)[1].split("refused")[0].split())
    assert "async, sync," in ignored and "x-systemd.*" in ignored


def test_usage_lines_show_the_container_as_optional(tmp_path: Path) -> None:
    for command in ("init", "add", "cat", "status", "pack", "clean", "validate", "repack",
                    "delete", "backup", "mount", "push"):
        usage = dosfs(command, "--help").stdout.splitlines()[0]
        assert "[CONTAINER" in usage, usage
    pull = dosfs("pull", "--help").stdout
    assert "CONTAINER" not in pull and "DOSFS_CONTAINER" not in pull
    proc = subprocess.run([*DOSFS, "status"], capture_output=True, text=True, cwd=tmp_path,
                          env={k: v for k, v in os.environ.items() if k != "DOSFS_CONTAINER"})
    one_error_line(proc, 2, "missing CONTAINER (or set $DOSFS_CONTAINER)")


def test_mount_options_of_fstab_and_fuse(tmp_path: Path, folder: Path) -> None:
    nowhere = str(tmp_path / "no-such-mountpoint")
    one_error_line(dosfs("mount", str(folder), nowhere, "-o", "allow_root"), 1,
                   "allow_root is not supported", "allow_other")
    one_error_line(dosfs("mount", str(folder), nowhere, "-o", "dirsync"), 1,
                   "dirsync is not supported")
    one_error_line(dosfs("mount", str(folder), nowhere, "-o", "debug=1"), 1,
                   "debug takes no value")
    # accepted: the next complaint is the mountpoint's (or the s3 options' on a local one)
    one_error_line(dosfs("mount", str(folder), nowhere, "-o", "debug,sync"), 1,
                   "does not exist")
    (tmp_path / "mp").mkdir()
    one_error_line(dosfs("mount", str(folder), str(tmp_path / "mp"), "-o",
                         "endpoint=http://127.0.0.1:1"), 1, "endpoint is only for s3://")
    one_error_line(dosfs("mount", "s3://b/p", nowhere, "-o", "profile="), 1,
                   "profile needs a value")


def test_an_empty_stage_ends_at_100_percent(folder: Path) -> None:
    for command in ("validate", "pack"):
        status, seen = on_a_terminal([*DOSFS, command, str(folder)])
        assert status == 0
        assert b"%" in seen and seen.rsplit(b"%", 1)[0].endswith(b"100"), (command, seen)


def test_dostore_verbs_get_a_hint() -> None:
    one_error_line(dosfs("optimize"), 2, "dosfs pack --compress yes", "dosfs clean --vacuum")
    one_error_line(dosfs("create", "somewhere"), 2, "dosfs init")
    one_error_line(dosfs("add-files", "f"), 2, "dosfs add")


def test_shell_completion_as_documented() -> None:
    proc = dosfs("status", env={"_DOSFS_COMPLETE": "bash_source"})
    assert proc.returncode == 0 and "_dosfs_completion" in proc.stdout, proc.stderr
    root = Path(__file__).resolve().parent.parent
    assert "_DOSFS_COMPLETE=bash_source dosfs" in (root / "docs" / "operations.md").read_text()


def test_the_man_page_is_generated_from_the_cli_and_current() -> None:
    import shutil

    from dosfs.cli.manpage import render

    root = Path(__file__).resolve().parent.parent
    page = render(main)
    assert (root / "docs" / "dosfs.1").read_text() == page, "run scripts/manpage"
    for command in ("init", "cat", "mount", "stats", "push", "pull", "backup"):
        assert f".SS {command}\n" in page
    assert "Options for -o" in page and "credentials_file=PATH" in page
    if shutil.which("groff"):
        proc = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(root / "docs" /
                                                                           "dosfs.1")],
                              capture_output=True, text=True)
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
