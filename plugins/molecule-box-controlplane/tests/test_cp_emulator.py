"""The emulator as users run it (``python -m molecule_box_controlplane.emulator``): both auth headers, the
admin bearer apart from the shared secret, 201 on provision with the tier clamp reported back, 404/409 on an
unknown or mismatched instance_id, the state machine, the console."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

import httpx
import pytest
import trio
from cp_support import free_port, wait_until

SECRET, ADMIN_API, TENANT = "s-secret", "a-admin", "t-tenant"
WS = {"Authorization": f"Bearer {SECRET}", "X-Molecule-Admin-Token": TENANT}
CP_ADMIN = {"Authorization": f"Bearer {ADMIN_API}", "X-Molecule-Admin-Token": TENANT}


@pytest.fixture
async def cli_emulator() -> AsyncIterator[str]:
    port = free_port()
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "molecule_box_controlplane.emulator", "--port", str(port), "--shared-secret", SECRET,
         "--admin-api-token", ADMIN_API, "--tenant-admin-token", TENANT, "--boot", "0.2", "--stop", "0.1"])
    url = f"http://127.0.0.1:{port}"
    try:
        async def up() -> bool:
            try:
                async with httpx.AsyncClient() as client:
                    return (await client.get(f"{url}/_emulator/instances")).status_code == 200
            except httpx.TransportError:
                return False
        await wait_until(up)
        yield url
    finally:
        proc.kill()
        with trio.move_on_after(10):
            await proc.wait()


async def test_auth_states_and_clamp(cli_emulator: str) -> None:
    async with httpx.AsyncClient(base_url=cli_emulator, timeout=10) as client:
        body = {"workspace_id": "ws-1", "tier": 2, "runtime": "langgraph", "org_id": "o", "env": {}}
        for headers in ({"Authorization": "Bearer wrong", "X-Molecule-Admin-Token": TENANT},
                        {"Authorization": f"Bearer {SECRET}"},
                        {"Authorization": f"Bearer {SECRET}", "X-Molecule-Admin-Token": "wrong"}):
            assert (await client.post("/cp/workspaces/provision", json=body, headers=headers)).status_code == 401
        made = await client.post("/cp/workspaces/provision", json=body, headers=WS)
        assert made.status_code == 201, made.text
        instance = made.json()
        assert instance["state"] == "pending" and instance["tier"] == 4
        assert instance["instance_id"].startswith("i-")
        iid = instance["instance_id"]

        async def running() -> bool:
            got = await client.get("/cp/workspaces/ws-1/status", params={"instance_id": iid}, headers=WS)
            return bool(got.json()["state"] == "running")
        await wait_until(running)
        assert (await client.get("/cp/workspaces/ws-1/status", params={"instance_id": "i-0"},
                                 headers=WS)).status_code == 404
        assert (await client.get("/cp/workspaces/ws-2/status", params={"instance_id": iid},
                                 headers=WS)).status_code == 409

        assert (await client.get("/cp/admin/workspaces/ws-1/console", headers=WS)).status_code == 401
        console = await client.get("/cp/admin/workspaces/ws-1/console", headers=CP_ADMIN)
        assert "molecule runtime langgraph starting" in console.json()["output"]

        assert (await client.delete("/cp/workspaces/ws-1", params={"instance_id": iid}, headers=WS)).json() == \
            {"state": "stopping"}

        async def terminated() -> bool:
            got = await client.get("/cp/workspaces/ws-1/status", params={"instance_id": iid}, headers=WS)
            return bool(got.json()["state"] == "terminated")
        await wait_until(terminated)

        await client.post("/_emulator/fault", json={"mode": "oversized", "count": 1})
        big = await client.get("/cp/workspaces/ws-1/status", params={"instance_id": iid}, headers=WS)
        assert len(big.content) > 64 * 1024
        await client.post("/_emulator/fault", json={"mode": "malformed", "count": 1})
        bad = await client.get("/cp/workspaces/ws-1/status", params={"instance_id": iid}, headers=WS)
        with pytest.raises(ValueError):
            bad.json()
        assert (await client.post("/_emulator/fault", json={"mode": "nonsense"})).status_code == 400
