"""Settings: every bad value reported at once, env files, defaults, documentation coverage."""

from __future__ import annotations

from pathlib import Path

import pytest

from molecule_box.config import SETTINGS, Settings, all_settings, markdown_table
from molecule_box.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_defaults(tmp_path: Path) -> None:
    settings = Settings.from_mapping({}, environ={"XDG_DATA_HOME": str(tmp_path)})
    assert (settings.port, settings.bind_addr) == (8080, "127.0.0.1")
    assert settings.data_dir == tmp_path / "molecule-box"
    assert settings.remote_liveness_stale_after == 90 and settings.liveness_ttl_seconds == 180
    assert settings.provision_timeout_seconds == 600
    assert settings.platform_url == "http://host.docker.internal:8080"
    assert settings.default_backend == "docker"


@pytest.mark.parametrize(("network", "bind", "url"), [
    ("host", "127.0.0.1", "http://127.0.0.1:8080"),
    ("host", "0.0.0.0", "http://127.0.0.1:8080"),
    ("host", "::1", "http://[::1]:8080"),
    ("host", "10.0.0.5", "http://10.0.0.5:8080"),
    ("molecule-box", "0.0.0.0", "http://host.docker.internal:8080"),
    ("molecule-box", "127.0.0.1", "http://host.docker.internal:8080"),  # refused by the docker backend
    ("molecule-box", "10.0.0.5", "http://10.0.0.5:8080"),
])
def test_default_platform_url_is_where_containers_reach_the_box(network: str, bind: str, url: str) -> None:
    settings = Settings.from_mapping({"WORKSPACE_NETWORK": network, "BIND_ADDR": bind}, environ={})
    assert settings.platform_url == url
    given = Settings.from_mapping({"WORKSPACE_NETWORK": network, "PLATFORM_URL": "https://box.example/"}, environ={})
    assert given.platform_url == "https://box.example"


def test_systemd_state_directory_wins_over_xdg() -> None:
    settings = Settings.from_mapping({}, environ={"STATE_DIRECTORY": "/var/lib/molecule-box:/x", "XDG_DATA_HOME": "/y"})
    assert settings.data_dir == Path("/var/lib/molecule-box")


def test_every_bad_value_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_mapping({"PORT": "http", "REMOTE_LIVENESS_STALE_AFTER": "-1", "ADMIN_TOKEN": "short",
                               "SECRETS_ENCRYPTION_KEY": "not-a-key", "MOLECULE_BOX_ALLOW_AGENT_NETWORKS": "10.0/x",
                               "PLATFORM_URL": "localhost"}, environ={})
    problems = "\n".join(info.value.problems)
    assert len(info.value.problems) == 6
    for name in ("PORT", "REMOTE_LIVENESS_STALE_AFTER", "ADMIN_TOKEN", "SECRETS_ENCRYPTION_KEY",
                 "MOLECULE_BOX_ALLOW_AGENT_NETWORKS", "PLATFORM_URL"):
        assert name in problems
    assert "short" not in problems and "not-a-key" not in problems  # secrets are never echoed


def test_fractions_and_org_id() -> None:
    settings = Settings.from_mapping({"REMOTE_LIVENESS_STALE_AFTER": "0.5", "MOLECULE_ORG_ID": "org-1"}, environ={})
    assert settings.remote_liveness_stale_after == 0.5
    assert settings.default_backend == "controlplane"


def test_env_file(tmp_path: Path) -> None:
    env = tmp_path / "box.env"
    env.write_text("# comment\nexport PORT=9000\nBIND_ADDR='0.0.0.0'\nADMIN_TOKEN=\"abcdefghijklmnopq\"\n")
    settings = Settings.from_env({"PORT": "9100"}, env_file=env)
    assert settings.port == 9100  # the environment wins
    assert settings.bind_addr == "0.0.0.0" and settings.admin_token == "abcdefghijklmnopq"
    env.write_text("this is not an assignment\n")
    with pytest.raises(ConfigError, match="line 1"):
        Settings.from_env({}, env_file=env)


def test_docs_mention_every_setting() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    missing = [s.env for s in all_settings() if f"`{s.env}`" not in text]
    assert missing == []
    # Defaults and meanings too: regenerate with `molecule-box config --markdown`.
    assert markdown_table().strip() in text, "docs/configuration.md drifted from the settings"


def test_config_command_prints_the_docs_table() -> None:
    from click.testing import CliRunner

    from molecule_box.cli import main

    result = CliRunner().invoke(main, ["config", "--markdown"])
    assert result.exit_code == 0 and result.output.strip() == markdown_table().strip()


def test_backend_settings_are_read_with_the_box_settings() -> None:
    from molecule_box.backends.docker.settings import DockerSettings

    settings = Settings.from_mapping({"TIER3_CPUS": "1.5", "WORKSPACE_NETWORK": "host"}, environ={})
    docker = settings.backends["docker"]
    assert isinstance(docker, DockerSettings)
    assert docker.tier_limits(3) == (2048, 1.5) and docker.workspace_network == "host"
    assert not hasattr(settings, "tier3_cpus")  # the backend's own, not the box's
    with pytest.raises(ConfigError) as info:
        Settings.from_mapping({"PORT": "http", "TIER3_CPUS": "lots", "WORKSPACE_PORT_RANGE": "9-1"}, environ={})
    assert [problem.split(" ", 1)[0] for problem in info.value.problems] == ["PORT", "WORKSPACE_PORT_RANGE",
                                                                           "TIER3_CPUS"]  # in table order


def test_each_default_is_declared_once() -> None:
    # Settings() and an empty environment agree on every default that is not derived from others.
    built, read = Settings(), Settings.from_mapping({}, environ={})
    for setting in all_settings():
        if setting in SETTINGS and not setting.derived:
            assert getattr(built, setting.field) == getattr(read, setting.field) == setting.default


def test_docs_have_a_section_per_backend_with_settings() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    assert "### The docker backend" in text
    core = text.split("### The docker backend", 1)[0]
    assert "`WORKSPACE_NETWORK`" not in core.split("## Notes")[0]
