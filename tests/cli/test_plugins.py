"""``molecule-box plugins add|list``: staging into the registry through the install pipeline's checks."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result

from molecule_box.cli import main


def run(tmp_path: Path, *args: str, **env: str) -> Result:
    environ = {"MOLECULE_BOX_DATA": str(tmp_path / "data"), "MOLECULE_BOX_PLUGINS_DIR": str(tmp_path / "registry"),
               **env}
    return CliRunner().invoke(main, ["plugins", *args], env=environ)


def test_add_copies_regular_files_only_and_replaces_only_when_forced(tmp_path: Path) -> None:
    source = tmp_path / "My Plugin"
    (source / "rules").mkdir(parents=True)
    (source / "plugin.yaml").write_text("name: mine\nruntimes: [langgraph]\n")
    (source / "rules" / "r.md").write_text("rule\n")
    (source / "setup.sh").write_text("#!/bin/sh\n")
    (source / "setup.sh").chmod(0o755)
    (tmp_path / "secret").write_text("outside\n")
    (source / "leak").symlink_to(tmp_path / "secret")
    refused = run(tmp_path, "add", str(source))
    assert refused.exit_code != 0 and "is not a plugin name" in refused.output
    added = run(tmp_path, "add", str(source), "--name", "mine")
    assert added.exit_code == 0, added.output
    target = tmp_path / "registry" / "mine"
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*")) == [
        "plugin.yaml", "rules", "rules/r.md", "setup.sh"]
    assert (target / "setup.sh").stat().st_mode & 0o777 == 0o755
    assert run(tmp_path, "add", str(source), "--name", "mine").exit_code != 0
    (source / "rules" / "r.md").write_text("new rule\n")
    assert run(tmp_path, "add", str(source), "--name", "mine", "--force").exit_code == 0
    assert (target / "rules" / "r.md").read_text() == "new rule\n"
    assert [p.name for p in (tmp_path / "registry").iterdir()] == ["mine"]  # no staging or old copy left
    listed = run(tmp_path, "list")
    assert listed.output == "mine\t-\tlanggraph\n"


def test_add_refuses_what_an_install_refuses_and_leaves_the_registry_alone(tmp_path: Path) -> None:
    source = tmp_path / "big"
    source.mkdir()
    (source / "blob").write_text("x" * 4096)
    over = run(tmp_path, "add", str(source), PLUGIN_INSTALL_MAX_DIR_BYTES="1024")
    assert over.exit_code == 1 and "refused: staged plugin exceeds size limit" in over.output
    (source / "blob").write_text("small")
    (source / "manifest.json").write_text(json.dumps({"sha256": "0" * 64}))
    tampered = run(tmp_path, "add", str(source))
    assert tampered.exit_code == 1 and "plugin manifest integrity check failed" in tampered.output
    unpinned = run(tmp_path, "add", "github://acme/tool")
    assert unpinned.exit_code == 1 and "unpinned github source" in unpinned.output
    assert run(tmp_path, "add", "local://big").exit_code != 0
    assert not (tmp_path / "registry").exists() or list((tmp_path / "registry").iterdir()) == []
