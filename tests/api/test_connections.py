"""Connections through the box's HTTP server that must not wedge or pile up (#10 items 7 and 8).

Raw sockets against a real box, so each test controls exactly when which byte
is sent: a keep-alive connection after an early answer, ``Connection: close``
and HTTP/1.0, a client that sends no request head, and a flood of idle
connections from one client address.
"""

from __future__ import annotations

import uuid

import httpx
import pytest
import trio

from tests.conftest import BoxRunner


async def connect(url: str, local: str | None = None) -> trio.SocketStream:
    """A raw client connection, from ``local`` (another loopback address) if given."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = trio.socket.socket()
    if local is not None:
        await sock.bind((local, 0))
    await sock.connect((host, int(port)))
    return trio.SocketStream(sock)


async def read_response(stream: trio.SocketStream, buffered: bytes = b"") -> tuple[bytes | None, bytes]:
    """(status line, bytes after the response); (None, b"") if the box closed before a response began."""
    data = buffered
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            assert not data, f"the box closed mid-response: {data!r}"
            return None, b""
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = next(int(value) for name, _, value in (line.partition(b":") for line in lines[1:])
                  if name.strip().lower() == b"content-length")
    while len(rest) < length:
        chunk = await stream.receive_some(65536)
        assert chunk, "the box closed mid-body"
        rest += chunk
    return lines[0], rest[length:]


async def ask(stream: trio.SocketStream, request: bytes, status: int) -> bytes:
    """Send ``request``; its response must come within a generous bound with ``status``. Returns what followed."""
    await stream.send_all(request)
    with trio.fail_after(5):
        line, rest = await read_response(stream)
    assert line is not None and f" {status} ".encode() in line, line
    return rest


async def closed_by_box(stream: trio.SocketStream) -> bool:
    """Whether the box ends the connection (EOF or reset) within a generous bound, reading whatever comes."""
    with trio.move_on_after(5):
        try:
            while await stream.receive_some(65536):
                pass
        except trio.BrokenResourceError:  # a reset is a close too
            pass
        return True
    return False


@pytest.mark.parametrize("request_head", [
    b"GET /health HTTP/1.1\r\nHost: box\r\nConnection: close\r\n\r\n",
    b"GET /health HTTP/1.0\r\n\r\n",
], ids=["connection-close", "http-1.0"])
async def test_the_box_closes_a_connection_that_asked_for_it(runner: BoxRunner, request_head: bytes) -> None:
    box = await runner.start()
    for _ in range(5):
        stream = await connect(box.urls[0])
        async with stream:
            assert await ask(stream, request_head, 200) == b""
            assert await closed_by_box(stream), "the box must close the connection after its response"


@pytest.mark.parametrize(("request_line", "status"), [
    (f"PATCH /workspaces/{uuid.uuid4()}", 401),  # quart: the token is checked before the body is read
    ("POST /workspaces/not-an-id/a2a", 400),  # the proxy (raw ASGI): the id is checked before the body is read
], ids=["api-401", "proxy-400"])
async def test_the_next_request_after_an_early_answer_is_answered_never_left_hanging(
        runner: BoxRunner, request_line: str, status: int) -> None:
    """A request is refused before its body arrives; the body and a second request follow on the connection."""
    box = await runner.start()
    body = b'{"name": "renamed"}'
    head = (f"{request_line} HTTP/1.1\r\nHost: box\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    answered = 0
    for _ in range(100):
        stream = await connect(box.urls[0])
        async with stream:
            rest = await ask(stream, head, status)
            await trio.sleep(0.01)  # the body arrives after the answer
            with trio.move_on_after(5) as hung:
                try:
                    await stream.send_all(body)
                    await stream.send_all(b"GET /health HTTP/1.1\r\nHost: box\r\n\r\n")
                    second, _ = await read_response(stream, rest)
                except trio.BrokenResourceError:
                    second = None  # reset: closed, not hung
            assert not hung.cancelled_caught, "the second request on the connection hung"
            if second is not None:
                assert b" 200 " in second
                answered += 1
    assert answered == 100  # the body was drained and the connection reused


async def test_an_early_answer_whose_body_is_too_big_to_drain_closes_the_connection(runner: BoxRunner) -> None:
    box = await runner.start()
    size = 4 * 1024 * 1024
    stream = await connect(box.urls[0])
    async with stream:
        await ask(stream, (f"PATCH /workspaces/{uuid.uuid4()} HTTP/1.1\r\nHost: box\r\n"
                           f"Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n").encode(), 401)
        with trio.move_on_after(10):
            try:
                for _ in range(size // 65536):
                    await stream.send_all(b" " * 65536)
            except trio.BrokenResourceError:
                pass  # closed while we were still sending
        assert await closed_by_box(stream)
    async with httpx.AsyncClient(base_url=box.urls[0]) as client:  # and the box serves on
        assert (await client.get("/health")).status_code == 200


async def test_a_connection_without_a_request_head_is_closed_at_the_head_timeout(runner: BoxRunner) -> None:
    box = await runner.start(MOLECULE_BOX_HEAD_TIMEOUT="0.5")
    silent = await connect(box.urls[0])
    trickling = await connect(box.urls[0])
    async with silent, trickling:
        async def trickle() -> None:
            try:
                for byte in b"GET /health HTTP/1.1\r\nHost: box\r\nX-Slow: " + b"x" * 1000:
                    await trickling.send_all(bytes([byte]))
                    await trio.sleep(0.05)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trickle)
            assert await closed_by_box(silent), "a connection that sends nothing must be closed"
            assert await closed_by_box(trickling), "a head trickled byte by byte must be closed at the deadline"
            nursery.cancel_scope.cancel()


async def test_an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout(runner: BoxRunner) -> None:
    box = await runner.start(MOLECULE_BOX_KEEP_ALIVE_TIMEOUT="0.5")
    stream = await connect(box.urls[0])
    async with stream:
        await ask(stream, b"GET /health HTTP/1.1\r\nHost: box\r\n\r\n", 200)
        assert await closed_by_box(stream), "an idle keep-alive connection must not be kept forever"


async def test_idle_connections_from_one_address_do_not_delay_another_address(runner: BoxRunner) -> None:
    """200 connections from 127.0.0.1 that send nothing, then a request from 127.0.0.2.

    With one intake place, the idle ones used to be served in accept order, each holding the place for
    its 0.1 s hold: the newcomer waited about 20 s. Now it waits one turn."""
    box = await runner.start(MOLECULE_BOX_CONNECTION_INTAKE="1")
    idle = [await connect(box.urls[0]) for _ in range(200)]
    try:
        newcomer = await connect(box.urls[0], local="127.0.0.2")
        async with newcomer:
            await newcomer.send_all(b"GET /health HTTP/1.1\r\nHost: box\r\n\r\n")
            with trio.move_on_after(5) as waited:
                status, _ = await read_response(newcomer)
            assert not waited.cancelled_caught, "a client from another address waited behind the idle ones"
            assert status is not None and b" 200 " in status
    finally:
        for stream in idle:
            await stream.aclose()

