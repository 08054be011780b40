"""A busy workspace's queue drains at its agent's pace (issue #11 item 7): a real box, a real agent on 127.0.0.1.

Before, each heartbeat that showed spare capacity delivered one queued message, so a queue of 1,000 took
8 hours at a 30 s heartbeat."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio

from molecule_box.asgi import read_body
from molecule_box.box import Box

from ..conftest import ADMIN, bearer, create_external, joined, register
from .agents import TestAgent, serve_agent
from .test_proxy import send_body

CAPACITY = 4


class PacedAgent(TestAgent):
    """Answers each message after ``delay`` s, counting the calls in flight; once ``ok_left`` successes are
    used up (None: never) it answers every message with ``busy`` (a status and a body) until told otherwise."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.inflight = self.peak = 0
        self.arrived: list[str] = []  # message ids, in the order their requests arrived
        self.answered: list[str] = []  # message ids answered with a success
        self.ok_left: int | None = None
        self.busy: tuple[int, dict[str, Any]] = (503, {"error": "at capacity"})

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        payload = json.loads(await read_body(receive, 1024 * 1024))
        mid = payload["params"]["message"]["messageId"]
        self.arrived.append(mid)
        if self.hold:
            await self.release.wait()
        self.inflight += 1
        self.peak = max(self.peak, self.inflight)
        try:
            await trio.sleep(self.delay)
        finally:
            self.inflight -= 1
        if self.ok_left == 0:
            status, answer = self.busy
        else:
            if self.ok_left is not None:
                self.ok_left -= 1
            self.answered.append(mid)
            status, answer = 200, {"jsonrpc": "2.0", "id": payload.get("id"), "result": {
                "kind": "message", "role": "agent", "messageId": f"re-{mid}", "parts": [{"kind": "text", "text": mid}]}}
        out = json.dumps(answer).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())]})
        await send({"type": "http.response.body", "body": out})


async def _busy_target(client: httpx.AsyncClient, nursery: trio.Nursery, agent: PacedAgent,
                       messages: int) -> tuple[str, str]:
    """A workspace with max_concurrent_tasks CAPACITY whose agent reported all of it in use, and ``messages``
    queued for it through the API (m-0 the oldest)."""
    agent.url = await serve_agent(nursery, agent)
    wid, token = await joined(client, "paced", url=agent.url, max_concurrent_tasks=CAPACITY)
    await heartbeat(client, wid, token, active_tasks=CAPACITY)
    for n in range(messages):
        queued = await client.post(f"/workspaces/{wid}/a2a", json=send_body("work", f"m-{n}"), headers=ADMIN)
        assert queued.status_code == 202 and queued.json()["queue_depth"] == n + 1, queued.text
    return wid, token


async def heartbeat(client: httpx.AsyncClient, wid: str, token: str, *, active_tasks: int) -> None:
    response = await client.post("/registry/heartbeat", json={"workspace_id": wid, "active_tasks": active_tasks},
                                 headers=bearer(token))
    assert response.status_code == 200, response.text


async def queue(client: httpx.AsyncClient, wid: str) -> list[dict[str, Any]]:
    """The workspace's queue rows, oldest first."""
    return list(reversed((await client.get(f"/workspaces/{wid}/queue", headers=ADMIN)).json()))


async def drain_ended(box: Box, client: httpx.AsyncClient, wid: str) -> list[dict[str, Any]]:
    """Until the box has no drain running for ``wid`` and every outcome is written (at most 20 s); its queue."""
    with trio.fail_after(20):
        while True:
            rows = await queue(client, wid)
            if wid not in box.proxy.queue._drains and all(q["status"] != "dispatched" for q in rows):
                return rows
            await trio.sleep(0.02)


def fifo_within(order: list[str], window: int) -> bool:
    """Each message id ``m-<n>`` arrived at most ``window - 1`` places from its queue position: sent oldest
    first, reordered only among the ones in flight together (the agent works on them at once)."""
    return all(abs(place - int(mid.split("-")[1])) < window for place, mid in enumerate(order))


async def test_one_heartbeat_drains_the_whole_queue_at_the_agents_pace(box: Box, client: httpx.AsyncClient,
                                                                       nursery: trio.Nursery) -> None:
    agent = PacedAgent(delay=0.05)
    wid, token = await _busy_target(client, nursery, agent, 50)
    assert agent.arrived == []  # an agent at its max_concurrent_tasks gets nothing
    await heartbeat(client, wid, token, active_tasks=0)  # one sign of spare capacity, and no other
    rows = await drain_ended(box, client, wid)
    assert [(q["message_id"], q["status"], q["attempts"]) for q in rows] == [
        (f"m-{n}", "completed", 1) for n in range(50)]
    assert sorted(agent.arrived) == sorted(f"m-{n}" for n in range(50))  # each once
    assert agent.peak == CAPACITY  # its whole capacity in use, never more
    assert fifo_within(agent.arrived, CAPACITY), agent.arrived
    with trio.fail_after(5):  # an activity row per delivery (written off the delivery path)
        while len(logged := (await client.get(f"/workspaces/{wid}/activity?type=a2a_receive&limit=100",
                                              headers=ADMIN)).json()) < 50:
            await trio.sleep(0.02)
    assert {row["status"] for row in logged} == {"ok"}


@pytest.mark.parametrize("answer, counted", [
    ((503, {"error": "at capacity"}), False),
    ((429, {"error": "slow down"}), False),
    ((200, {"jsonrpc": "2.0", "id": 1, "error": {"code": -32000, "message": "at capacity", "data": {"busy": True}}}),
     False),
    ((500, {"error": "agent exploded"}), True),
], ids=["503", "429", "jsonrpc-busy", "500"])
async def test_an_answer_that_is_not_a_success_stops_the_drain_until_the_next_heartbeat(
        box: Box, client: httpx.AsyncClient, nursery: trio.Nursery, answer: tuple[int, dict[str, Any]],
        counted: bool) -> None:
    """A busy answer leaves its message queued without using up one of its attempts; any other failure uses
    one. Either way the drain stops: the messages behind wait for the next sign of capacity."""
    agent = PacedAgent(delay=0.02)
    agent.ok_left, agent.busy = 5, answer
    wid, token = await _busy_target(client, nursery, agent, 20)
    await heartbeat(client, wid, token, active_tasks=0)
    rows = await drain_ended(box, client, wid)
    done = [q["message_id"] for q in rows if q["status"] == "completed"]
    refused = [q for q in rows if q["last_error"]]
    assert sorted(done) == sorted(agent.answered) and len(done) == 5
    # Refused: the first message after the five and whatever was in flight beside it, no more.
    assert 1 <= len(refused) <= CAPACITY and len(agent.arrived) == 5 + len(refused)
    assert all(q["status"] == "queued" and q["attempts"] == int(counted) for q in refused), refused
    if not counted:
        assert all(q["last_error"].startswith("agent busy: ") for q in refused), refused
    assert sum(q["status"] == "queued" for q in rows) == 15

    agent.ok_left = None
    first = len(agent.arrived)
    await heartbeat(client, wid, token, active_tasks=CAPACITY)  # no spare capacity: still stopped
    await heartbeat(client, wid, token, active_tasks=0)
    rows = await drain_ended(box, client, wid)
    assert [q["status"] for q in rows] == ["completed"] * 20
    assert sorted(agent.answered) == sorted(f"m-{n}" for n in range(20))
    assert agent.peak <= CAPACITY
    # The second drain sends what is left oldest first (answers may pass each other: a slow one is overtaken
    # by any number of others, so the order of answers proves nothing).
    again = [int(mid.split("-")[1]) for mid in agent.arrived[first:]]
    assert all(abs(n - expected) < CAPACITY for n, expected in zip(again, sorted(again), strict=True)), again


async def test_a_drain_ends_with_the_box_and_its_messages_go_out_after_a_restart(
        runner: Any, nursery: trio.Nursery) -> None:
    """Deliveries in flight when the box stops are cancelled with it (they live in the proxy's nursery); their
    rows are queued again at start and delivered on the next sign of capacity."""
    agent = PacedAgent(delay=0.0)
    agent.hold = True  # every delivery waits for agent.release
    await runner.start()
    async with httpx.AsyncClient(base_url=runner.url, timeout=10) as client:
        wid, token = await _busy_target(client, nursery, agent, 10)
        await heartbeat(client, wid, token, active_tasks=0)
        with trio.fail_after(5):
            while len(agent.arrived) < CAPACITY:
                await trio.sleep(0.02)
    await runner.stop()  # bounded (15 s): the held deliveries do not keep the box up
    agent.hold = False
    agent.release.set()
    box = await runner.start()
    async with httpx.AsyncClient(base_url=runner.url, timeout=10) as client:
        await heartbeat(client, wid, token, active_tasks=0)
        rows = await drain_ended(box, client, wid)
    assert [q["status"] for q in rows] == ["completed"] * 10
    assert sorted(set(agent.answered)) == sorted(f"m-{n}" for n in range(10))


async def test_a_register_drains_what_was_queued_before_the_agent_came_up(box: Box, client: httpx.AsyncClient,
                                                                          nursery: trio.Nursery) -> None:
    """A delegation to a workspace whose agent has not registered yet waits in its queue (no spare capacity
    while it is not live); the register is a sign of capacity, seen on the bus as its WORKSPACE_ONLINE."""
    agent = PacedAgent(0.01)
    agent.url = await serve_agent(nursery, agent)
    source, source_token = await joined(client, "source")
    created = await create_external(client, "late")
    wid = created["id"]
    delegated = await client.post(f"/workspaces/{wid}/delegate", json={"task": "early work"},
                                  headers={"X-Workspace-ID": source, **bearer(source_token)})
    assert delegated.status_code == 202, delegated.text
    assert [q["status"] for q in await queue(client, wid)] == ["queued"]
    await register(client, wid, url=agent.url, token=created["connection"]["auth_token"])
    with trio.fail_after(10):
        while not agent.answered:
            await trio.sleep(0.02)
    assert [q["status"] for q in await drain_ended(box, client, wid)] == ["completed"]
    assert agent.answered == [delegated.json()["delegation_id"]]
