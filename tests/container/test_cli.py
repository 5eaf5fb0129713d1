"""The container subcommands of `dosfs` (init, add, cat, status, pack, clean, validate, repack,
delete), driven through click's CliRunner."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from dosfs import Container
from dosfs.cli import main


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def run(
    runner: CliRunner,
    *args: str,
    input: bytes | None = None,
    env: dict | None = None,
    code: int = 0,
):  # type: ignore[no-untyped-def]
    result = runner.invoke(main, list(args), input=input, env=env, catch_exceptions=False)
    assert result.exit_code == code, (
        result.output,
        result.stderr if hasattr(result, "stderr") else "",
    )
    return result


def test_full_cycle(runner: CliRunner, tmp_path: Path) -> None:
    folder = tmp_path / "c"
    run(runner, "init", str(folder), "--pack-size-target", "1000")
    files = []
    for i in range(5):
        f = tmp_path / f"f{i}"
        f.write_bytes(b"file %d " % i * (i * 100 + 1))
        files.append(f)
    out = run(runner, "add", str(folder), *map(str, files)).output.splitlines()
    assert out == [f"{hashlib.sha256(f.read_bytes()).hexdigest()}  {f}" for f in files]
    keys = [line.split()[0] for line in out]

    piped = run(runner, "add", str(folder), "-", input=b"from stdin").output
    assert piped.split()[0] == hashlib.sha256(b"from stdin").hexdigest()

    status = json.loads(run(runner, "status", str(folder), "--json").output)
    assert status["count_loose"] == 6 and status["count_packed"] == 0 and status["busy"] is None
    assert "6 loose" in run(runner, "status", str(folder)).output

    assert (
        "packed 6 object(s); 0 loose left"
        in run(runner, "pack", str(folder), "--compress", "auto").output
    )
    assert run(runner, "cat", str(folder), keys[3]).stdout_bytes == files[3].read_bytes()

    out = run(runner, "delete", str(folder), keys[0], "0" * 64, code=1)
    assert f"deleted {keys[0]}" in out.output
    run(runner, "repack", str(folder))
    run(runner, "clean", str(folder), "--vacuum")
    assert "OK" in run(runner, "validate", str(folder)).output
    report = json.loads(run(runner, "validate", str(folder), "--json").output)
    assert report["is_valid"] and report["checked_packed"] == 5

    c = Container(folder)
    assert c.count_objects().packed == 5 and c.count_objects().loose == 0


def test_add_to_packs(runner: CliRunner, tmp_path: Path) -> None:
    folder = tmp_path / "c"
    run(runner, "init", str(folder))
    f = tmp_path / "big"
    f.write_bytes(b"z" * 100_000)
    out = run(runner, "add", str(folder), "--pack", "--compress", "yes", str(f)).output
    key = out.split()[0]
    meta = Container(folder).get_object_meta(key)
    assert meta.type == "packed" and meta.pack_compressed


def test_container_from_environment(runner: CliRunner, tmp_path: Path) -> None:
    folder = tmp_path / "c"
    env = {"DOSFS_CONTAINER": str(folder)}
    run(runner, "init", env=env)
    f = tmp_path / "f"
    f.write_bytes(b"env")
    key = run(runner, "add", str(f), env=env).output.split()[0]
    assert run(runner, "cat", key, env=env).stdout_bytes == b"env"
    assert json.loads(run(runner, "status", "--json", env=env).output)["count_loose"] == 1
    run(runner, "pack", env=env)
    run(runner, "validate", env=env)
    run(runner, "delete", key, env=env)


def test_errors_are_clean(runner: CliRunner, tmp_path: Path) -> None:
    folder = tmp_path / "c"
    result = runner.invoke(main, ["status", str(folder)])
    assert result.exit_code == 1 and "no container at" in result.output
    folder.mkdir()
    result = runner.invoke(main, ["status", str(folder)])
    assert result.exit_code == 1 and "not an initialised" in result.output
    folder.rmdir()
    run(runner, "init", str(folder))
    result = runner.invoke(main, ["cat", str(folder), "nothex"])
    assert result.exit_code == 1 and "invalid hash key" in result.output
    result = runner.invoke(main, ["cat", str(folder), "0" * 64])
    assert result.exit_code == 1 and "no object" in result.output
    result = runner.invoke(main, ["add", str(folder), str(tmp_path / "missing")])
    assert result.exit_code == 1 and "no such file" in result.output
    result = runner.invoke(main, ["add", str(folder)])
    assert result.exit_code == 2
    result = runner.invoke(main, ["init", str(folder)])
    assert result.exit_code == 0 and "already" in result.output  # idempotent


def test_validate_reports_problems(runner: CliRunner, tmp_path: Path) -> None:
    folder = tmp_path / "c"
    run(runner, "init", str(folder))
    c = Container(folder)
    key = c.add_object(b"good")
    (folder / "loose" / key[:2] / key[2:]).write_bytes(b"evil")
    result = runner.invoke(main, ["validate", str(folder)])
    assert result.exit_code == 1
    assert "invalid_hashes_loose" in result.output and key in result.output
