"""How a write or a delete makes the next generation of a swarm workspace's files, as pure rules."""

from __future__ import annotations

import pytest
from molecule_box_swarm import configs as cf
from molecule_box_swarm.configs import config_name, merged, mounts

import molecule_box.backends.archive as ar

TREE = [ar.Entry("config.yaml", b"a"), ar.Entry("plugins", None, 0o755), ar.Entry("plugins/p/x.md", b"x")]


def names(entries: list[ar.Entry]) -> list[str]:
    return [e.name for e in entries]


def test_writes_overwrite_add_and_replace() -> None:
    out = merged(TREE, [ar.Entry("config.yaml", b"b"), ar.Entry("notes.md", b"n")])
    assert names(out) == ["config.yaml", "notes.md", "plugins", "plugins/p/x.md"]
    assert [e.data for e in out if e.name == "config.yaml"] == [b"b"]
    assert names(merged(TREE, [ar.Entry("only", b"1")], replace=True)) == ["only"]
    assert merged(TREE, [ar.Entry(ar.TOKEN_FILE, b"t")]) == sorted(TREE, key=lambda e: e.name)


def test_deletes_take_files_and_whole_directories() -> None:
    assert names(merged(TREE, [], removed=("plugins", "missing"))) == ["config.yaml"]
    assert names(merged(TREE, [], removed=("plugins/p/x.md",))) == ["config.yaml", "plugins"]


def test_a_path_through_a_file_or_a_kind_change_is_refused() -> None:
    with pytest.raises(ar.UnsafeArchive):
        merged(TREE, [ar.Entry("config.yaml/inner", b"x")])
    with pytest.raises(ar.UnsafeArchive):
        merged(TREE, [ar.Entry("plugins", b"now a file")])


def test_mounts_put_each_file_under_configs_with_its_mode_and_the_agents_user() -> None:
    generation = cf.Generation(7, "manifest", (cf.File("a/b.md", 0o640, "cid", "cname"),), ("a",))
    assert mounts(generation, (1000, 1001)) == [
        {"File": {"Name": "/configs/a/b.md", "UID": "1000", "GID": "1001", "Mode": 0o640},
         "ConfigID": "cid", "ConfigName": "cname"}]
    assert mounts(None, (0, 0)) == []
    assert len(config_name("box-with-a-long-id-0123456789", "0" * 36, 1796192489127, 4999)) <= 64
