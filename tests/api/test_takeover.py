"""#10 item 1, as an attacker drives it through the API: taking a workspace over with a bearer-less
register."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

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
    specs: list[WorkloadSpec] = []

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
