"""The unit and env file: generated from code, checked in unchanged, accepted by systemd, installed safely."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from molecule_box.config import SETTINGS, Settings, all_settings
from molecule_box.ops import systemd

from .conftest import box_env, cli, free_port

ROOT = Path(__file__).resolve().parents[2]
REGENERATE = ("regenerate it: molecule-box systemd unit > systemd/molecule-box.service; "
              "molecule-box systemd env-example > systemd/molecule-box.env.example")


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("systemd-analyze is required in CI (apt-get install systemd; scripts/test does it)")
        pytest.skip("systemd-analyze not installed (apt-get install systemd); CI=true makes this a failure")
    return found


def test_env_example_lists_every_setting() -> None:
    text = (ROOT / "systemd" / "molecule-box.env.example").read_text()
    missing = [s.env for s in all_settings() if f"#{s.env}=" not in text]
    assert missing == [], f"systemd/molecule-box.env.example lacks {missing}; {REGENERATE}"
    assert text == systemd.render_env_example(), f"systemd/molecule-box.env.example drifted; {REGENERATE}"


def test_env_example_parses_to_the_defaults(tmp_path: Path) -> None:
    """Every line is a comment: the example changes nothing, and with a token filled in it still parses."""
    example = tmp_path / "example.env"
    example.write_text(systemd.render_env_example())
    assert Settings.from_env({"HOME": str(tmp_path)}, env_file=example) == Settings.from_env({"HOME": str(tmp_path)})
    example.write_text(systemd.render_env_example(admin_token="t" * 43))
    assert Settings.from_env({}, env_file=example).admin_token == "t" * 43


def test_checked_in_unit_is_the_rendered_one() -> None:
    text = (ROOT / "systemd" / "molecule-box.service").read_text()
    assert text == systemd.render_unit(), f"systemd/molecule-box.service drifted; {REGENERATE}"
    for line in ("Type=notify", "WatchdogSec=30s", "Restart=on-failure", "StartLimitBurst=5",
                 "StateDirectory=molecule-box", "EnvironmentFile=-/etc/molecule-box/molecule-box.env",
                 "User=molecule-box", "SupplementaryGroups=docker", "KillMode=mixed",
                 "ExecStart=/usr/local/bin/molecule-box run", "After=network-online.target docker.service",
                 "ProtectSystem=strict", "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6", "UMask=0077"):
        assert line in text.splitlines(), line
    stop = int(next(li for li in text.splitlines() if li.startswith("TimeoutStopSec=")).split("=")[1].rstrip("s"))
    grace = next(s.default for s in SETTINGS if s.env == "MOLECULE_BOX_SHUTDOWN_GRACE")
    assert stop > grace + 10  # systemd must not SIGKILL the box while it drains


def test_unit_caps_the_box_memory_and_tasks_and_the_env_example_says_so() -> None:
    """A leak or a flood (threads, memory) stops the box, not the host (issue #10 item 11)."""
    unit = (ROOT / "systemd" / "molecule-box.service").read_text().splitlines()
    assert f"MemoryMax={systemd.MEMORY_MAX}" in unit and f"TasksMax={systemd.TASKS_MAX}" in unit
    example = (ROOT / "systemd" / "molecule-box.env.example").read_text()
    assert f"MemoryMax={systemd.MEMORY_MAX}" in example and f"TasksMax={systemd.TASKS_MAX}" in example


def test_install_dry_run_changes_nothing(tmp_path: Path) -> None:
    units, envs = tmp_path / "units", tmp_path / "etc"
    result = cli("systemd", "install", "--dry-run", "--unit-dir", str(units), "--env-dir", str(envs),
                 env=box_env(tmp_path / "data", free_port()))
    assert result.returncode == 0, result.stderr
    assert "dry run: nothing was changed" in result.stdout
    assert f"would write {units / 'molecule-box.service'}" in result.stdout
    assert "[Service]" in result.stdout  # the unit it would write is shown
    for command in systemd.NEXT_STEPS:
        assert command in result.stdout
    assert not units.exists() and not envs.exists()


def test_install_writes_unit_and_env_and_never_overwrites_the_env(tmp_path: Path) -> None:
    units, envs = tmp_path / "units", tmp_path / "etc"
    args = ("systemd", "install", "--no-user", "--unit-dir", str(units), "--env-dir", str(envs))
    result = cli(*args, env=box_env(tmp_path / "data", free_port()))
    assert result.returncode == 0, result.stderr
    unit = (units / "molecule-box.service").read_text()
    exec_start = next(li for li in unit.splitlines() if li.startswith("ExecStart=")).split("=", 1)[1]
    script = exec_start.split()[0]
    assert os.access(script, os.X_OK) and exec_start.endswith(" run")
    assert f"EnvironmentFile=-{envs / 'molecule-box.env'}" in unit
    env_file = envs / "molecule-box.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    settings = Settings.from_env({}, env_file=env_file)
    assert settings.admin_token is not None and len(settings.admin_token) >= 32  # a token the box never prints
    assert settings.admin_token not in result.stdout + result.stderr
    for command in systemd.NEXT_STEPS:
        assert command in result.stdout
    # How to give the token it wrote to the CLI (issue #11 item 3).
    assert f"sudo grep ^ADMIN_TOKEN= {env_file} | " in result.stdout and " login" in result.stdout

    env_file.write_text("PORT=9999\n")
    again = cli(*args, env=box_env(tmp_path / "data", free_port()))
    assert again.returncode == 0 and "never overwritten" in again.stdout
    assert env_file.read_text() == "PORT=9999\n"


def test_install_creates_the_user_and_docker_membership(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    commands: list[list[str]] = []
    monkeypatch.setattr(systemd, "_user_exists", lambda name: False)
    monkeypatch.setattr(systemd, "_group_exists", lambda name: True)
    monkeypatch.setattr(systemd.grp, "getgrnam", lambda name: type("G", (), {"gr_mem": []})())
    report = systemd.install(unit_dir=tmp_path / "u", env_dir=tmp_path / "e", run=commands.append,
                             exec_start="/opt/molecule-box/bin/molecule-box")
    assert commands[0][:2] == ["useradd", "--system"] and commands[0][-1] == "molecule-box"
    assert {"--no-create-home", "--shell", "/usr/sbin/nologin"} <= set(commands[0])
    assert commands[1] == ["usermod", "--append", "--groups", "docker", "molecule-box"]
    assert report.warnings == []

    commands.clear()
    monkeypatch.setattr(systemd, "_group_exists", lambda name: False)
    report = systemd.install(unit_dir=tmp_path / "u2", env_dir=tmp_path / "e2", run=commands.append,
                             exec_start="/opt/molecule-box/bin/molecule-box", dry_run=True)
    assert commands == []  # a dry run runs nothing
    assert "SupplementaryGroups=docker" not in report.unit_text  # the unit would not start without the group
    assert any("no group docker" in w for w in report.warnings)


def test_installed_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = systemd_analyze()
    units = tmp_path / "units"
    systemd.install(unit_dir=units, env_dir=tmp_path / "etc", create_user=False)
    result = subprocess.run([analyze, "verify", str(units / "molecule-box.service")], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "molecule-box.service" not in result.stderr, result.stderr  # no warnings about our unit either


def test_unit_hardening_scores_ok(tmp_path: Path) -> None:
    analyze = systemd_analyze()
    units = tmp_path / "units"
    systemd.install(unit_dir=units, env_dir=tmp_path / "etc", create_user=False)
    # --threshold=30: fail above an exposure of 3.0 ("OK" in systemd's words).
    result = subprocess.run([analyze, "security", "--offline=true", "--threshold=30",
                             str(units / "molecule-box.service")], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
