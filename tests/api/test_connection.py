"""The connection block at create works as returned: its Python snippet with the real platform SDK, its
curl template in bash. Both carry the workspace's token (the SDK's register sends none by itself)."""

from __future__ import annotations

import os
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from ..conftest import ADMIN, create_external


def need_sdk() -> None:
    try:
        import molecule_agent  # noqa: F401
    except ImportError:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("CI=true and the platform SDK (molecule_agent) is not installed (see scripts/test)")
        pytest.skip("the platform SDK (molecule_agent) is not installed: pip install "
                    "../shared/vendor/molecule_ai_sdk-0.2.0-py3-none-any.whl")


async def run(argv: list[str], home: Path, token: str | None) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "MOLECULE_TOKEN"}
    env["HOME"] = str(home)  # the SDK caches tokens in ~/.molecule/<id>/
    if token is not None:
        env["MOLECULE_TOKEN"] = token
    with trio.fail_after(60):
        return await trio.run_process(argv, env=env, capture_stdout=True, capture_stderr=True, check=False)


async def workspace(client: httpx.AsyncClient, wid: str) -> dict[str, Any]:
    return dict((await client.get(f"/workspaces/{wid}", headers=ADMIN)).json())


async def token_count(client: httpx.AsyncClient, wid: str) -> int:
    return int((await client.get(f"/workspaces/{wid}/tokens", headers=ADMIN)).json()["count"])


async def wait_for(client: httpx.AsyncClient, wid: str, status: str, agent: trio.Process) -> None:
    with trio.fail_after(20):
        while (await workspace(client, wid))["status"] != status:
            assert agent.returncode is None, "the snippet exited early"
            await trio.sleep(0.1)


async def run_snippet_agent(client: httpx.AsyncClient, wid: str, snippet: str, home: Path,
                            token: str | None) -> None:
    """Run the snippet as returned; it registers, answers a message through the SDK's loop, and exits 0 when
    the workspace is paused (run_agent_loop's end)."""
    env = {k: v for k, v in os.environ.items() if k != "MOLECULE_TOKEN"}
    env["HOME"] = str(home)
    if token is not None:
        env["MOLECULE_TOKEN"] = token
    async with trio.open_nursery() as nursery:
        agent: trio.Process = await nursery.start(partial(
            trio.run_process, [sys.executable, "-c", snippet], env=env, check=False, stderr=subprocess.PIPE))
        try:
            await wait_for(client, wid, "online", agent)
            sent = await client.post(f"/workspaces/{wid}/a2a", headers=ADMIN, json={
                "jsonrpc": "2.0", "id": "1", "method": "message/send",
                "params": {"message": {"role": "user", "messageId": "m-1", "parts": [{"kind": "text", "text": "hi"}]}}})
            assert sent.status_code in (200, 202), sent.text
            with trio.fail_after(20):  # the loop polls every 5 s; its handler's answer comes back as a notify
                while not any(row["method"] == "notify" and row["summary"] == "echo: hi" for row in
                              (await client.get(f"/workspaces/{wid}/activity", headers=ADMIN)).json()):
                    assert agent.returncode is None, "the snippet exited early"
                    await trio.sleep(0.2)
            assert (await client.post(f"/workspaces/{wid}/pause", headers=ADMIN)).status_code == 200
            with trio.fail_after(20):
                await agent.wait()
            assert agent.returncode == 0
        finally:
            if agent.returncode is None:
                agent.kill()


async def test_python_snippet_runs_the_agent_with_the_sdk(client: httpx.AsyncClient, tmp_path: Path) -> None:
    need_sdk()
    created = await create_external(client, "sdk-agent")
    wid, connection = created["id"], created["connection"]
    snippet = connection["python_snippet"]
    assert connection["auth_token"] not in snippet  # the snippet can be kept; the token is the secret
    assert "run_agent_loop" in snippet and "~/.molecule/<workspace id>/.auth_token" in snippet

    await run_snippet_agent(client, wid, snippet, tmp_path, connection["auth_token"])
    got = await workspace(client, wid)
    assert got["url"] == "remote://no-inbound"
    assert await token_count(client, wid) == 1  # registered with its token: nothing new minted
    assert (tmp_path / ".molecule" / wid / ".auth_token").read_text() == connection["auth_token"]
    # With another token the same snippet cannot register (the workspace is not anyone's for the asking).
    wrong = await run([sys.executable, "-c", snippet], tmp_path / "other", "x" * 43)
    assert wrong.returncode != 0 and b"401" in wrong.stderr


async def test_python_snippet_of_an_open_bootstrap(client: httpx.AsyncClient, tmp_path: Path) -> None:
    need_sdk()
    created = await create_external(client, "bootstrapped", bootstrap="open")
    wid, connection = created["id"], created["connection"]
    await run_snippet_agent(client, wid, connection["python_snippet"], tmp_path, None)
    cached = (tmp_path / ".molecule" / wid / ".auth_token").read_text().strip()
    assert (await client.post(f"/workspaces/{wid}/resume", headers=ADMIN)).status_code == 200
    beat = await client.post("/registry/heartbeat", json={"workspace_id": wid},
                             headers={"Authorization": f"Bearer {cached}"})
    assert beat.status_code == 200


async def test_curl_template_expands_the_token(client: httpx.AsyncClient, tmp_path: Path) -> None:
    created = await create_external(client, "curl-agent")
    wid, connection = created["id"], created["connection"]
    template = connection["curl_register_template"]
    assert "'Authorization: Bearer $MOLECULE_TOKEN'" not in template  # single quotes would send it literally
    # The template's placeholder URL is the operator's to fill in; here the agent has no inbound URL.
    command = template.replace("https://your-agent.example.com", "remote://no-inbound")
    assert command != template
    done = await run(["bash", "-c", command], tmp_path, connection["auth_token"])
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.strip() == b'{"status":"registered"}'
    assert (await workspace(client, wid))["status"] == "online"


async def test_curl_heartbeat_template_keeps_the_agent_online(client: httpx.AsyncClient, tmp_path: Path) -> None:
    created = await create_external(client, "curl-beater")
    wid, connection = created["id"], created["connection"]
    register = connection["curl_register_template"].replace("https://your-agent.example.com", "remote://no-inbound")
    for command in (register, connection["curl_heartbeat_template"]):
        done = await run(["bash", "-c", command], tmp_path, connection["auth_token"])
        assert done.returncode == 0, done.stderr.decode()
    assert (await workspace(client, wid))["status"] == "online"
