"""A start that cannot go ahead (issue #11 item 2): one line with the fix, a non-zero exit, and no admin token
generated on the way, so the one-time token is never shown for a box that then does not run."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import BoxProcess, box_env, cli, free_port


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield int(other.getsockname()[1])


def refused_in_one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The line a refused start printed; it must be the only thing on stderr besides log records."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    stderr = result.stderr
    assert "Traceback" not in stderr and "Exception" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if not line.startswith('{"ts"')]  # log records are JSON here
    assert len(lines) == 1 and lines[0].startswith("molecule-box: "), stderr
    return lines[0]


def no_admin_token(data: Path) -> None:
    assert not (data / "admin-token").exists()
    if (data / "molecule-box.db").exists():
        with sqlite3.connect(data / "molecule-box.db") as db:
            keys = {row[0] for row in db.execute("SELECT key FROM box_settings")}
        assert "admin_token_sha256" not in keys


async def test_a_busy_port_is_one_line_with_the_fix_and_mints_no_admin_token(tmp_path: Path,
                                                                            held_port: int) -> None:
    data = tmp_path / "data"
    result = cli("run", env=box_env(data, held_port, ADMIN_TOKEN=""))  # the token would be generated
    line = refused_in_one_line(result)
    assert result.stderr.strip() == line  # the port is checked before anything is logged
    assert f"127.0.0.1:{held_port} is in use" in line and "set PORT to a free port" in line
    no_admin_token(data)
    # Once the port is free the box starts on the same data dir and generates its token then.
    box = BoxProcess(data, tmp_path / "box.log", ADMIN_TOKEN="")
    try:
        await box.start()
        assert (data / "admin-token").exists(), box.log()
    finally:
        await box.kill()


@pytest.mark.parametrize(("setting", "value", "expected"), [
    ("PORT", "abc", "molecule-box: PORT must be an integer between 1 and 65535 (or 0 for a free port), not 'abc'"),
    ("PORT", "70000", "molecule-box: PORT must be an integer between 1 and 65535"),
    ("BIND_ADDR", "no-such-host.invalid", "molecule-box: BIND_ADDR=no-such-host.invalid does not resolve"),
])
def test_a_bad_port_or_bind_addr_is_one_line(tmp_path: Path, setting: str, value: str, expected: str) -> None:
    data = tmp_path / "data"
    result = cli("run", env=box_env(data, free_port(), ADMIN_TOKEN="", **{setting: value}))
    line = refused_in_one_line(result)
    assert line.startswith(expected), line
    if setting == "BIND_ADDR":
        assert "set BIND_ADDR to an address of this host" in line
    no_admin_token(data)


def test_a_data_dir_that_cannot_be_created_is_one_line(tmp_path: Path) -> None:
    """A path under a regular file: no directory can be made there, not even by root."""
    (tmp_path / "file").write_text("")
    data = tmp_path / "file" / "data"
    line = refused_in_one_line(cli("run", env=box_env(data, free_port(), ADMIN_TOKEN="")))
    assert f"cannot create the data directory {data}" in line and "set MOLECULE_BOX_DATA" in line


def test_a_backend_plugin_that_fails_to_import_is_one_line_and_mints_no_admin_token(tmp_path: Path) -> None:
    site = tmp_path / "site"
    info = site / "broken_backend-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-backend\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[molecule_box.backends]\nbroken = broken_backend_module:Backend\n")
    (site / "broken_backend_module.py").write_text("raise ImportError('needs libbroken 2')\n")
    data = tmp_path / "data"
    env = box_env(data, free_port(), ADMIN_TOKEN="", CONTAINER_BACKEND="broken", PYTHONPATH=str(site))
    line = refused_in_one_line(cli("run", env=env))
    assert "backend plugin 'broken' fails to load (ImportError: needs libbroken 2)" in line
    assert "set CONTAINER_BACKEND" in line
    no_admin_token(data)


async def test_admin_token_replaces_the_stored_hash_so_a_lost_token_is_recovered(tmp_path: Path) -> None:
    """docs/operations.md "Lost the admin token": set ADMIN_TOKEN and restart; the lost one never works again,
    also once ADMIN_TOKEN is removed from the environment."""
    data = tmp_path / "data"
    box = BoxProcess(data, tmp_path / "box.log", ADMIN_TOKEN="")

    async def admin_works(token: str) -> bool:
        async with httpx.AsyncClient(base_url=box.url, timeout=10) as client:
            answer = await client.get("/workspaces", headers={"Authorization": f"Bearer {token}"})
            return answer.status_code == 200

    async def restart(admin_token: str) -> None:
        box.signal()
        assert await box.wait() == 0, box.log()
        box.env["ADMIN_TOKEN"] = admin_token
        await box.start()

    recovered = "recovered-admin-token-0123456789"
    try:
        await box.start()
        lost = (data / "admin-token").read_text().strip()
        (data / "admin-token").unlink()
        assert await admin_works(lost)
        await restart(recovered)
        assert await admin_works(recovered) and not await admin_works(lost)
        await restart("")
        assert await admin_works(recovered) and not await admin_works(lost), box.log()
        assert not (data / "admin-token").exists()  # nothing new was generated
    finally:
        await box.kill()
