"""A heartbeat's scheduling rounds: under load every round of the trio loop carries every other ready task, so
a heartbeat's latency is its rounds times the round's length (bench/README.md, #16's fifth round). Counted, not
timed: the batches of task steps between two waits for I/O, while one kept-alive client sends heartbeats."""

from __future__ import annotations

import json

import httpx
import trio

from molecule_box.box import Box
from tests.api.test_connections import ask, connect
from tests.conftest import joined


class Rounds(trio.abc.Instrument):
    """The loop's batches: the task steps between two waits for I/O."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = [[]]

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.batches[-1].append(task.name)

    def before_io_wait(self, timeout: float) -> None:
        if self.batches[-1]:
            self.batches.append([])

    def count(self) -> int:
        return sum(1 for batch in self.batches if batch)


async def test_a_heartbeat_is_answered_in_three_rounds_of_the_box(box: Box, client: httpx.AsyncClient) -> None:
    """The server reads it and runs the handler in the same round (api/connection.py: a heartbeat is run
    inline), which submits the parked actor's op in its name (WorkspaceActor.lend, the actor is never
    scheduled); the writer begins the commit, the commit thread's delivery runs the actor's continuation
    (its record, its events, the reply), the handler writes the answer: three rounds of the box's and the
    client's two ends make five. It was nine before the writer delivered in the commit's own callback and
    the actor answered from its continuation (the writer and then the actor were each scheduled once more),
    seven before the handler ran inline, and six while the actor was woken to submit."""
    wid, token = await joined(client)
    body = json.dumps({"workspace_id": wid, "active_tasks": 1, "current_task": "t", "uptime_seconds": 77}).encode()
    request = (f"POST /registry/heartbeat HTTP/1.1\r\nHost: box\r\nAuthorization: Bearer {token}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    stream = await connect(box.urls[0])
    async with stream:
        for _ in range(3):  # the connection, the actor and the writer are warm
            await ask(stream, request, 200)
        rounds = []
        for _ in range(5):
            counter = Rounds()
            trio.lowlevel.add_instrument(counter)
            try:
                await ask(stream, request, 200)
            finally:
                trio.lowlevel.remove_instrument(counter)
            rounds.append(counter.count())
    assert min(rounds) <= 5, rounds
    assert not any(name.startswith("actor:") for batch in counter.batches for name in batch), counter.batches
    # What the continuation set is what the next read sees: the record is the actor's, already.
    shown = (await client.get(f"/workspaces/{wid}", headers={"Authorization": f"Bearer {token}"})).json()
    assert shown["active_tasks"] == 1 and shown["uptime_seconds"] == 77


async def test_a_heartbeat_whose_body_follows_its_head_in_another_write_is_answered(
        box: Box, client: httpx.AsyncClient) -> None:
    """Not run inline (its body was not there when its head was read): the handler's own task reads it."""
    wid, token = await joined(client)
    body = json.dumps({"workspace_id": wid, "active_tasks": 2}).encode()
    head = (f"POST /registry/heartbeat HTTP/1.1\r\nHost: box\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    stream = await connect(box.urls[0])
    async with stream:
        await stream.send_all(head)
        await trio.sleep(0.05)
        assert await ask(stream, body, 200) == b""
    shown = (await client.get(f"/workspaces/{wid}", headers={"Authorization": f"Bearer {token}"})).json()
    assert shown["active_tasks"] == 2
