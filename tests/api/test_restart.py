"""The box restarted mid-life keeps every workspace, token and secret, and re-arms deadlines from SQLite."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import trio

from ..conftest import ADMIN, ADMIN_TOKEN, BoxRunner, bearer, create_external, joined


async def test_restart_keeps_state_and_rearms_deadlines(runner: BoxRunner) -> None:
    box = await runner.start(REMOTE_LIVENESS_STALE_AFTER="2")
    async with httpx.AsyncClient(base_url=box.urls[0], timeout=10) as client:
        wid, token = await joined(client, "keeper", secrets={"API_KEY": "k1"})
        beat = await client.post("/registry/heartbeat", json={"workspace_id": wid}, headers=bearer(token))
        assert beat.status_code == 200
        quiet = (await create_external(client, "quiet"))["id"]
    beat_at = time.time()
    await runner.stop()

    box = await runner.start(REMOTE_LIVENESS_STALE_AFTER="2")
    assert box.restored == 2
    async with httpx.AsyncClient(base_url=box.urls[0], timeout=10) as client:
        names = sorted(w["name"] for w in (await client.get("/workspaces", headers=ADMIN)).json())
        assert names == ["keeper", "quiet"]
        values = await client.get(f"/workspaces/{wid}/secrets/values", headers=bearer(token))
        assert values.json() == {"API_KEY": "k1"}
        status = (await client.get(f"/workspaces/{wid}/state", headers=bearer(token))).json()["status"]
        assert status == "online"
        # The deadline was re-armed from the stored heartbeat, not from the restart (watched with the admin
        # token: the agent's own requests would be proof of life).
        with trio.fail_after(5):
            while (await client.get(f"/workspaces/{wid}/state", headers=ADMIN)).json()["status"] != "offline":
                await trio.sleep(0.05)
        assert time.time() - beat_at < 2 + 1.5
        assert (await client.get(f"/workspaces/{quiet}", headers=ADMIN)).json()["status"] == "awaiting_agent"


def _spawn(data: Path, port: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ, MOLECULE_BOX_DATA=str(data), PORT=str(port), ADMIN_TOKEN=ADMIN_TOKEN,
               MOLECULE_BOX_ALLOW_AGENT_NETWORKS="127.0.0.0/8", CONTAINER_BACKEND="external")
    with open(data.parent / f"box-{port}.log", "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "molecule_box", "run"], env=env,
                                stdout=log, stderr=log)


async def _wait_healthy(client: httpx.AsyncClient) -> None:
    with trio.fail_after(20):
        while True:
            try:
                if (await client.get("/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await trio.sleep(0.1)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_sigkill_loses_nothing_acknowledged(tmp_path: Path) -> None:
    port = _free_port()
    proc = _spawn(tmp_path, port)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            await _wait_healthy(client)
            first = await create_external(client, "w0")
            created = [first["id"], *[(await create_external(client, f"w{i}"))["id"] for i in range(1, 5)]]
            token = first["connection"]["auth_token"]
            saved = await client.put(f"/workspaces/{created[0]}/secrets", json={"key": "S", "value": "1"},
                                     headers=ADMIN)
            assert saved.status_code == 200
            proc.send_signal(signal.SIGKILL)  # every 2xx above was committed before it was sent
            proc.wait(10)
            proc = _spawn(tmp_path, port)
            await _wait_healthy(client)
            listed = {w["id"] for w in (await client.get("/workspaces", headers=ADMIN)).json()}
            assert listed == set(created)
            values = await client.get(f"/workspaces/{created[0]}/secrets/values", headers=bearer(token))
            assert values.json() == {"S": "1"}
    finally:
        proc.kill()
        proc.wait(10)
