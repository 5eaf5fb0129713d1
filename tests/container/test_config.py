"""config.json, layout, initialisation and hash-key validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dosfs import Container, InvalidContainer, InvalidHashKey, NotExistent, NotInitialised
from dosfs.container.config import ContainerConfig, Layout, is_valid_pack_name, parse_compression


def test_init_writes_disk_objectstore_layout(container: Container, folder: Path) -> None:
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json",
        "duplicates",
        "loose",
        "packs",
        "packs.idx",
        "sandbox",
    ]
    config = json.loads((folder / "config.json").read_text())
    assert config["container_version"] == 1
    assert config["loose_prefix_len"] == 2
    assert config["pack_size_target"] == 4 * 1024**3
    assert config["hash_type"] == "sha256"
    assert config["compression_algorithm"] == "zlib+1"
    assert len(config["container_id"]) == 32
    assert container.container_id == config["container_id"]
    assert container.hash_length == 64
    assert container.is_initialised


def test_not_initialised_names_the_path(tmp_path: Path) -> None:
    c = Container(tmp_path / "nothing")
    assert not c.is_initialised
    with pytest.raises(NotInitialised, match="nothing"):
        c.get_object_content("0" * 64)
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(NotInitialised, match="loose"):
        Container(tmp_path / "half").count_objects()


def test_init_refuses_existing_or_non_empty(
    container: Container, folder: Path, tmp_path: Path
) -> None:
    with pytest.raises(FileExistsError):
        Container(folder).init_container()
    other = tmp_path / "other"
    other.mkdir()
    (other / "stray").write_text("x")
    with pytest.raises(FileExistsError):
        Container(other).init_container()


def test_init_clear_wipes(container: Container, folder: Path) -> None:
    h = container.add_object(b"x")
    old_id = container.container_id
    container.init_container(clear=True, loose_prefix_len=0, pack_size_target=100)
    assert container.container_id != old_id
    assert not container.has_object(h)
    assert container.loose_prefix_len == 0
    assert container.pack_size_target == 100


@pytest.mark.parametrize(
    "kwargs",
    [
        {"loose_prefix_len": -1},
        {"pack_size_target": 0},
        {"hash_type": "md5"},
        {"compression_algorithm": "zstd+1"},
        {"compression_algorithm": "zlib+0"},
    ],
)
def test_init_rejects_bad_settings(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Container(tmp_path / "c").init_container(**kwargs)


def test_malformed_config(tmp_path: Path) -> None:
    c = Container(tmp_path / "c")
    c.init_container()
    (tmp_path / "c" / "config.json").write_text(json.dumps({"hash_type": "md5"}))
    with pytest.raises(InvalidContainer, match="hash_type"):
        Container(tmp_path / "c").count_objects()
    (tmp_path / "c" / "config.json").write_text("not json")
    with pytest.raises(NotInitialised, match="JSON"):
        Container(tmp_path / "c").count_objects()


def test_unknown_config_keys_are_kept() -> None:
    cfg = ContainerConfig.from_json(
        {"hash_type": "sha1", "future": 1, "loose_prefix_len": 0}, Path("x")
    )
    assert cfg.hash_length == 40
    assert cfg.to_json()["future"] == 1


def test_sha1_container(tmp_path: Path) -> None:
    c = Container(tmp_path / "c")
    c.init_container(hash_type="sha1")
    h = c.add_object(b"abc")
    assert h == "a9993e364706816aba3e25717850c26c9cd0d89d"
    assert c.hash_length == 40
    assert c.get_object_content(h) == b"abc"


@pytest.mark.parametrize(
    "name",
    ["", "0" * 63, "0" * 65, "A" * 64, "g" * 64, "../" + "0" * 61, "0" * 63 + "\n", None, 5],
)
def test_invalid_hashkeys_rejected_before_any_path(container: Container, name: object) -> None:
    assert not container.is_valid_hashkey(name)  # type: ignore[arg-type]
    with pytest.raises(InvalidHashKey):
        container.get_object_content(name)  # type: ignore[arg-type]
    with pytest.raises(NotExistent):  # InvalidHashKey is a NotExistent too
        container.open_object(name)  # type: ignore[arg-type]
    with pytest.raises(InvalidHashKey):
        container.get_object_meta(name)  # type: ignore[arg-type]
    assert not container.has_object(name)  # type: ignore[arg-type]


def test_layout_paths(container: Container) -> None:
    layout: Layout = container.layout
    h = "ab" + "0" * 62
    assert layout.loose_path(h).endswith("/loose/ab/" + "0" * 62)
    assert layout.pack_path(3).endswith("/packs/3")
    assert layout.pack_path(-1).endswith("/packs/-1")


def test_pack_names_and_compression_parsing() -> None:
    assert is_valid_pack_name("0") and is_valid_pack_name("12")
    assert not is_valid_pack_name("01") and not is_valid_pack_name("-1")
    assert not is_valid_pack_name("1.lock") and not is_valid_pack_name("")
    assert parse_compression("zlib+9") == 9
    with pytest.raises(ValueError):
        parse_compression("zlib")
