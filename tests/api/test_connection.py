"""The connection block at create works as returned: its Python snippet with the real platform SDK, its
curl template in bash. Both carry the workspace's token (the SDK's register sends none by itself)."""

from __future__ import annotations

import os
import subprocess
import sys
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


async def test_python_snippet_registers_with_the_sdk(client: httpx.AsyncClient, tmp_path: Path) -> None:
    need_sdk()
    created = await create_external(client, "sdk-agent")
    wid, connection = created["id"], created["connection"]
    snippet = connection["python_snippet"]
    assert connection["auth_token"] not in snippet  # the snippet can be kept; the token is the secret

    done = await run([sys.executable, "-c", snippet], tmp_path, connection["auth_token"])
    assert done.returncode == 0, done.stderr.decode()
    got = await workspace(client, wid)
    assert got["status"] == "online" and got["url"] == "remote://no-inbound"
    assert await token_count(client, wid) == 1  # registered with its token: nothing new minted
    assert (tmp_path / ".molecule" / wid / ".auth_token").read_text() == connection["auth_token"]
    # And again, as on the agent's next start.
    again = await run([sys.executable, "-c", snippet], tmp_path, connection["auth_token"])
    assert again.returncode == 0, again.stderr.decode()
    # With another token the same snippet cannot register (the workspace is not anyone's for the asking).
    wrong = await run([sys.executable, "-c", snippet], tmp_path / "other", "x" * 43)
    assert wrong.returncode != 0 and b"401" in wrong.stderr


async def test_python_snippet_of_an_open_bootstrap(client: httpx.AsyncClient, tmp_path: Path) -> None:
    need_sdk()
    created = await create_external(client, "bootstrapped", bootstrap="open")
    wid, connection = created["id"], created["connection"]
    done = await run([sys.executable, "-c", connection["python_snippet"]], tmp_path, None)
    assert done.returncode == 0, done.stderr.decode()
    assert (await workspace(client, wid))["status"] == "online"
    cached = (tmp_path / ".molecule" / wid / ".auth_token").read_text().strip()
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
