"""A box restarted without the plugin some workspaces use: those are failed once, with the reason, no actor
crashes; the others carry on; with the plugin back, a restart of the workspace brings it back. And the plugin
loader's refusals (not installed, another contract version) reach the API as clear errors."""

from __future__ import annotations

from typing import Any

import httpx
import trio

from molecule_box.backends.base import CONTRACT_VERSION, Workload, WorkloadSpec

from ..actors.stubs import LifecycleStub
from ..conftest import ADMIN, BoxRunner, bearer, joined


class Fake(LifecycleStub):
    name = "fake"

    async def start(self, spec: WorkloadSpec) -> Workload:
        return Workload(handle={"workspace_id": spec.workspace_id})


class OldContract(Fake):
    name = "old"
    contract_version = 1


async def _status(client: httpx.AsyncClient, wid: str) -> dict[str, Any]:
    got = await client.get(f"/workspaces/{wid}", headers=ADMIN)
    assert got.status_code == 200
    body: dict[str, Any] = got.json()
    return body


async def _failed_events(client: httpx.AsyncClient, wid: str) -> list[dict[str, Any]]:
    history = (await client.get(f"/events/{wid}", headers=ADMIN)).json()
    return [e for e in history if e["event_type"] == "WORKSPACE_PROVISION_FAILED"]


async def test_workspace_of_a_missing_plugin_is_failed_once_and_comes_back(runner: BoxRunner) -> None:
    box = await runner.start(extra_backends={"fake": Fake})
    async with httpx.AsyncClient(base_url=box.urls[0], timeout=10) as client:
        created = await client.post("/workspaces", json={"name": "f", "backend": "fake"}, headers=ADMIN)
        assert created.status_code == 201, created.text
        wid = created.json()["id"]
        neighbour, token = await joined(client, "neighbour")
    await runner.stop()

    for _ in range(2):  # said once, not again at the next start
        box = await runner.start()
        async with httpx.AsyncClient(base_url=box.urls[0], timeout=10) as client:
            with trio.fail_after(10):
                while (got := await _status(client, wid))["status"] != "failed":
                    await trio.sleep(0.05)
            assert got["failure_reason"].startswith("backend 'fake' is not installed")
            assert len(await _failed_events(client, wid)) == 1
            failures = (await client.get(f"/workspaces/{wid}/failures", headers=ADMIN)).json()
            assert failures["actor_failures"] == []  # no crash on the way
            beat = await client.post("/registry/heartbeat", json={"workspace_id": neighbour}, headers=bearer(token))
            assert beat.status_code == 200
            # Still missing: a restart is refused with the reason, and the workspace stays as it is.
            refused = await client.post(f"/workspaces/{wid}/restart", headers=ADMIN)
            assert refused.status_code == 400 and refused.json()["code"] == "backend_not_installed"
            assert (await _status(client, wid))["status"] == "failed"
        await runner.stop()

    box = await runner.start(extra_backends={"fake": Fake})
    async with httpx.AsyncClient(base_url=box.urls[0], timeout=10) as client:
        assert (await _status(client, wid))["status"] == "failed"
        restarted = await client.post(f"/workspaces/{wid}/restart", headers=ADMIN)
        assert restarted.status_code == 200, restarted.text
        assert (await _status(client, wid))["status"] == "provisioning"


async def test_create_with_a_backend_not_installed_is_400(runner: BoxRunner) -> None:
    box = await runner.start()
    async with httpx.AsyncClient(base_url=box.urls[0], timeout=10) as client:
        refused = await client.post("/workspaces", json={"name": "n", "backend": "nope"}, headers=ADMIN)
        assert refused.status_code == 400
        body = refused.json()
        assert body["code"] == "backend_not_installed" and body["backend"] == "nope"
        assert "'nope' is not installed" in body["error"]


async def test_plugin_of_another_contract_version_is_refused(runner: BoxRunner) -> None:
    box = await runner.start(extra_backends={"old": OldContract})
    async with httpx.AsyncClient(base_url=box.urls[0], timeout=10) as client:
        refused = await client.post("/workspaces", json={"name": "o", "backend": "old"}, headers=ADMIN)
        assert refused.status_code == 503 and refused.json()["code"] == "backend_misconfigured"
        assert f"implements contract version 1, this box speaks {CONTRACT_VERSION}" in refused.json()["error"]
