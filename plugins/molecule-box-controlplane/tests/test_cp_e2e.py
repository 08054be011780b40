"""End to end through the box's HTTP API: a real ``molecule-box run`` with MOLECULE_ORG_ID set (so
``controlplane`` is the default backend) against the emulator.

The emulator's instances are records, not machines: nothing boots on them. The test therefore plays the
workspace's agent itself, registering with the token the box delivered in the provision's env
(``MOLECULE_WORKSPACE_TOKEN``, read back from the emulator as the agent on the instance would read its env):
what the box must prove is that this token, and only the box's provision, brings the workspace online; an
agent really booting and registering is what the docker backend's tests cover.
"""

from __future__ import annotations

import signal
from typing import Any

import httpx
from cp_support import (
    ADMIN,
    RunningEmulator,
    cp_env,
    create,
    none_live,
    register_as_agent,
    running_instance,
    status_is,
    wait_until,
    workspace,
)


async def test_lifecycle_through_the_api(emulator: RunningEmulator, box_factory: Any) -> None:
    """create → provisioning → running instance → registered → online; pause and resume; delete deprovisions
    and leaves nothing live in the emulator."""
    box = box_factory(cp_env(emulator))
    await box.start()
    async with httpx.AsyncClient(base_url=box.url, timeout=10) as client:
        created = await create(client, tier=2)
        wid = created["id"]
        ws = await workspace(client, wid)
        assert ws["backend"] == "controlplane", ws
        await register_as_agent(client, emulator, wid)
        await status_is(client, wid, "online")
        first = emulator.live_of(wid)
        assert len(first) == 1
        instance = emulator.state.instances[first[0]]
        assert (instance.requested_tier, instance.tier) == (2, 4), "the EC2 clamp raises tier 2 to 4"
        assert instance.org_id == "org-test"

        answer = await client.post(f"/workspaces/{wid}/pause", headers=ADMIN, json={})
        assert answer.status_code == 200, answer.text
        await wait_until(lambda: none_live(emulator, wid))
        answer = await client.post(f"/workspaces/{wid}/resume", headers=ADMIN, json={})
        assert answer.status_code == 200, answer.text
        await register_as_agent(client, emulator, wid, not_in=first)
        await status_is(client, wid, "online")
        second = emulator.live_of(wid)
        assert len(second) == 1 and second != first

        answer = await client.delete(f"/workspaces/{wid}", headers=ADMIN, params={"confirm": "true"})
        assert answer.status_code == 200, answer.text
        await wait_until(lambda: none_live(emulator, wid))
        assert emulator.state.calls.get("DELETE /cp/workspaces", 0) >= 2


async def test_sigkill_restart_adopts(emulator: RunningEmulator, box_factory: Any) -> None:
    """SIGKILL the box, start it again: the instance is adopted (still online, same instance, nothing
    provisioned twice)."""
    box = box_factory(cp_env(emulator))
    await box.start()
    async with httpx.AsyncClient(base_url=box.url, timeout=10) as client:
        wid = (await create(client))["id"]
        await register_as_agent(client, emulator, wid)
        await status_is(client, wid, "online")
        before = emulator.live_of(wid)
        provisions = emulator.state.calls["POST /cp/workspaces/provision"]
        await box.kill(signal.SIGKILL)
        await box.start()
        ws = await workspace(client, wid)
        assert ws["status"] == "online", ws

        async def adopted() -> bool:
            return "adopted its running workload" in box.log()
        await wait_until(adopted)
        assert emulator.live_of(wid) == before
        assert emulator.state.calls["POST /cp/workspaces/provision"] == provisions


async def test_bootstrap_failed_is_the_failure_reason(emulator: RunningEmulator, box_factory: Any) -> None:
    """The emulator's crash knob posts bootstrap-failed as the CP's bootstrap watcher does: the provisioning
    workspace fails with the error and the console tail; a second report changes nothing."""
    box = box_factory(cp_env(emulator))
    await box.start()
    async with httpx.AsyncClient(base_url=box.url, timeout=10) as client:
        wid = (await create(client))["id"]
        await running_instance(emulator, wid)
        said = await emulator.knob("crash", workspace_id=wid, error="ImportError: no module named langgraph")
        assert said == {"tenant_status": 200, "tenant_body": {"ok": True}}, said
        ws = await status_is(client, wid, "failed")
        assert ws["failure_reason"].startswith("bootstrap failed: ImportError: no module named langgraph")
        assert "RUNTIME CRASHED" in ws["failure_reason"] and "molecule runtime langgraph starting" in \
            ws["failure_reason"]
        again = await emulator.knob("crash", workspace_id=wid)
        assert again["tenant_body"] == {"ok": True, "no_change": True}


async def test_bootstrap_failed_needs_the_admin_token(emulator: RunningEmulator, box_factory: Any) -> None:
    box = box_factory(cp_env(emulator))
    await box.start()
    async with httpx.AsyncClient(base_url=box.url, timeout=10) as client:
        wid = (await create(client))["id"]
        answer = await client.post(f"/admin/workspaces/{wid}/bootstrap-failed", json={"error": "x"},
                                   headers={"Authorization": "Bearer wrong"})
        assert answer.status_code == 401
        answer = await client.post(f"/admin/workspaces/{wid}/bootstrap-failed", json={"error": 5}, headers=ADMIN)
        assert answer.status_code == 400
        assert (await workspace(client, wid))["status"] == "provisioning"


async def test_a_control_plane_without_the_listing(emulator: RunningEmulator, box_factory: Any) -> None:
    """The instance listing is the box's addition: a control plane answering it 404 still provisions, stops
    and deprovisions (only the orphan sweep has nothing to go on)."""
    emulator.state.lists = False
    box = box_factory(cp_env(emulator))
    await box.start()
    async with httpx.AsyncClient(base_url=box.url, timeout=10) as client:
        wid = (await create(client))["id"]
        await register_as_agent(client, emulator, wid)
        await status_is(client, wid, "online")
        before = emulator.live_of(wid)
        answer = await client.post(f"/workspaces/{wid}/restart", headers=ADMIN, json={})
        assert answer.status_code == 200, answer.text
        await register_as_agent(client, emulator, wid, not_in=before)
        await status_is(client, wid, "online")
        assert len(emulator.live_of(wid)) == 1, "the previous instance was replaced"
        answer = await client.delete(f"/workspaces/{wid}", headers=ADMIN, params={"confirm": "true"})
        assert answer.status_code == 200, answer.text
        await wait_until(lambda: none_live(emulator, wid))
