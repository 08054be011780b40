"""The forwarding client's fast paths (proxy/client.py) against a real agent on 127.0.0.1: what they skip
(scheduling rounds, an ACK per read) must not change what the proxy reads, reuses or retries."""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trio
import trio.testing

from molecule_box.proxy.admission import Admission
from molecule_box.proxy.client import AgentPool, UpstreamError

REPLY = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"ok": True}}).encode()
HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(REPLY)
Serve = Callable[[trio.SocketStream], Awaitable[None]]


async def _read_request(stream: trio.SocketStream, buf: bytearray) -> bool:
    """Read one request (head and Content-Length body) off ``buf``/``stream``; False at the client's end."""
    while b"\r\n\r\n" not in buf:
        data = await stream.receive_some(65536)
        if not data:
            return False
        buf += data
    end = buf.index(b"\r\n\r\n")
    head = bytes(buf[:end]).lower()
    length = int(head.split(b"content-length:")[1].split(b"\r\n")[0]) if b"content-length:" in head else 0
    while len(buf) < end + 4 + length:
        data = await stream.receive_some(65536)
        if not data:
            return False
        buf += data
    del buf[:end + 4 + length]
    return True


@pytest.fixture
async def agent(nursery: trio.Nursery) -> AsyncIterator[Callable[[Serve], Awaitable[AgentPool]]]:
    """Start an agent whose connections ``serve`` handles; a pool to it, closed when the test ends."""
    pools: list[AgentPool] = []

    async def start(serve: Serve) -> AgentPool:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
        pools.append(AgentPool("http", "127.0.0.1", int(listeners[0].socket.getsockname()[1]), "127.0.0.1"))
        return pools[-1]
    try:
        yield start
    finally:
        for pool in pools:
            pool.close()


async def _keep_alive(stream: trio.SocketStream) -> None:
    buf = bytearray()
    while await _read_request(stream, buf):
        await stream.send_all(HEAD + REPLY)  # head and body in one write


async def _one_request_then_close(stream: trio.SocketStream) -> None:
    """Answers one request without ``Connection: close`` and closes: the keep-alive race, every time."""
    if await _read_request(stream, bytearray()):
        await stream.send_all(HEAD + REPLY)
    await stream.aclose()


async def test_a_whole_reply_is_read_without_a_scheduling_round(
        agent: Callable[[Serve], Awaitable[AgentPool]]) -> None:
    pool = await agent(_keep_alive)
    for _ in range(3):
        async with pool.post("/", [], b"{}") as resp:
            assert resp.status == 200
            if len(resp._conn.buf) < len(REPLY):  # the body came in a later segment: the slow path is fine
                assert json.loads(await resp.read(10_000)) == json.loads(REPLY)
                continue
            with trio.testing.assert_no_checkpoints():
                body = await resp.read(10_000)
            assert json.loads(body) == json.loads(REPLY)
    assert pool.opened == 1  # every call after the first on the kept-alive connection


async def test_a_reply_over_the_limit_is_refused_from_the_buffer_too(
        agent: Callable[[Serve], Awaitable[AgentPool]]) -> None:
    pool = await agent(_keep_alive)
    async with pool.post("/", [], b"{}") as resp:
        with pytest.raises(UpstreamError, match="over 10 bytes"):
            await resp.read(10)
    assert pool.opened == 1


async def test_a_connection_the_agent_closed_is_retried_on_a_fresh_one(
        agent: Callable[[Serve], Awaitable[AgentPool]]) -> None:
    pool = await agent(_one_request_then_close)
    for calls in (1, 2, 3):
        async with pool.post("/", [], b"{}") as resp:
            assert resp.status == 200 and json.loads(await resp.read(10_000)) == json.loads(REPLY)
        await trio.sleep(0.05)  # the agent's close has arrived: the next call meets a dead kept-alive socket
        assert pool.opened == calls


async def test_a_closed_connection_forgets_its_descriptor(agent: Callable[[Serve], Awaitable[AgentPool]]) -> None:
    """The number of a closed socket may be reused by the next one opened: reading it would read another
    connection's bytes. After ``close_now`` the connection answers from its closed stream instead."""
    pool = await agent(_keep_alive)
    conn = await pool._open()
    assert conn.fd is not None
    conn.close_now()
    assert conn.fd is None
    other = await pool._open()  # most likely given the same descriptor number
    with pytest.raises(trio.ClosedResourceError):
        await conn.receive()
    other.close_now()


async def test_a_close_wakes_a_call_waiting_for_its_reply(nursery: trio.Nursery,
                                                          agent: Callable[[Serve], Awaitable[AgentPool]]) -> None:
    async def never_answers(stream: trio.SocketStream) -> None:
        await _read_request(stream, bytearray())
        await trio.sleep_forever()

    pool = await agent(never_answers)
    conn = await pool._open()
    failed = trio.Event()

    async def waiter() -> None:
        await conn.send(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
        with pytest.raises(trio.ClosedResourceError):
            await conn.receive()
        failed.set()

    nursery.start_soon(waiter)
    await trio.sleep(0.05)
    conn.close_now()
    with trio.fail_after(5):
        await failed.wait()


async def test_a_free_slot_is_taken_without_a_scheduling_round_and_waiters_keep_their_turn() -> None:
    slots = trio.Semaphore(1)
    first, second, third = Admission(slots), Admission(slots), Admission(slots)
    with trio.testing.assert_no_checkpoints():
        await first.enter()
    order: list[str] = []

    async def enter(name: str, admission: Admission) -> None:
        await admission.enter()
        order.append(name)
        admission.leave()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(enter, "second", second)
        await trio.testing.wait_all_tasks_blocked()
        first.leave()  # the slot goes to the waiting second, not to whoever asks next
        nursery.start_soon(enter, "third", third)
    assert order == ["second", "third"]
