"""A remote agent's whole life against a real box, the way the platform's SDK drives it."""

from __future__ import annotations

import httpx
import trio

from ..conftest import ADMIN, ADMIN_TOKEN, BoxRunner, bearer, create_external, joined, register


async def state(client: httpx.AsyncClient, wid: str, token: str) -> str:
    response = await client.get(f"/workspaces/{wid}/state", headers=bearer(token))
    assert response.status_code == 200, response.text
    return str(response.json()["status"])


async def heartbeat(client: httpx.AsyncClient, wid: str, token: str, **fields: object) -> httpx.Response:
    return await client.post("/registry/heartbeat", headers=bearer(token),
                             json={"workspace_id": wid, "active_tasks": 0, "uptime_seconds": 1.5, **fields})


async def test_remote_agent_lifecycle(runner: BoxRunner) -> None:
    deadline = 1.0
    box = await runner.start(REMOTE_LIVENESS_STALE_AFTER=str(deadline))
    async with httpx.AsyncClient(base_url=box.urls[0], timeout=10) as client:
        created = await create_external(client, "laptop-agent")
        wid = created["id"]
        assert created["status"] == "awaiting_agent"
        assert len(created["connection"]["auth_token"]) == 43

        put = await client.put(f"/workspaces/{wid}/secrets", json={"key": "OPENAI_API_KEY", "value": "sk-test"},
                               headers=ADMIN)
        assert put.status_code == 200
        glob = await client.put("/settings/secrets", json={"key": "SHARED", "value": "g"}, headers=ADMIN)
        assert glob.status_code == 200

        # The agent registers with the token of its connection block (the snippet's session carries it).
        token = created["connection"]["auth_token"]
        assert await register(client, wid, url="remote://no-inbound", token=token) == {"status": "registered"}

        values = await client.get(f"/workspaces/{wid}/secrets/values", headers=bearer(token))
        assert values.status_code == 200
        assert values.json() == {"OPENAI_API_KEY": "sk-test", "SHARED": "g"}

        assert (await heartbeat(client, wid, token)).json() == {"status": "ok"}
        assert await state(client, wid, token) == "online"

        # Heartbeats stop, and so does everything else the agent sends: offline within the deadline plus one
        # second. (Watched with the admin token: requests with the agent's own token are proof of life.)
        last_beat = trio.current_time()
        (await heartbeat(client, wid, token)).raise_for_status()
        with trio.fail_after(deadline + 1.0):
            while await state(client, wid, ADMIN_TOKEN) != "offline":
                await trio.sleep(0.02)
        assert trio.current_time() - last_beat >= deadline * 0.9

        events = (await client.get(f"/events/{wid}", headers=ADMIN)).json()
        assert events[0]["event_type"] == "WORKSPACE_OFFLINE"

        # It comes back with its next heartbeat.
        (await heartbeat(client, wid, token)).raise_for_status()
        assert await state(client, wid, token) == "online"

        listed = (await client.get("/workspaces", headers=ADMIN)).json()
        assert [w["id"] for w in listed] == [wid]
        assert listed[0]["url"] == "remote://no-inbound"


async def test_register_bootstrap_rules(client: httpx.AsyncClient) -> None:
    # The default: the token is in the connection block, and a register needs it from the start.
    created = await create_external(client)
    wid, token = created["id"], created["connection"]["auth_token"]
    refused = await client.post("/registry/register", json={"id": wid, "url": "http://127.0.0.1:1/"})
    assert refused.status_code == 401
    # With "bootstrap": "open", the first bearer-less register gets the token (the SDK's bootstrap) ...
    opened = (await create_external(client, "sdk", bootstrap="open"))["id"]
    assert len((await register(client, opened))["auth_token"]) == 43
    # ... and no second one does.
    again = await client.post("/registry/register", json={"id": opened, "url": "http://127.0.0.1:1/"})
    assert again.status_code == 401
    # With the token, register succeeds and mints nothing; with the admin token it mints a fresh one.
    again = await register(client, wid, token=token)
    assert "auth_token" not in again
    admin = await client.post("/registry/register", json={"id": wid, "url": "http://127.0.0.1:1/"}, headers=ADMIN)
    assert admin.status_code == 200 and len(admin.json()["auth_token"]) == 43


async def test_register_unknown_id_is_404_not_create(client: httpx.AsyncClient) -> None:
    response = await client.post("/registry/register", headers=ADMIN,
                                 json={"id": "6b7d8e8c-1d2a-4c55-9f0e-3b1e2a4c5d6e", "url": "http://127.0.0.1:1/"})
    assert response.status_code == 404
    assert (await client.get("/workspaces", headers=ADMIN)).json() == []


async def test_token_of_one_workspace_never_touches_another(client: httpx.AsyncClient) -> None:
    a = await create_external(client, "a")
    b = await create_external(client, "b")
    token_a = a["connection"]["auth_token"]
    await register(client, a["id"], token=token_a)
    (await heartbeat(client, a["id"], token_a)).raise_for_status()
    await register(client, b["id"], token=b["connection"]["auth_token"])
    denied = [
        await client.get(f"/workspaces/{b['id']}/secrets/values", headers=bearer(token_a)),
        await client.get(f"/workspaces/{b['id']}/state", headers=bearer(token_a)),
        await heartbeat(client, b["id"], token_a),
        await client.post(f"/workspaces/{b['id']}/pause", headers=bearer(token_a)),
        await client.post(f"/workspaces/{b['id']}/tokens", headers=bearer(token_a)),
        await client.patch(f"/workspaces/{b['id']}", json={"name": "x"}, headers=bearer(token_a)),
        await client.post("/registry/register", json={"id": b["id"], "url": "http://127.0.0.1:1/"},
                          headers=bearer(token_a)),
        await client.get("/workspaces", headers=bearer(token_a)),
    ]
    assert [r.status_code for r in denied] == [401] * len(denied)
    assert (await client.get(f"/workspaces/{b['id']}", headers=ADMIN)).json()["name"] == "b"


async def test_secret_values_only_for_own_token(client: httpx.AsyncClient) -> None:
    wid, token = await joined(client, secrets={"K": "v"})
    assert (await client.get(f"/workspaces/{wid}/secrets/values", headers=ADMIN)).status_code == 401
    assert (await client.get(f"/workspaces/{wid}/secrets/values", headers=bearer(token))).json() == {"K": "v"}
    listed = (await client.get(f"/workspaces/{wid}/secrets", headers=ADMIN)).json()
    assert listed[0]["key"] == "K" and "value" not in listed[0]


async def test_tokens_mint_list_revoke(client: httpx.AsyncClient) -> None:
    wid, token = await joined(client)
    minted = await client.post(f"/workspaces/{wid}/tokens", headers=bearer(token))
    assert minted.status_code == 201
    second = minted.json()["auth_token"]
    listing = (await client.get(f"/workspaces/{wid}/tokens", headers=ADMIN)).json()
    assert listing["count"] == 2  # the connection block's token and this one
    assert all(len(t["prefix"]) == 8 and "auth_token" not in t for t in listing["tokens"])
    revoked = await client.delete(f"/workspaces/{wid}/tokens/{minted.json()['id']}", headers=bearer(token))
    assert revoked.json() == {"status": "revoked"}
    assert (await heartbeat(client, wid, second)).status_code == 401
    again = await client.delete(f"/workspaces/{wid}/tokens/{minted.json()['id']}", headers=bearer(token))
    assert again.status_code == 404


async def test_model_endpoint(client: httpx.AsyncClient) -> None:
    wid = (await create_external(client))["id"]
    assert (await client.get(f"/workspaces/{wid}/model", headers=ADMIN)).json() == {"model": "", "source": "default"}
    saved = await client.put(f"/workspaces/{wid}/model", json={"model": "anthropic:claude"}, headers=ADMIN)
    assert saved.json() == {"status": "saved", "model": "anthropic:claude"}
    assert (await client.get(f"/workspaces/{wid}/model", headers=ADMIN)).json()["source"] == "workspace_secrets"
    cleared = await client.put(f"/workspaces/{wid}/model", json={"model": ""}, headers=ADMIN)
    assert cleared.json() == {"status": "cleared"}


async def test_a_busy_agent_that_still_makes_requests_stays_online(runner: BoxRunner) -> None:
    """User asks #1: an agent whose heartbeat loop is starved by a long task but that still polls its
    inbox is alive. Its requests move the deadline; once they stop too, it goes offline as usual."""
    deadline = 2.0  # the agent's requests keep it at least 1.3 s ahead: room for a slow CI machine
    box = await runner.start(REMOTE_LIVENESS_STALE_AFTER=str(deadline))
    async with httpx.AsyncClient(base_url=box.urls[0], timeout=10) as client:
        busy, busy_token = await joined(client, "busy", url="remote://no-inbound")
        silent, silent_token = await joined(client, "silent", url="remote://no-inbound")

        async def workspace(wid: str) -> dict[str, object]:
            return dict((await client.get(f"/workspaces/{wid}", headers=ADMIN)).json())

        # On time, heartbeats are the proof: requests in between are recorded nowhere (no extra writes).
        for _ in range(4):
            (await heartbeat(client, busy, busy_token)).raise_for_status()
            poll = await client.get(f"/workspaces/{busy}/activity", params={"type": "a2a_receive"},
                                    headers=bearer(busy_token))
            assert poll.status_code == 200
            await trio.sleep(0.15)
        assert (await workspace(busy))["last_seen_at"] is None

        # The heartbeats stop; the inbox polls go on for two deadlines.
        (await heartbeat(client, busy, busy_token)).raise_for_status()
        (await heartbeat(client, silent, silent_token)).raise_for_status()
        until = trio.current_time() + 2 * deadline
        while trio.current_time() < until:
            poll = await client.get(f"/workspaces/{busy}/activity", params={"type": "a2a_receive"},
                                    headers=bearer(busy_token))
            assert poll.status_code == 200
            await trio.sleep(0.1)
        assert await state(client, silent, ADMIN_TOKEN) == "offline"  # the deadline really is this short
        record = await workspace(busy)
        assert record["status"] == "online" and record["last_seen_at"] is not None

        # Nothing from the agent now: offline within the deadline plus one second of its last request.
        with trio.fail_after(deadline + 1.0):
            while await state(client, busy, ADMIN_TOKEN) != "offline":
                await trio.sleep(0.02)

        # A request from an offline agent does not bring it back: that takes a heartbeat or register.
        assert (await client.get(f"/workspaces/{busy}/activity", headers=bearer(busy_token))).status_code == 200
        await trio.sleep(0.3)
        assert await state(client, busy, ADMIN_TOKEN) == "offline"
        (await heartbeat(client, busy, busy_token)).raise_for_status()
        assert await state(client, busy, ADMIN_TOKEN) == "online"
