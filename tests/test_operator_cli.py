"""The operator CLI end to end: real `molecule-box` subprocesses against a real box subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from .api.test_restart import _free_port, _spawn, _wait_healthy
from .conftest import ADMIN_TOKEN

SECRET = "sk-canary-9f3b2c7d1e"


def cli(url: str, *args: str, stdin: str | None = None, token: str = ADMIN_TOKEN) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MOLECULE_BOX_URL=url, ADMIN_TOKEN=token, HOME="/nonexistent")
    return subprocess.run([sys.executable, "-m", "molecule_box", *args], input=stdin, env=env, text=True,
                          capture_output=True, timeout=60)


def ok(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout) if result.stdout.strip().startswith(("{", "[")) else result.stdout


@pytest.fixture
async def box_url(tmp_path: Path) -> Any:
    port = _free_port()
    proc = _spawn(tmp_path, port)
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=url) as client:
        await _wait_healthy(client)
    yield url
    proc.terminate()
    proc.wait(20)


async def test_operator_cli(box_url: str, tmp_path: Path) -> None:
    run = lambda *a, **k: trio.to_thread.run_sync(lambda: cli(box_url, *a, **k))  # noqa: E731
    created = ok(await run("workspaces", "create", "laptop", "--external", "--json"))
    wid = created["id"]
    assert created["status"] == "awaiting_agent" and len(created["connection"]["auth_token"]) == 43
    listed = ok(await run("workspaces", "ls", "--json"))
    assert [w["name"] for w in listed] == ["laptop"]
    table = ok(await run("workspaces", "ls"))
    assert table.splitlines()[0].split()[:3] == ["ID", "NAME", "STATUS"] and "laptop" in table
    assert ok(await run("workspaces", "show", wid[:8], "--json"))["id"] == wid

    saved = ok(await run("secrets", "set", "OPENAI_API_KEY", "-w", "laptop", "--json", stdin=SECRET + "\n"))
    assert saved == {"status": "saved", "key": "OPENAI_API_KEY"}
    ok(await run("secrets", "set", "GLOBAL_ONE", "--json", stdin="g\n"))
    keys = ok(await run("secrets", "ls", "-w", wid, "--json"))
    assert {k["key"] for k in keys} == {"OPENAI_API_KEY", "GLOBAL_ONE"} and SECRET not in json.dumps(keys)

    minted = ok(await run("tokens", "create", wid, "--json"))
    tokens = ok(await run("tokens", "ls", wid, "--json"))
    assert tokens["count"] == 2 and minted["auth_token"] not in json.dumps(tokens)
    assert ok(await run("tokens", "revoke", wid, minted["id"], "--json")) == {"status": "revoked"}

    history = ok(await run("events", "--json"))
    assert "WORKSPACE_AWAITING_AGENT" in {e["event_type"] for e in history}
    assert ok(await run("workspaces", "pause", wid, "--json")) == {"status": "paused", "paused_count": 1}

    refused = await run("workspaces", "ls", token="wrong-token-wrong-token")
    assert refused.returncode != 0 and "HTTP 401" in refused.stderr and "ADMIN_TOKEN" in refused.stderr
    assert ok(await run("workspaces", "rm", wid, "--json"))["status"] == "removed"

    # The secret never reached the box's log.
    logs = "".join(p.read_text() for p in tmp_path.glob("box-*.log"))
    assert SECRET not in logs and ADMIN_TOKEN not in logs


async def test_events_follow(box_url: str) -> None:
    env = dict(os.environ, MOLECULE_BOX_URL=box_url, ADMIN_TOKEN=ADMIN_TOKEN)
    follower = subprocess.Popen([sys.executable, "-m", "molecule_box", "events", "--follow", "--json"], env=env,
                                stdout=subprocess.PIPE, text=True)
    try:
        await trio.sleep(1.5)  # let it subscribe
        await trio.to_thread.run_sync(lambda: ok(cli(box_url, "workspaces", "create", "live", "--external")))
        line = await trio.to_thread.run_sync(follower.stdout.readline)  # type: ignore[union-attr]
        frame = json.loads(line)
        assert frame["event"] == "WORKSPACE_AWAITING_AGENT" and frame["payload"]["name"] == "live"
    finally:
        follower.kill()
        follower.wait(10)
        follower.stdout.close()  # type: ignore[union-attr]
