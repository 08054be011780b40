"""``molecule-box doctor``: a healthy setup passes; broken ones fail with every problem and its fix."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from molecule_box.ops import doctor
from molecule_box.store import Store

from .conftest import box_env, cli, free_port

GOOD_KEY = "A" * 43 + "="


def checks(stdout: str) -> dict[str, list[dict[str, str]]]:
    found: dict[str, list[dict[str, str]]] = {}
    for check in json.loads(stdout)["checks"]:
        found.setdefault(check["check"], []).append(check)
    return found


def statuses(stdout: str) -> dict[str, set[str]]:
    return {name: {c["status"] for c in rows} for name, rows in checks(stdout).items()}


def test_healthy_setup_passes(tmp_path: Path) -> None:
    env_file = tmp_path / "box.env"
    env_file.write_text("MOLECULE_BOX_LOG_LEVEL=info\n")
    result = cli("doctor", "--json", "--env-file", str(env_file), env=box_env(tmp_path / "data", free_port()))
    assert result.returncode == 0, result.stdout + result.stderr
    found = statuses(result.stdout)
    assert json.loads(result.stdout)["ok"] is True
    for name in ("config", "data dir", "store", "secrets key", "port", "backends"):
        assert found[name] == {"ok"}, (name, result.stdout)
    # No engine at DOCKER_HOST, but CONTAINER_BACKEND=external: reported, not a failure.
    assert found["docker"] == {"warn"}
    assert "external" in checks(result.stdout)["backends"][0]["message"]
    # Each installed backend's own settings are listed.
    assert any(f["message"].startswith("The docker backend reads DOCKER_HOST, WORKSPACE_IMAGE_PREFIX")
               for f in checks(result.stdout)["backends"]), result.stdout

    human = cli("doctor", "--env-file", str(env_file), env=box_env(tmp_path / "data", free_port()))
    assert human.returncode == 0 and "0 problem(s)" in human.stdout


def test_broken_setup_lists_every_problem_with_its_fix(tmp_path: Path) -> None:
    """Bad PORT and another bad value, a key file readable by others, a data dir its owner cannot write."""
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    Store(data / "molecule-box.db").close()
    key = data / "secrets.key"
    key.write_text(GOOD_KEY + "\n")
    os.chmod(key, 0o644)
    os.chmod(data, 0o500)
    env_file = tmp_path / "box.env"
    env_file.write_text("PORT=http\nREMOTE_LIVENESS_STALE_AFTER=-1\n")
    env = box_env(data, 0)
    del env["PORT"]  # from the env file
    try:
        result = cli("doctor", "--json", "--env-file", str(env_file), env=env)
        human = cli("doctor", "--env-file", str(env_file), env=env)
    finally:
        os.chmod(data, 0o700)
    assert result.returncode == 1 and human.returncode == 1
    found = checks(result.stdout)
    config = [c for c in found["config"] if c["status"] == "fail"]
    assert {c["message"].split(" ")[0] for c in config} == {"PORT", "REMOTE_LIVENESS_STALE_AFTER"}
    assert all("fix" in c and c["fix"] for c in config)
    assert any(c["status"] == "fail" and c["fix"] == f"chmod 600 {key}" for c in found["secrets key"])
    assert any(c["status"] == "fail" and c["fix"] == f"chmod 700 {data}" for c in found["data dir"])
    # The human form says the same, each problem followed by its fix.
    assert "FAIL" in human.stdout and f"fix: chmod 600 {key}" in human.stdout
    assert f"fix: chmod 700 {data}" in human.stdout and "PORT must be an integer between 1 and 65535" in human.stdout


def test_port_held_by_another_program_and_docker_required(tmp_path: Path) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        env = box_env(tmp_path / "data", port, CONTAINER_BACKEND="docker")
        findings = doctor.diagnose(None, env)
    by_check = {f.check: f for f in findings if f.status != "ok"}
    assert by_check["port"].status == "fail" and "another program" in by_check["port"].message
    assert by_check["port"].fix is not None and f"sport = :{port}" in by_check["port"].fix
    # CONTAINER_BACKEND=docker makes a missing engine a failure, with what to do about it.
    assert by_check["docker"].status == "fail" and "systemctl start docker" in (by_check["docker"].fix or "")


def test_wrong_key_for_stored_secrets(tmp_path: Path) -> None:
    from molecule_box.security.crypto import CURRENT_VERSION, SecretBox, secret_aad
    from molecule_box.store import secrets as secret_rows

    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    store = Store(data / "molecule-box.db")
    right = SecretBox(b"r" * 32)
    op = secret_rows.put(None, "API_KEY", right.encrypt("value", secret_aad(None, "API_KEY")), CURRENT_VERSION)
    with store._wconn:  # a test writing one row without running the writer task
        op(store._wdb)
    store.close()
    assert right.decrypt(_one_value(data), 2, secret_aad(None, "API_KEY")) == "value"

    ok = doctor.diagnose(None, box_env(data, 0, SECRETS_ENCRYPTION_KEY="r" * 32))
    assert [f.status for f in ok if f.check == "secrets key"] == ["ok"]
    wrong = doctor.diagnose(None, box_env(data, 0, SECRETS_ENCRYPTION_KEY="w" * 32))
    failure = next(f for f in wrong if f.check == "secrets key")
    assert failure.status == "fail" and "does not decrypt" in failure.message
    # No key at all while secrets are stored: the box would generate a fresh one that decrypts nothing.
    missing = doctor.diagnose(None, box_env(data, 0))
    failure = next(f for f in missing if f.check == "secrets key")
    assert failure.status == "fail" and "secrets.key" in (failure.fix or "")
    assert "r" * 32 not in repr(wrong) + repr(missing)  # the key itself is never shown


def _one_value(data: Path) -> bytes:
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(data / "molecule-box.db")) as conn:
        return bytes(conn.execute("SELECT value FROM secrets").fetchone()[0])


def test_newer_schema_fails_with_its_fix(tmp_path: Path) -> None:
    import sqlite3
    from contextlib import closing

    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    Store(data / "molecule-box.db").close()
    with closing(sqlite3.connect(data / "molecule-box.db")) as conn:
        conn.execute("PRAGMA user_version = 999")
    store = next(f for f in doctor.diagnose(None, box_env(data, 0)) if f.check == "store")
    assert store.status == "fail" and "newer" in store.message and "upgrade" in (store.fix or "")


def test_platform_url_unreachable_from_a_bridge_network_fails_without_an_engine(tmp_path: Path) -> None:
    """The default bridge network cannot reach a loopback-only box: said from the settings alone, with its fix."""
    env = box_env(tmp_path / "data", 8080, CONTAINER_BACKEND="docker")
    env.pop("WORKSPACE_NETWORK", None)
    env.pop("PLATFORM_URL", None)
    found = [f for f in doctor.diagnose(None, env) if f.check == "platform url"]
    assert [f.status for f in found] == ["fail"]
    for setting in ("WORKSPACE_NETWORK=molecule-box", "BIND_ADDR=127.0.0.1",
                    "PLATFORM_URL=http://host.docker.internal:8080", "WORKSPACE_NETWORK=host"):
        assert setting in found[0].message
    # On the host network the default works; with no engine at DOCKER_HOST it is not tried (a warning).
    env["WORKSPACE_NETWORK"] = "host"
    found = [f for f in doctor.diagnose(None, env) if f.check == "platform url"]
    assert [f.status for f in found] == ["warn"] and "no Docker engine" in found[0].message


def test_every_installed_backend_with_its_versions_and_settings(tmp_path: Path) -> None:
    """Each installed backend: its distribution and version, the contract version it implements, and its
    settings check; missing settings fail only for the default backend."""
    from importlib.metadata import entry_points

    installed = {ep.name: ep.dist for ep in entry_points(group="molecule_box.backends")}
    env = box_env(tmp_path / "data", free_port(), FLY_API_TOKEN="", FLY_WORKSPACE_APP="")
    result = cli("doctor", "--json", env=env)
    rows = {f["message"].split(":", 1)[0]: f for f in checks(result.stdout)["backends"]}
    for name, dist in installed.items():
        assert dist is not None
        row = rows[name]
        assert row["message"].startswith(f"{name}: distribution {dist.name} {dist.version}, backend version "), row
        assert "contract version 2" in row["message"], row
    assert rows["external"]["message"].endswith("settings ok") and rows["external"]["status"] == "ok"
    if "flyio" in installed:  # the plugin's own settings check, through the contract's `missing`
        assert rows["flyio"]["status"] == "ok", rows["flyio"]
        assert "settings incomplete: FLY_API_TOKEN, FLY_WORKSPACE_APP unset" in rows["flyio"]["message"]
        result = cli("doctor", "--json", env={**env, "CONTAINER_BACKEND": "flyio", "FLY_API_TOKEN": "t"})
        assert result.returncode == 1
        row = {f["message"].split(":", 1)[0]: f for f in checks(result.stdout)["backends"]}["flyio"]
        assert row["status"] == "fail" and "FLY_WORKSPACE_APP unset, and flyio is the default" in row["message"]
        assert row["fix"].startswith("set FLY_WORKSPACE_APP")
        result = cli("doctor", "--json", env={**env, "CONTAINER_BACKEND": "flyio", "FLY_API_TOKEN": "t",
                                              "FLY_WORKSPACE_APP": "a"})
        row = {f["message"].split(":", 1)[0]: f for f in checks(result.stdout)["backends"]}["flyio"]
        assert row["status"] == "ok" and row["message"].endswith("settings ok"), row
