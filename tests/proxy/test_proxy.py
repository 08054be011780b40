"""The A2A proxy against a real box and real agents on 127.0.0.1."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import httpx
import trio

from molecule_box.box import Box

from ..api.test_restart import _free_port, _spawn, _wait_healthy
from ..conftest import ADMIN, BoxRunner, bearer, create_external, joined, register
from .agents import TestAgent, serve_agent
from .conftest import wait_logged


def send_body(text: str = "hi", message_id: str | None = None, method: str = "message/send") -> dict[str, Any]:
    message: dict[str, Any] = {"role": "user", "parts": [{"kind": "text", "text": text}]}
    if message_id:
        message["messageId"] = message_id
    return {"jsonrpc": "2.0", "id": 1, "method": method, "params": {"message": message}}


async def target(client: httpx.AsyncClient, agent: TestAgent, name: str = "target", **fields: Any) -> tuple[str, str]:
    return await joined(client, name, url=agent.url, **fields)


async def test_human_and_agent_callers(client: httpx.AsyncClient, agent: TestAgent) -> None:
    wid, _ = await target(client, agent)
    caller, caller_tok = await joined(client, "caller")
    human = await client.post(f"/workspaces/{wid}/a2a", json={"method": "message/send", "params": {
        "message": {"role": "user", "parts": [{"kind": "text", "text": "hello"}]}}}, headers=ADMIN)
    assert human.status_code == 200
    assert human.json()["result"]["parts"][0]["text"] == "echo: hello"
    forwarded = agent.received[-1][1]
    assert forwarded["jsonrpc"] == "2.0" and forwarded["params"]["message"]["messageId"]  # wrapped + completed
    peer = await client.post(f"/workspaces/{wid}/a2a", json=send_body("x", "m-1"),
                             headers={"X-Workspace-ID": caller, "A2A-Version": "1.0", **bearer(caller_tok)})
    assert peer.status_code == 200
    headers, forwarded = agent.received[-1]
    assert headers["a2a-version"] == "1.0" and "authorization" not in headers
    assert forwarded == send_body("x", "m-1")  # byte for byte when nothing was missing
    await wait_logged(client, wid, 2)
    rows = (await client.get(f"/workspaces/{wid}/activity?source=canvas", headers=ADMIN)).json()
    assert [r["source_id"] for r in rows] == [None]
    rows = (await client.get(f"/workspaces/{wid}/activity?source=agent", headers=ADMIN)).json()
    assert rows[0]["source_id"] == caller and rows[0]["status"] == "ok" and rows[0]["method"] == "message/send"
    # The successful call moved the caller's last_outbound_at (the target's stays unset: it sent nothing).
    with trio.fail_after(5):
        while (await client.get(f"/workspaces/{caller}", headers=ADMIN)).json()["last_outbound_at"] is None:
            await trio.sleep(0.05)
    assert (await client.get(f"/workspaces/{wid}", headers=ADMIN)).json()["last_outbound_at"] is None


async def test_failed_call_leaves_last_outbound_at_alone(client: httpx.AsyncClient, agent: TestAgent) -> None:
    wid, _ = await target(client, agent)
    caller, caller_tok = await joined(client, "caller")
    headers = {"X-Workspace-ID": caller, **bearer(caller_tok)}
    agent.fail_status = 500
    assert (await client.post(f"/workspaces/{wid}/a2a", json=send_body(), headers=headers)).status_code == 500
    await trio.sleep(0.2)
    assert (await client.get(f"/workspaces/{caller}", headers=ADMIN)).json()["last_outbound_at"] is None
    agent.fail_status = None
    assert (await client.post(f"/workspaces/{wid}/a2a", json=send_body(), headers=headers)).status_code == 200
    with trio.fail_after(5):
        while (await client.get(f"/workspaces/{caller}", headers=ADMIN)).json()["last_outbound_at"] is None:
            await trio.sleep(0.05)


async def test_self_call_logged_with_own_id(client: httpx.AsyncClient, agent: TestAgent) -> None:
    wid, token = await target(client, agent)
    response = await client.post(f"/workspaces/{wid}/a2a", json=send_body(),
                                 headers={"X-Workspace-ID": wid, **bearer(token)})
    assert response.status_code == 200
    await wait_logged(client, wid, 1)
    rows = (await client.get(f"/workspaces/{wid}/activity?type=a2a_receive", headers=ADMIN)).json()
    assert rows[-1]["source_id"] == wid


async def test_auth_denials(client: httpx.AsyncClient, agent: TestAgent) -> None:
    wid, token = await target(client, agent, "root-a")
    child, child_tok = await joined(client, "child", parent_id=wid)
    other_root, other_tok = await joined(client, "root-b")
    cousin, cousin_tok = await joined(client, "cousin", parent_id=other_root)
    cases = [
        ({}, 401),  # nobody
        ({"X-Workspace-ID": child}, 401),  # no token
        ({"X-Workspace-ID": child, **bearer(other_tok)}, 401),  # another workspace's token
        (bearer(child_tok), 401),  # a workspace token is not a human/admin call
        ({"X-Workspace-ID": "system:cron", **ADMIN}, 403),  # system prefixes only from inside
        ({"X-Workspace-ID": "webhook:github", **bearer(child_tok)}, 403),
        ({"X-Workspace-ID": cousin, **bearer(cousin_tok)}, 403),  # hierarchy: another tree's child
    ]
    for headers, status in cases:
        response = await client.post(f"/workspaces/{wid}/a2a", json=send_body(), headers=headers)
        assert response.status_code == status, (headers, response.text)
        assert "error" in response.json()
    assert agent.received == []
    ok = await client.post(f"/workspaces/{wid}/a2a", json=send_body(),
                           headers={"X-Workspace-ID": child, **bearer(child_tok)})
    assert ok.status_code == 200
    del token


async def test_bad_bodies(client: httpx.AsyncClient, agent: TestAgent) -> None:
    wid, _ = await target(client, agent)
    cases = [(b"{nope", 400), (b"[1]", 400), (b'{"jsonrpc":"2.0","id":1}', 400),
             (b'{"jsonrpc":"2.0","id":1,"method":"message/send","params":{"message":{"parts":[{"text":"' +
              b"x" * (1024 * 1024) + b'"}]}}}', 413)]
    for body, status in cases:
        response = await client.post(f"/workspaces/{wid}/a2a", content=body, headers=ADMIN)
        assert response.status_code == status
    assert (await client.post("/workspaces/nope/a2a", json=send_body(), headers=ADMIN)).status_code == 400
    unknown = "6b7d8e8c-1d2a-4c55-9f0e-3b1e2a4c5d6e"
    assert (await client.post(f"/workspaces/{unknown}/a2a", json=send_body(), headers=ADMIN)).status_code == 404
    assert (await client.post(f"/workspaces/{wid}/a2a", json=send_body(), headers={**ADMIN, "X-Timeout": "soon"})
            ).status_code == 400
    assert agent.received == []


async def test_stream_passes_through_as_it_arrives(client: httpx.AsyncClient, agent: TestAgent) -> None:
    wid, _ = await target(client, agent)
    agent.stream_events, agent.stream_gap = 3, 0.5
    first_at = None
    events = []
    start = trio.current_time()
    async with client.stream("POST", f"/workspaces/{wid}/a2a", json=send_body(method="message/stream"),
                             headers=ADMIN) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        async for chunk in response.aiter_raw():
            if first_at is None:
                first_at = trio.current_time() - start
                assert not agent.finished.is_set()  # the agent is still working
            events += [line for line in chunk.decode().split("\n") if line.startswith("data: ")]
    assert len(events) == 3 and first_at is not None and first_at < 0.5
    with trio.fail_after(2):
        await agent.finished.wait()


async def test_agent_error_and_unreachable(client: httpx.AsyncClient, agent: TestAgent) -> None:
    wid, _ = await target(client, agent)
    agent.fail_status = 500
    failed = await client.post(f"/workspaces/{wid}/a2a", json=send_body(), headers=ADMIN)
    assert failed.status_code == 500 and failed.json() == {"error": "agent exploded"}
    port = _free_port()
    dead = (await create_external(client, "dead", url=f"http://127.0.0.1:{port}/"))["id"]
    unreachable = await client.post(f"/workspaces/{dead}/a2a", json=send_body(), headers=ADMIN)
    assert unreachable.status_code == 502 and unreachable.json()["delivery_confirmed"] is False


async def test_caller_deadline(client: httpx.AsyncClient, agent: TestAgent) -> None:
    wid, _ = await target(client, agent)
    agent.delay = 5
    start = trio.current_time()
    response = await client.post(f"/workspaces/{wid}/a2a", json=send_body(), headers={**ADMIN, "X-Timeout": "0.5"})
    assert response.status_code == 504 and "X-Timeout" in response.json()["error"]
    assert 0.4 < trio.current_time() - start < 2.5


async def test_idle_timeout_reset_by_heartbeats(runner: BoxRunner, agent: TestAgent) -> None:
    box = await runner.start(A2A_IDLE_TIMEOUT_SECONDS="1")
    async with httpx.AsyncClient(base_url=box.urls[0], timeout=10) as client:
        wid, token = await target(client, agent)
        agent.delay = 2.5
        silent = await client.post(f"/workspaces/{wid}/a2a", json=send_body(), headers=ADMIN)
        assert silent.status_code == 504 and "idle" in silent.json()["error"]

        done = trio.Event()

        async def beat() -> None:  # stopped between requests: a cancelled httpx request leaks its body generator
            while not done.is_set():
                await client.post("/registry/heartbeat", json={"workspace_id": wid}, headers=bearer(token))
                with trio.move_on_after(0.3):
                    await done.wait()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(beat)
            alive = await client.post(f"/workspaces/{wid}/a2a", json=send_body(), headers=ADMIN)
            done.set()
        assert alive.status_code == 200


async def test_unavailable_targets(client: httpx.AsyncClient, agent: TestAgent) -> None:
    wid, token = await target(client, agent)
    await client.post(f"/workspaces/{wid}/pause", headers=ADMIN)
    paused = await client.post(f"/workspaces/{wid}/a2a", json=send_body(), headers=ADMIN)
    assert paused.status_code == 503 and paused.headers["retry-after"] == "30"
    await register(client, wid, url=agent.url, token=token)
    await client.post(f"/workspaces/{wid}/hibernate", headers=ADMIN)
    asleep = await client.post(f"/workspaces/{wid}/a2a", json=send_body(), headers=ADMIN)
    assert asleep.status_code == 503 and asleep.json()["waking"] is True and asleep.headers["retry-after"] == "15"
    with trio.fail_after(5):
        while (await client.get(f"/workspaces/{wid}", headers=ADMIN)).json()["status"] != "online":
            await trio.sleep(0.05)
    assert (await client.post(f"/workspaces/{wid}/a2a", json=send_body(), headers=ADMIN)).status_code == 200


async def test_busy_target_queues_then_drains_once(client: httpx.AsyncClient, agent: TestAgent) -> None:
    wid, token = await target(client, agent)
    await client.post("/registry/heartbeat", json={"workspace_id": wid, "active_tasks": 1}, headers=bearer(token))
    first = await client.post(f"/workspaces/{wid}/a2a", json=send_body("later", "busy-1"), headers=ADMIN)
    assert first.status_code == 202
    body = first.json()
    assert body["queued"] is True and body["queue_depth"] == 1
    again = await client.post(f"/workspaces/{wid}/a2a", json=send_body("later", "busy-1"), headers=ADMIN)
    assert again.json()["queue_id"] == body["queue_id"] and again.json()["duplicate"] is True
    assert agent.received == []
    await client.post("/registry/heartbeat", json={"workspace_id": wid, "active_tasks": 0}, headers=bearer(token))
    with trio.fail_after(5):
        while not agent.received:
            await trio.sleep(0.05)
    await trio.sleep(0.3)
    assert [p["params"]["message"]["messageId"] for _, p in agent.received] == ["busy-1"]
    with trio.fail_after(5):  # the delivery's outcome is committed after the agent answered
        while (queue := (await client.get(f"/workspaces/{wid}/queue", headers=ADMIN)).json())[0]["status"] \
                == "dispatched":
            await trio.sleep(0.02)
    assert [(q["message_id"], q["status"]) for q in queue] == [("busy-1", "completed")]


async def test_full_queue_is_429_and_retries_still_find_their_row(runner: BoxRunner, agent: TestAgent) -> None:
    box = await runner.start(A2A_QUEUE_LIMIT="2")
    async with httpx.AsyncClient(base_url=box.urls[0], timeout=10) as client:
        wid, token = await target(client, agent)
        await client.post("/registry/heartbeat", json={"workspace_id": wid, "active_tasks": 1}, headers=bearer(token))
        for n in (1, 2):
            queued = await client.post(f"/workspaces/{wid}/a2a", json=send_body("x", f"q-{n}"), headers=ADMIN)
            assert queued.status_code == 202 and queued.json()["queue_depth"] == n
        full = await client.post(f"/workspaces/{wid}/a2a", json=send_body("x", "q-3"), headers=ADMIN)
        assert full.status_code == 429 and full.headers["retry-after"] == "30"
        assert full.json()["queued"] is False and full.json()["queue_depth"] == 2 and "full" in full.json()["error"]
        again = await client.post(f"/workspaces/{wid}/a2a", json=send_body("x", "q-1"), headers=ADMIN)
        assert again.status_code == 202 and again.json()["duplicate"] is True  # a retry is not refused
        caller, caller_tok = await joined(client, "boss")
        delegated = await client.post(f"/workspaces/{wid}/delegate", json={"task": "t", "idempotency_key": "k"},
                                      headers={"X-Workspace-ID": caller, **bearer(caller_tok)})
        assert delegated.status_code == 429
        queue = (await client.get(f"/workspaces/{wid}/queue", headers=ADMIN)).json()
        assert sorted(q["message_id"] for q in queue) == ["q-1", "q-2"]  # nothing half-written by the refusals
        delegations = (await client.get(f"/workspaces/{caller}/delegations", headers=ADMIN))
        assert delegations.status_code == 200 and delegations.json() == [], delegations.text


async def test_poll_mode_inbox_without_self_echo(client: httpx.AsyncClient) -> None:
    poller, token = await joined(client, "poller", url="remote://no-inbound")
    peer, peer_tok = await joined(client, "peer")
    sent = await client.post(f"/workspaces/{poller}/a2a", json=send_body("ping from peer"),
                             headers={"X-Workspace-ID": peer, **bearer(peer_tok)})
    assert sent.status_code == 202 and sent.json()["delivery"] == "poll"
    user = await client.post(f"/workspaces/{poller}/a2a", json=send_body("from the user"), headers=ADMIN)
    assert user.status_code == 202
    own = await client.post(f"/workspaces/{poller}/a2a", json=send_body("talking to myself"),
                            headers={"X-Workspace-ID": poller, **bearer(token)})
    assert own.status_code == 202
    notified = await client.post(f"/workspaces/{poller}/notify", json={"message": "done!"}, headers=bearer(token))
    assert notified.json() == {"status": "sent"}
    inbox = await client.get(f"/workspaces/{poller}/activity?type=a2a_receive&since_id=0&limit=100",
                             headers=bearer(token))
    rows = inbox.json()
    assert [r["data"]["text"] for r in rows] == ["ping from peer", "from the user"]  # oldest first, no echo
    assert rows[0]["data"]["source"] == "peer_agent" and rows[0]["data"]["peer_name"] == "peer"
    assert rows[1]["data"]["source"] == "canvas_user" and rows[1]["source_id"] is None
    later = await client.get(f"/workspaces/{poller}/activity?type=a2a_receive&since_id={rows[0]['id']}",
                             headers=bearer(token))
    assert [r["data"]["text"] for r in later.json()] == ["from the user"]
    by_peer = await client.get(f"/workspaces/{poller}/activity?type=a2a_receive&since_id=0&peer_id={peer}",
                               headers=bearer(token))
    assert len(by_peer.json()) == 1


async def test_pruned_cursor_is_410(box: Box, client: httpx.AsyncClient) -> None:
    from molecule_box.store import activity as activity_rows

    poller, token = await joined(client, "poller", url="remote://no-inbound")
    for text in ("a", "b"):
        await client.post(f"/workspaces/{poller}/a2a", json=send_body(text), headers=ADMIN)
    rows = (await client.get(f"/workspaces/{poller}/activity?type=a2a_receive&since_id=0",
                             headers=bearer(token))).json()
    await box.store.write(activity_rows.prune(older_than=1e12))
    gone = await client.get(f"/workspaces/{poller}/activity?type=a2a_receive&since_id={rows[0]['id']}",
                            headers=bearer(token))
    assert gone.status_code == 410


async def test_delegate_sdk_form_is_idempotent(client: httpx.AsyncClient, agent: TestAgent) -> None:
    wid, _ = await target(client, agent, "worker")
    boss, boss_tok = await joined(client, "boss")
    headers = {"X-Workspace-ID": boss, **bearer(boss_tok)}
    first = await client.post(f"/workspaces/{wid}/delegate", json={"task": "summarise", "idempotency_key": "k1"},
                              headers=headers)
    assert first.status_code == 202 and first.json()["status"] == "delegated"
    again = await client.post(f"/workspaces/{wid}/delegate", json={"task": "summarise", "idempotency_key": "k1"},
                              headers=headers)
    assert again.status_code == 200 and again.json()["idempotent_hit"] is True
    assert again.json()["delegation_id"] == first.json()["delegation_id"]
    with trio.fail_after(5):
        while True:
            rows = (await client.get(f"/workspaces/{boss}/delegations", headers=bearer(boss_tok))).json()
            if rows and rows[0]["status"] == "completed":
                break
            await trio.sleep(0.05)
    assert len(agent.received) == 1
    assert rows[0]["result"]["result"]["parts"][0]["text"] == "echo: summarise"
    own = await client.post(f"/workspaces/{boss}/delegate", json={"task": "x"}, headers=headers)
    assert own.status_code == 400


async def test_queued_message_survives_sigkill_and_is_delivered_once(tmp_path: Path, nursery: trio.Nursery) -> None:
    agent = TestAgent()
    agent.url = await serve_agent(nursery, agent)
    port = _free_port()
    proc = _spawn(tmp_path, port)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            await _wait_healthy(client)
            wid, token = await target(client, agent)
            await client.post("/registry/heartbeat", json={"workspace_id": wid, "active_tasks": 1},
                              headers=bearer(token))
            queued = await client.post(f"/workspaces/{wid}/a2a", json=send_body("survive", "durable-1"),
                                       headers=ADMIN)
            assert queued.status_code == 202
            proc.send_signal(signal.SIGKILL)  # right after the 202
            proc.wait(10)
            assert agent.received == []
            proc = _spawn(tmp_path, port)
            await _wait_healthy(client)
            for _ in range(3):  # spare capacity, reported more than once: still delivered once
                await client.post("/registry/heartbeat", json={"workspace_id": wid, "active_tasks": 0},
                                  headers=bearer(token))
                await trio.sleep(0.3)
            with trio.fail_after(5):
                while not agent.received:
                    await trio.sleep(0.05)
            await trio.sleep(0.5)
            ids = [p["params"]["message"]["messageId"] for _, p in agent.received]
            assert ids == ["durable-1"]
    finally:
        proc.kill()
        proc.wait(10)
