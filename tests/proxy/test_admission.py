"""Admission control of the proxy (A2A_ACTIVE_LIMIT): only work holds a slot, never a wait, and every path
gives its slot back. Run with a single slot, where one leaked or wrongly held slot stops every later call."""

from __future__ import annotations

import httpx
import trio

from ..conftest import ADMIN, BoxRunner, create_external
from .agents import TestAgent
from .test_proxy import _free_port, send_body, target


async def _raw_request(url: str, wid: str, body: bytes, length: int) -> trio.SocketStream:
    host, port = url.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    await stream.send_all(f"POST /workspaces/{wid}/a2a HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                          f"authorization: {ADMIN['Authorization']}\r\ncontent-length: {length}\r\n\r\n".encode()
                          + body)
    return stream


async def test_calls_waiting_for_their_agent_hold_no_slot(runner: BoxRunner, agent: TestAgent) -> None:
    box = await runner.start(A2A_ACTIVE_LIMIT="1")
    limits = httpx.Limits(max_connections=20)
    async with httpx.AsyncClient(base_url=box.urls[0], timeout=20, limits=limits) as client:
        wid, _ = await target(client, agent)
        agent.hold = True
        statuses: list[int] = []

        async def call(i: int) -> None:
            response = await client.post(f"/workspaces/{wid}/a2a", json=send_body(f"n{i}"), headers=ADMIN)
            statuses.append(response.status_code)

        async with trio.open_nursery() as nursery:
            for i in range(10):
                nursery.start_soon(call, i)
            with trio.fail_after(10):  # all ten reach the agent while it holds every one of them
                while len(agent.received) < 10:
                    await trio.sleep(0.02)
            agent.release.set()
        assert statuses == [200] * 10


async def test_a_slow_client_holds_no_slot(runner: BoxRunner, agent: TestAgent) -> None:
    box = await runner.start(A2A_ACTIVE_LIMIT="1")
    async with httpx.AsyncClient(base_url=box.urls[0], timeout=10) as client:
        wid, _ = await target(client, agent)
        stream = await _raw_request(box.urls[0], wid, b'{"jsonrpc"', 500)  # a body that never finishes arriving
        try:
            await trio.sleep(0.2)
            with trio.fail_after(5):
                response = await client.post(f"/workspaces/{wid}/a2a", json=send_body(), headers=ADMIN)
            assert response.status_code == 200
        finally:
            await stream.aclose()


async def test_every_path_gives_its_slot_back(runner: BoxRunner, agent: TestAgent) -> None:
    box = await runner.start(A2A_ACTIVE_LIMIT="1")
    async with httpx.AsyncClient(base_url=box.urls[0], timeout=10) as client:
        wid, _ = await target(client, agent)
        dead = (await create_external(client, "dead", url=f"http://127.0.0.1:{_free_port()}/"))["id"]
        poller = (await create_external(client, "poller"))["id"]  # no URL: poll mode, answered 202

        async def expect(path_id: str, status: int, body: object = None) -> None:
            with trio.fail_after(5):  # a slot kept by an earlier call would hang this one
                response = await client.post(f"/workspaces/{path_id}/a2a", json=body or send_body(), headers=ADMIN)
            assert response.status_code == status, response.text

        await expect("not-a-uuid", 400)
        await expect("00000000-0000-0000-0000-000000000000", 404)
        await expect(wid, 400, {"jsonrpc": "2.0", "method": 7})
        agent.fail_status = 500
        await expect(wid, 500)
        agent.fail_status = None
        await expect(dead, 502)
        await expect(poller, 202)
        agent.stream_events = 2
        await expect(wid, 200, send_body(method="message/stream"))
        agent.stream_events = 0
        agent.delay = 2.0
        # A caller that gives up mid-call (a raw socket: a cancelled httpx request leaks its body generator).
        body = b'{"jsonrpc":"2.0","id":1,"method":"message/send","params":{"message":{"role":"user","parts":[]}}}'
        stream = await _raw_request(box.urls[0], wid, body, len(body))
        await trio.sleep(0.3)
        await stream.aclose()
        agent.delay = 0.0
        await expect(wid, 200)
        await expect(wid, 200)
