"""#10 items 1, 2 and 4, as an attacker drives them through the API: taking a workspace over with a
bearer-less register, leaving the hierarchy with PATCH, and raising its own tier before a restart."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import httpx
import pytest
import trio

from molecule_box.backends import Capabilities, Workload, WorkloadSpec

from ..actors.stubs import LifecycleStub
from ..conftest import ADMIN, BoxRunner, bearer, create_external, joined, register

ATTACKER_URL = "http://127.0.0.1:6666/"


async def bare_register(client: httpx.AsyncClient, wid: str, url: str = ATTACKER_URL) -> httpx.Response:
    """A register with no bearer, as anyone who learned the id (peers lists, /ws) can send it."""
    return await client.post("/registry/register", json={"id": wid, "url": url, "agent_card": {"name": "evil"}})


async def record(client: httpx.AsyncClient, wid: str) -> dict[str, Any]:
    """The admin's full view of the workspace (the list has budget and workspace_dir; the single GET not)."""
    return next(row for row in (await client.get("/workspaces", headers=ADMIN)).json() if row["id"] == wid)


async def live_tokens(client: httpx.AsyncClient, wid: str) -> int:
    return int((await client.get(f"/workspaces/{wid}/tokens", headers=ADMIN)).json()["count"])


class Recording(LifecycleStub):
    """A box-run backend that keeps every spec it was asked to start (what the container would be)."""

    name = "recording"
    specs: ClassVar[list[WorkloadSpec]] = []

    def capabilities(self) -> Capabilities:
        return Capabilities(lifecycle=True, prewrites_token=True)

    async def start(self, spec: WorkloadSpec) -> Workload:
        Recording.specs.append(spec)
        return Workload(handle={"workspace_id": spec.workspace_id, "start": len(Recording.specs)})


@pytest.fixture
async def lifecycle_client(runner: BoxRunner) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a box that also has the recording backend."""
    Recording.specs = []
    box = await runner.start(extra_backends={"recording": Recording})
    async with httpx.AsyncClient(base_url=box.urls[0], timeout=10) as client:
        yield client


async def started(wid: str, count: int) -> WorkloadSpec:
    """The ``count``-th spec started for ``wid`` (bounded wait: starts run in the actor's background)."""
    with trio.fail_after(5):
        while len(mine := [s for s in Recording.specs if s.workspace_id == wid]) < count:
            await trio.sleep(0.02)
    return mine[count - 1]


# -- 1. register takeover -------------------------------------------------------------------------------------


async def test_workspace_created_with_url_cannot_be_taken_over(client: httpx.AsyncClient) -> None:
    """molecule-core's C18: an external workspace created with a URL had no token, so anyone could register."""
    created = await create_external(client, "has-url", url="http://127.0.0.1:7000/")
    wid = created["id"]
    assert created["status"] == "online"

    stolen = await bare_register(client, wid)
    assert stolen.status_code == 401 and "auth_token" not in stolen.text
    assert (await record(client, wid))["url"] == "http://127.0.0.1:7000/"
    # Its token was minted at create, for the operator to hand to the agent.
    assert len(created["connection"]["auth_token"]) == 43 and await live_tokens(client, wid) == 1
    # The real agent, with the token from the connection block, still gets in.
    await register(client, wid, url="http://127.0.0.1:7001/", token=created["connection"]["auth_token"])
    assert (await record(client, wid))["url"] == "http://127.0.0.1:7001/"


async def test_awaiting_agent_cannot_be_raced(client: httpx.AsyncClient) -> None:
    """Before the agent's first call, its token was unused: a bare register won the workspace."""
    created = await create_external(client, "laptop")
    wid = created["id"]
    stolen = await bare_register(client, wid)
    assert stolen.status_code == 401
    got = await record(client, wid)
    assert got["status"] == "awaiting_agent" and not got["url"]
    assert await live_tokens(client, wid) == 1
    events = [e["event_type"] for e in (await client.get(f"/events/{wid}", headers=ADMIN)).json()]
    assert "WORKSPACE_ONLINE" not in events


async def test_box_run_workspace_cannot_be_grabbed_before_its_container_calls(
        lifecycle_client: httpx.AsyncClient) -> None:
    client = lifecycle_client
    """A box-run workspace between its start and its container's first call had only an unused token."""
    created = await client.post("/workspaces", json={"name": "worker", "backend": "recording"}, headers=ADMIN)
    assert created.status_code == 201
    wid = created.json()["id"]
    spec = await started(wid, 1)
    assert spec.auth_token is not None  # the container gets its token from the box

    assert (await bare_register(client, wid)).status_code == 401
    got = await record(client, wid)
    assert got["status"] == "provisioning" and not got["url"]
    # Nor can a box-run workspace be opened for the bearer-less bootstrap.
    opened = await client.post("/workspaces", json={"name": "w2", "backend": "recording", "bootstrap": "open"},
                               headers=ADMIN)
    assert opened.status_code == 400 and "bootstrap" in opened.json()["error"]
    # Its agent registers with the token it was given.
    await register(client, wid, url="http://127.0.0.1:7002/", token=spec.auth_token)
    assert (await record(client, wid))["status"] == "online"


async def test_open_bootstrap_is_claimed_once_and_never_reopened(client: httpx.AsyncClient) -> None:
    """The SDK's bearer-less bootstrap, asked for at create: the first register closes it for good, and
    revoking every token (an operator's rotation) does not reopen it."""
    created = await create_external(client, "sdk-agent", bootstrap="open")
    wid = created["id"]
    connection = created["connection"]
    assert connection["auth_token"] == "" and connection["bootstrap"] == "open"
    assert connection["bootstrap_expires_at"] is not None
    assert await live_tokens(client, wid) == 0

    async with trio.open_nursery() as nursery:  # two bare registers racing: exactly one wins
        answers: list[httpx.Response] = []

        async def one(url: str) -> None:
            answers.append(await bare_register(client, wid, url))

        nursery.start_soon(one, "http://127.0.0.1:7003/")
        nursery.start_soon(one, "http://127.0.0.1:7004/")
    assert sorted(r.status_code for r in answers) == [200, 401]
    winner = next(r for r in answers if r.status_code == 200)
    token = winner.json()["auth_token"]
    assert await live_tokens(client, wid) == 1

    history = (await client.get(f"/events/{wid}", headers=ADMIN)).json()
    boot = [e for e in history if e["event_type"] == "WORKSPACE_BOOTSTRAPPED"]
    assert len(boot) == 1 and boot[0]["payload"] == {"remote_addr": "127.0.0.1"}
    assert token not in json.dumps(history)

    # Rotation: a new token, then every token revoked. The door stays shut.
    minted = (await client.post(f"/workspaces/{wid}/tokens", headers=ADMIN)).json()
    for row in (await client.get(f"/workspaces/{wid}/tokens", headers=ADMIN)).json()["tokens"]:
        assert (await client.delete(f"/workspaces/{wid}/tokens/{row['id']}", headers=ADMIN)).status_code == 200
    assert await live_tokens(client, wid) == 0
    assert minted["auth_token"] != token
    assert (await bare_register(client, wid)).status_code == 401
    assert (await record(client, wid))["url"] != ATTACKER_URL


async def test_open_bootstrap_expires(box: Any, client: httpx.AsyncClient) -> None:
    created = await create_external(client, "late-agent", bootstrap="open", bootstrap_expires_in=1)
    wid = created["id"]
    with trio.fail_after(5):
        while box.now() <= box.store.db.execute(
                "SELECT expires_at FROM register_bootstrap WHERE workspace_id = ?", [wid]).fetchone()[0]:
            await trio.sleep(0.05)
    assert (await bare_register(client, wid)).status_code == 401
    assert await live_tokens(client, wid) == 0
    # Options that make no sense are refused, not ignored.
    bad = await client.post("/workspaces", json={"name": "x", "external": True, "bootstrap_expires_in": 60},
                            headers=ADMIN)
    assert bad.status_code == 400


async def test_an_agent_that_skips_register_comes_online_with_its_heartbeat(client: httpx.AsyncClient) -> None:
    """The SDK's ``connect --token`` never registers: its authenticated heartbeat brings it online."""
    created = await create_external(client, "connect-token")
    wid, token = created["id"], created["connection"]["auth_token"]
    beat = await client.post("/registry/heartbeat", json={"workspace_id": wid}, headers=bearer(token))
    assert beat.status_code == 200
    assert (await record(client, wid))["status"] == "online"
    # A heartbeat with no (or another's) token is still refused and changes nothing.
    other = await create_external(client, "other")
    assert (await client.post("/registry/heartbeat", json={"workspace_id": other["id"]},
                              headers=bearer(token))).status_code == 401
    assert (await record(client, other["id"]))["status"] == "awaiting_agent"


# -- 2. hierarchy escape, 4. tier self-escalation ----------------------------------------------------------


@pytest.mark.parametrize("change", [
    {"parent_id": None}, {"parent_id": "{other}"}, {"tier": 4}, {"runtime": "claude-code"},
    {"max_concurrent_tasks": 1000}, {"budget_limit": 10**9}, {"workspace_dir": "/srv/all-of-it"},
    {"name": "fine", "tier": 4},
], ids=lambda change: ",".join(change))
async def test_own_token_cannot_change_admin_fields(client: httpx.AsyncClient, change: dict[str, Any]) -> None:
    root, _ = await joined(client, "root")
    other, _ = await joined(client, "other-root")
    child, child_tok = await joined(client, "child", parent_id=root, tier=1, budget_limit=10)
    body = {k: (other if v == "{other}" else v) for k, v in change.items()}
    before = await record(client, child)

    refused = await client.patch(f"/workspaces/{child}", json=body, headers=bearer(child_tok))
    assert refused.status_code == 403, refused.text
    assert set(refused.json()["fields"]) == set(body) - {"name"}
    after = await record(client, child)
    assert after == before
    # Still where the admin put it: the other root's workspaces stay out of reach.
    assert (await client.get(f"/registry/discover/{other}",
                             headers={"X-Workspace-ID": child, **bearer(child_tok)})).status_code == 403

    # The admin may.
    done = await client.patch(f"/workspaces/{child}", json=body, headers=ADMIN)
    assert done.status_code == 200, done.text
    stored = await record(client, child)
    assert {key: stored[key] for key in body} == body


async def test_own_token_may_change_what_describes_it(client: httpx.AsyncClient) -> None:
    wid, token = await joined(client, "agent")
    changed = await client.patch(f"/workspaces/{wid}", json={"name": "renamed", "role": "researcher", "x": 1, "y": 2,
                                                          "collapsed": True}, headers=bearer(token))
    assert changed.status_code == 200
    card = await client.post("/registry/update-card", json={"workspace_id": wid, "agent_card": {"name": "n"}},
                             headers=bearer(token))
    assert card.status_code == 200
    got = await record(client, wid)
    assert (got["name"], got["role"], got["agent_card"]) == ("renamed", "researcher", {"name": "n"})


async def test_tier1_workspace_cannot_escalate_itself_through_a_restart(
        lifecycle_client: httpx.AsyncClient) -> None:
    client = lifecycle_client
    """With the token every container holds, a tier-1 workspace patched itself to tier 4 and restarted."""
    created = await client.post("/workspaces", json={"name": "sandboxed", "backend": "recording", "tier": 1},
                                headers=ADMIN)
    wid = created.json()["id"]
    first = await started(wid, 1)
    token = first.auth_token
    assert token is not None and first.tier == 1
    await register(client, wid, url="http://127.0.0.1:7005/", token=token)

    patched = await client.patch(f"/workspaces/{wid}", json={"tier": 4}, headers=bearer(token))
    assert patched.status_code == 403
    for options in ({"template": "privileged"}, {"apply_template": True}, {"reset": True}, {"rebuild_config": True}):
        refused = await client.post(f"/workspaces/{wid}/restart", json=options, headers=bearer(token))
        assert refused.status_code == 403, options
    assert len([s for s in Recording.specs if s.workspace_id == wid]) == 1  # nothing restarted

    # A restart by its own token rebuilds exactly what the admin configured.
    restarted = await client.post(f"/workspaces/{wid}/restart", json={"reset": False}, headers=bearer(token))
    assert restarted.status_code == 200, restarted.text
    second = await started(wid, 2)
    assert (second.tier, second.runtime, second.config) == (first.tier, first.runtime, first.config)
    assert second.auth_token not in (None, token)  # rotated

    # The admin's change does reach the next container.
    assert (await client.patch(f"/workspaces/{wid}", json={"tier": 2}, headers=ADMIN)).json() == {
        "status": "updated", "needs_restart": True}
    assert (await client.post(f"/workspaces/{wid}/restart", headers=ADMIN)).status_code == 200
    assert (await started(wid, 3)).tier == 2
