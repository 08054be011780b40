"""Pause, resume, hibernate, wake and delete, with their cascades, through the real API."""

from __future__ import annotations

import httpx
import trio

from molecule_box.backends import Workload, WorkloadSpec

from ..actors.stubs import LifecycleStub
from ..conftest import ADMIN, BoxRunner, bearer, create_external, joined


async def status(client: httpx.AsyncClient, wid: str) -> str:
    return str((await client.get(f"/workspaces/{wid}", headers=ADMIN)).json()["status"])


async def test_pause_resume_cascade(client: httpx.AsyncClient) -> None:
    parent, token = await joined(client, "parent")
    child, child_tok = await joined(client, "child", parent_id=parent)
    r = await client.post(f"/workspaces/{parent}/pause", headers=bearer(token))
    assert r.json() == {"status": "paused", "paused_count": 2}
    assert await status(client, child) == "paused"
    state = (await client.get(f"/workspaces/{child}/state", headers=bearer(child_tok))).json()
    assert state["paused"] is True
    # A heartbeat does not undo a pause.
    await client.post("/registry/heartbeat", json={"workspace_id": child}, headers=bearer(child_tok))
    assert await status(client, child) == "paused"
    assert (await client.post(f"/workspaces/{parent}/pause", headers=ADMIN)).status_code == 404
    blocked = await client.post(f"/workspaces/{child}/resume", headers=ADMIN)
    assert blocked.status_code == 409 and "resume it first" in blocked.json()["error"]
    resumed = await client.post(f"/workspaces/{parent}/resume", headers=ADMIN)
    assert resumed.json() == {"status": "awaiting_agent", "resumed_count": 2}
    # The SDK stops its loop on pause; on resume the agent registers again (with its token).
    again = await client.post("/registry/register", json={"id": child, "url": "http://127.0.0.1:9/"},
                              headers=bearer(child_tok))
    assert again.status_code == 200 and await status(client, child) == "online"
    assert (await client.post(f"/workspaces/{child}/resume", headers=ADMIN)).status_code == 404


async def test_hibernate_and_wake(client: httpx.AsyncClient) -> None:
    wid, token = await joined(client, "sleepy")
    await client.post("/registry/heartbeat", json={"workspace_id": wid, "active_tasks": 2}, headers=bearer(token))
    busy = await client.post(f"/workspaces/{wid}/hibernate", headers=ADMIN)
    assert busy.status_code == 409 and busy.json()["active_tasks"] == 2
    forced = await client.post(f"/workspaces/{wid}/hibernate?force=true", headers=ADMIN)
    assert forced.json() == {"status": "hibernated"}
    assert await status(client, wid) == "hibernated"
    assert (await client.post(f"/workspaces/{wid}/hibernate", headers=ADMIN)).status_code == 404
    woken = await client.post(f"/workspaces/{wid}/wake", headers=bearer(token))
    assert woken.json() == {"status": "online"}
    assert await status(client, wid) == "online"
    assert (await client.post(f"/workspaces/{wid}/hibernate?force=true", headers=ADMIN)).status_code == 200
    assert (await client.post(f"/workspaces/{wid}/resume", headers=ADMIN)).json()["status"] == "online"
    assert (await client.post(f"/workspaces/{wid}/wake", headers=ADMIN)).status_code == 409


async def test_a_paused_parent_blocks_every_wake(client: httpx.AsyncClient) -> None:
    """The proxy's wake of a hibernated workspace and the API's wake pass the same tree rule as resume: a
    workspace under a paused parent stays asleep, and the caller learns why."""
    parent, _ = await joined(client, "parent")
    assert (await client.post(f"/workspaces/{parent}/pause", headers=ADMIN)).status_code == 200
    child, _ = await joined(client, "child", parent_id=parent)  # created under the paused parent
    assert (await client.post(f"/workspaces/{child}/hibernate", headers=ADMIN)).json() == {"status": "hibernated"}
    call = {"jsonrpc": "2.0", "id": 1, "method": "message/send",
            "params": {"message": {"role": "user", "parts": [{"kind": "text", "text": "hi"}]}}}
    called = await client.post(f"/workspaces/{child}/a2a", json=call, headers=ADMIN)
    assert called.status_code == 409 and 'parent workspace "parent" is paused' in called.json()["error"]
    woken = await client.post(f"/workspaces/{child}/wake", headers=ADMIN)
    assert woken.status_code == 409 and "resume it first" in woken.json()["error"]
    assert await status(client, child) == "hibernated"
    assert (await client.post(f"/workspaces/{parent}/resume", headers=ADMIN)).json()["resumed_count"] == 1
    assert (await client.post(f"/workspaces/{child}/a2a", json=call, headers=ADMIN)).json()["waking"] is True
    with trio.fail_after(5):
        while await status(client, child) != "online":
            await trio.sleep(0.05)


class StartingBackend(LifecycleStub):
    """A lifecycle backend whose workloads start at once (and never exist)."""

    async def start(self, spec: WorkloadSpec) -> Workload:
        return Workload(handle={"workspace_id": spec.workspace_id})


async def test_a_paused_parent_blocks_the_secret_change_restart(runner: BoxRunner) -> None:
    """A secret change restarts a box-run workload through the same tree rule as an operator's restart: not
    one under a paused parent."""
    box = await runner.start(extra_backends={"starting": StartingBackend})
    async with httpx.AsyncClient(base_url=box.urls[0], timeout=10) as client:
        parent, _ = await joined(client, "parent")
        assert (await client.post(f"/workspaces/{parent}/pause", headers=ADMIN)).status_code == 200
        created = {}
        for name, fields in (("held", {"parent_id": parent}), ("free", {})):
            response = await client.post("/workspaces", json={"name": name, "backend": "starting", **fields},
                                         headers=ADMIN)
            assert response.status_code == 201, response.text
            created[name] = response.json()["id"]
        for wid in created.values():
            saved = await client.put(f"/workspaces/{wid}/secrets", json={"key": "K", "value": "v"}, headers=ADMIN)
            assert saved.status_code == 200
        blocked = await client.post(f"/workspaces/{created['held']}/restart", headers=ADMIN)
        assert blocked.status_code == 409 and "resume it first" in blocked.json()["error"]

        async def starts(wid: str) -> int:
            events = (await client.get(f"/events/{wid}", headers=ADMIN)).json()
            return sum(e["event_type"] == "WORKSPACE_PROVISIONING" for e in events)

        assert await starts(created["free"]) == 2  # created, then restarted for the secret
        assert await starts(created["held"]) == 1  # created only


async def test_restart_of_remote_agent_is_refused(client: httpx.AsyncClient) -> None:
    wid, token = await joined(client)
    r = await client.post(f"/workspaces/{wid}/restart", headers=bearer(token))
    assert r.status_code == 409 and "restart the agent itself" in r.json()["error"]


async def test_delete_cascades_after_confirmation(client: httpx.AsyncClient) -> None:
    root, root_tok = await joined(client, "root")
    child, child_tok = await joined(client, "child", parent_id=root)
    grandchild = (await create_external(client, "grandchild", parent_id=child))["id"]
    unconfirmed = await client.delete(f"/workspaces/{root}", headers=ADMIN)
    assert unconfirmed.status_code == 409
    body = unconfirmed.json()
    assert body["status"] == "confirmation_required" and body["children_count"] == 1
    assert body["children"][0]["name"] == "child"
    assert await status(client, root) == "online"
    deleted = await client.delete(f"/workspaces/{root}?confirm=true", headers=ADMIN)
    assert deleted.json() == {"status": "removed", "cascade_deleted": 2}
    for wid in (root, child, grandchild):
        assert await status(client, wid) == "removed"
    gone = await client.get(f"/workspaces/{child}/state", headers=bearer(child_tok))
    assert gone.status_code == 404 and gone.json()["deleted"] is True
    assert (await client.post("/registry/heartbeat", json={"workspace_id": root},
                              headers=bearer(root_tok))).status_code == 401
    late = await client.post("/registry/register", json={"id": root, "url": "http://127.0.0.1:9/"},
                             headers=bearer(root_tok))
    assert late.status_code == 404  # no resurrection
    assert (await client.get("/workspaces", headers=ADMIN)).json() == []
    events = [e["event_type"] for e in (await client.get(f"/events/{root}", headers=ADMIN)).json()]
    assert events[0] == "WORKSPACE_REMOVED"


async def test_purge_removes_rows(client: httpx.AsyncClient) -> None:
    wid, _ = await joined(client)
    purged = await client.delete(f"/workspaces/{wid}?purge=true", headers=ADMIN)
    assert purged.json() == {"status": "purged", "cascade_deleted": 0}
    assert (await client.get(f"/workspaces/{wid}", headers=ADMIN)).status_code == 404


async def test_patch_fields(client: httpx.AsyncClient) -> None:
    a, token = await joined(client, "a")
    b, _ = await joined(client, "b", parent_id=a)
    r = await client.patch(f"/workspaces/{a}", json={"name": "renamed", "role": "lead", "x": 1.5, "y": 2},
                           headers=bearer(token))
    assert r.json() == {"status": "updated"}
    got = (await client.get(f"/workspaces/{a}", headers=ADMIN)).json()
    assert (got["name"], got["role"], got["x"], got["y"]) == ("renamed", "lead", 1.5, 2)
    cycle = await client.patch(f"/workspaces/{a}", json={"parent_id": b}, headers=ADMIN)
    assert cycle.status_code == 400
