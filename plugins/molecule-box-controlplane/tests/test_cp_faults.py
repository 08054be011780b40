"""Outages, fault knobs, refusals, unexpected ends and orphans, through the box's HTTP API."""

from __future__ import annotations

import signal
import time
from typing import Any

import httpx
import pytest
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


@pytest.mark.parametrize(("mode", "said"), [("5xx", "with HTTP 503"), ("hang", "did not answer"),
                                            ("malformed", "malformed JSON"), ("oversized", "body over 65536 bytes")])
async def test_a_passing_fault_is_retried(emulator: RunningEmulator, box_factory: Any, mode: str, said: str) -> None:
    """Two failed answers at create: the provision is retried (the box says why in its log) and the workspace
    comes up with one instance, none left over."""
    box = box_factory(cp_env(emulator))
    await box.start()
    async with httpx.AsyncClient(base_url=box.url, timeout=10) as client:
        await emulator.knob("fault", mode=mode, count=2)
        wid = (await create(client))["id"]
        await running_instance(emulator, wid)
        await register_as_agent(client, emulator, wid)
        await status_is(client, wid, "online")
        assert len(emulator.live_of(wid)) == 1
        assert said in box.log()


async def test_a_lasting_outage_ends_in_the_provision_timeout(emulator: RunningEmulator, box_factory: Any) -> None:
    box = box_factory(cp_env(emulator, PROVISION_TIMEOUT_SECONDS="3"))
    await box.start()
    async with httpx.AsyncClient(base_url=box.url, timeout=10) as client:
        await emulator.knob("fault", mode="5xx")
        wid = (await create(client))["id"]
        ws = await status_is(client, wid, "failed", timeout=15)
        assert "provisioning did not finish within 3s" in ws["failure_reason"]
        assert not emulator.live_of(wid)


async def test_a_refusal_is_the_failure_reason(emulator: RunningEmulator, box_factory: Any) -> None:
    """A definite refusal (a wrong shared secret: 401) is not retried: the workspace fails quoting the CP's
    error field."""
    box = box_factory(cp_env(emulator, MOLECULE_CP_SHARED_SECRET="wrong"))
    await box.start()
    async with httpx.AsyncClient(base_url=box.url, timeout=10) as client:
        wid = (await create(client))["id"]
        ws = await status_is(client, wid, "failed")
        assert "control plane refused the" in ws["failure_reason"]
        assert "HTTP 401" in ws["failure_reason"] and "invalid" in ws["failure_reason"]
        assert "wrong" not in box.log(), "a credential must never be logged"


async def test_outage_is_not_death(emulator: RunningEmulator, box_factory: Any) -> None:
    """While the CP answers 5xx the workspace stays online, although its instance ended meanwhile; once the CP
    answers again the box learns the instance is gone and provisions a new one."""
    box = box_factory(cp_env(emulator))
    await box.start()
    async with httpx.AsyncClient(base_url=box.url, timeout=10) as client:
        wid = (await create(client))["id"]
        await register_as_agent(client, emulator, wid)
        await status_is(client, wid, "online")
        first = emulator.live_of(wid)
        await emulator.knob("fault", mode="5xx")
        await emulator.knob("terminate", workspace_id=wid)
        faulted = emulator.state.faulted

        async def watched_through_it() -> bool:  # three status checks met the outage
            return emulator.state.faulted >= faulted + 3
        await wait_until(watched_through_it)
        assert (await workspace(client, wid))["status"] == "online"
        await emulator.knob("fault", mode="none")
        await wait_until(lambda: _replaced(emulator, wid, first))
        await status_is(client, wid, "provisioning", "online")


async def _replaced(emulator: RunningEmulator, wid: str, before: list[str]) -> bool:
    live = emulator.live_of(wid)
    return bool(live) and live != before


async def test_an_instance_that_keeps_ending_fails_with_its_console(emulator: RunningEmulator,
                                                                   box_factory: Any) -> None:
    """An instance that ends on its own is restarted by the box's policy; past RESTART_LIMIT the workspace
    fails, its reason carrying the instance's console output."""
    box = box_factory(cp_env(emulator, RESTART_LIMIT="1", RESTART_BACKOFF_SECONDS="0"))
    await box.start()
    async with httpx.AsyncClient(base_url=box.url, timeout=10) as client:
        wid = (await create(client))["id"]
        for _ in range(2):
            await running_instance(emulator, wid)
            await emulator.knob("terminate", workspace_id=wid)
            await wait_until(lambda: _gone_or_failed(client, emulator, wid))
        ws = await status_is(client, wid, "failed")
        assert "instance terminated unexpectedly" in ws["failure_reason"], ws["failure_reason"]


async def _gone_or_failed(client: httpx.AsyncClient, emulator: RunningEmulator, wid: str) -> bool:
    return (await workspace(client, wid))["status"] == "failed" or any(
        i.state(time.time()) == "pending" for i in emulator.state.live() if i.workspace_id == wid)


async def test_orphans_are_reconciled_away(emulator: RunningEmulator, box_factory: Any) -> None:
    """An instance labelled with this box's id that no workspace claims is deprovisioned by the orphan sweep
    (counted in /metrics); the workspace's own instance is kept."""
    box = box_factory(cp_env(emulator, ORPHAN_GRACE_SECONDS="1"))
    await box.start()
    async with httpx.AsyncClient(base_url=box.url, timeout=10) as client:
        wid = (await create(client))["id"]
        mine = await running_instance(emulator, wid)
        box_id = emulator.state.instances[mine].box_id
        await box.kill(signal.SIGKILL)
        status, body = await emulator.state.provision_instance(
            {"workspace_id": "0e4f5a1c-0000-4000-8000-000000000000", "tier": 3, "box_id": box_id,
             "org_id": "org-test"}, None)
        assert status == 201
        orphan = emulator.state.instances[body["instance_id"]]
        orphan.launched_at -= 600  # older than the grace period
        await box.start()
        await wait_until(lambda: _not_live(emulator, orphan.instance_id))

        async def counted() -> bool:
            metrics = (await client.get("/metrics")).text
            return 'molecule_box_orphans_removed_total{backend="controlplane"} 1.0' in metrics
        await wait_until(counted)
        assert mine in {i.instance_id for i in emulator.state.live()}


async def _not_live(emulator: RunningEmulator, instance_id: str) -> bool:
    return instance_id not in {i.instance_id for i in emulator.state.live()}


async def test_delete_through_an_outage_still_deprovisions(emulator: RunningEmulator, box_factory: Any) -> None:
    """The DELETE's answer is read: 5xx answers are retried until the instance reads terminated."""
    box = box_factory(cp_env(emulator))
    await box.start()
    async with httpx.AsyncClient(base_url=box.url, timeout=10) as client:
        wid = (await create(client))["id"]
        await running_instance(emulator, wid)
        await emulator.knob("fault", mode="5xx", count=3)
        answer = await client.delete(f"/workspaces/{wid}", headers=ADMIN,
                                     params={"confirm": "true"})
        assert answer.status_code == 200, answer.text
        await wait_until(lambda: none_live(emulator, wid))
        assert emulator.state.fault is None, "the faults were all met"


async def test_delete_finds_an_instance_the_box_never_stored(emulator: RunningEmulator, box_factory: Any) -> None:
    """An instance of the workspace that the box holds no handle for (its provision answered after the box
    died, say) is deprovisioned by the workspace's delete too: found in the control plane's listing."""
    box = box_factory(cp_env(emulator))
    await box.start()
    async with httpx.AsyncClient(base_url=box.url, timeout=10) as client:
        wid = (await create(client))["id"]
        mine = await running_instance(emulator, wid)
        status, _ = await emulator.state.provision_instance(
            {"workspace_id": wid, "tier": 3, "box_id": emulator.state.instances[mine].box_id, "org_id": "org-test"},
            None)
        assert status == 201 and len(emulator.live_of(wid)) == 2
        answer = await client.delete(f"/workspaces/{wid}", headers=ADMIN, params={"confirm": "true"})
        assert answer.status_code == 200, answer.text
        await wait_until(lambda: none_live(emulator, wid))
