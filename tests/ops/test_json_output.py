"""``--json`` on the operator's commands too (issue #11 item 5): ``backup``, ``restore``, ``config`` and
``systemd install`` print one JSON document for scripts, as ``doctor`` and the API commands do."""

from __future__ import annotations

import json
from pathlib import Path

from molecule_box.config import SETTINGS, all_settings

from .conftest import BoxProcess, acli, box_env, cli, free_port


async def test_backup_and_restore_print_json(box_process: BoxProcess, tmp_path: Path) -> None:
    await box_process.start()
    backup_dir = tmp_path / "backup"
    made = await acli("backup", str(backup_dir), "--json", env=box_process.env)
    assert made.returncode == 0, made.stderr
    backed_up = json.loads(made.stdout)
    assert backed_up["path"] == str(backup_dir) and backed_up["manifest"]["secrets_key"] == "included"
    restored = tmp_path / "restored"
    back = await acli("restore", str(backup_dir), "--json", env=box_env(restored, free_port()))
    assert back.returncode == 0, back.stderr
    answer = json.loads(back.stdout)
    assert answer["data_dir"] == str(restored) and answer["manifest"] == backed_up["manifest"]
    assert answer["kept_aside"] == []


def test_config_prints_json(tmp_path: Path) -> None:
    result = cli("config", "--json", env=box_env(tmp_path / "data", free_port()))
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert [row["env"] for row in listed] == [s.env for s in all_settings()]
    assert listed[0] == {"env": "PORT", "default": "8080", "help": SETTINGS[0].help, "backend": None}
    assert {"env": "WORKSPACE_IMAGE_TAG", "default": "latest", "help": "Tag of workspace images.",
            "backend": "docker"} in listed  # each installed backend's own settings too


def test_systemd_install_prints_json(tmp_path: Path) -> None:
    units, envs = tmp_path / "units", tmp_path / "etc"
    result = cli("systemd", "install", "--dry-run", "--json", "--unit-dir", str(units), "--env-dir", str(envs),
                 env=box_env(tmp_path / "data", free_port()))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["dry_run"] is True and "[Service]" in report["unit"]
    assert report["login"].startswith(f"sudo grep ^ADMIN_TOKEN= {envs / 'molecule-box.env'} | ")
    assert not units.exists() and not envs.exists()
