"""One client connection (api/connection.py): hypercorn's TCPServer with direct socket reads and writes, an
app queue without yields and one keep-alive timer per connection, on real sockets through ``server.serve``.

What it must keep: every byte of every response in order, whatever its size and however it is split; the
keep-alive timeout, which never cuts a request in the app; the close of idle connections when the server
stops; a client that leaves mid-response costs nothing but its connection. What it changes is counted with
a trio instrument (task steps and spawned tasks per request), beside hypercorn's own ``TCPServer``.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

import httpx
import pytest
import trio
from hypercorn.trio.tcp_server import TCPServer

from molecule_box.api import connection, server
from tests.api.test_connections import ask, closed_by_box, connect
from tests.api.test_server import App, serving

#: Sizes of the chunks /chunks streams: small ones, ones around the direct-write limit, and large ones (more
#: than the kernel's socket buffers hold: tcp_wmem's default maximum is 4 MiB).
CHUNKS = [1, 17, 1000, connection.DIRECT_WRITE_MAX - 1, connection.DIRECT_WRITE_MAX,
          connection.DIRECT_WRITE_MAX + 1, 300_000, 5, 8_000_000, 3]


def chunk(index: int, size: int) -> bytes:
    """Content that tells a lost, doubled or reordered byte from the right one."""
    pattern = f"<{index}>".encode()
    return (pattern * (size // len(pattern) + 1))[:size]


class StreamingApp(App):
    """``/chunks``: CHUNKS as separate body messages; ``/endless``: 64 KiB messages until ``http.disconnect``."""

    def __init__(self) -> None:
        super().__init__()
        self.left = trio.Event()  # /endless saw its client leave

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/chunks":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", str(sum(CHUNKS)).encode())]})
            for index, size in enumerate(CHUNKS):
                await send({"type": "http.response.body", "body": chunk(index, size), "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        if scope["type"] == "http" and scope["path"] == "/endless":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            async with trio.open_nursery() as nursery:
                async def until_disconnect() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    self.left.set()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(until_disconnect)
                while True:
                    await send({"type": "http.response.body", "body": b"x" * 65536, "more_body": True})
                    await trio.lowlevel.checkpoint()
            return
        await super().__call__(scope, receive, send)


async def test_every_byte_of_a_streamed_response_arrives_in_order_over_one_connection(tmp_path: Any) -> None:
    expected = b"".join(chunk(index, size) for index, size in enumerate(CHUNKS))
    async with serving(tmp_path, StreamingApp(), server.Intake(4)) as (url, _):
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            for _ in range(3):  # kept alive: the next response follows the last one's bytes exactly
                response = await client.get("/chunks")
                assert response.status_code == 200
                assert response.content == expected
                assert (await client.get("/")).text == "ok"


async def test_an_http2_client_gets_every_stream_whole_over_one_connection(tmp_path: Any) -> None:
    """h2 with prior knowledge: many streams at once write through one socket, each its own app and queue."""
    expected = b"".join(chunk(index, size) for index, size in enumerate(CHUNKS))
    async with serving(tmp_path, StreamingApp(), server.Intake(4)) as (url, _):
        async with httpx.AsyncClient(base_url=url, http1=False, http2=True, timeout=30) as client:
            async def fetch(path: str, body: bytes) -> None:
                response = await client.get(path)
                assert response.http_version == "HTTP/2"
                assert response.status_code == 200 and response.content == body

            async with trio.open_nursery() as nursery:
                for _ in range(4):
                    nursery.start_soon(fetch, "/chunks", expected)
                    nursery.start_soon(fetch, "/", b"ok")


async def test_a_slow_reader_gets_the_whole_response(tmp_path: Any) -> None:
    """The socket fills, so writes go through trio's waits; what was written directly comes first."""
    expected = b"".join(chunk(index, size) for index, size in enumerate(CHUNKS))
    async with serving(tmp_path, StreamingApp(), server.Intake(4)) as (url, _):
        stream = await connect(url)
        async with stream:
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            await stream.send_all(b"GET /chunks HTTP/1.1\r\nHost: box\r\n\r\n")
            await trio.sleep(0.5)  # the box writes until the socket is full, then waits
            received = b""
            with trio.fail_after(30):
                while b"\r\n\r\n" not in received or len(received.partition(b"\r\n\r\n")[2]) < len(expected):
                    data = await stream.receive_some(65536)
                    assert data, "the box closed mid-response"
                    received += data
                    if len(received) < 500_000:  # slowly at first: the box's writes keep finding the socket full
                        await trio.sleep(0.001)
            head, _, body = received.partition(b"\r\n\r\n")
            assert b" 200 " in head.split(b"\r\n")[0]
            assert body == expected


async def test_a_request_longer_than_the_keep_alive_timeout_is_answered_then_the_idle_connection_closed(
        tmp_path: Any) -> None:
    app = App()
    async with serving(tmp_path, app, server.Intake(4), MOLECULE_BOX_KEEP_ALIVE_TIMEOUT="0.3") as (url, _):
        stream = await connect(url)
        async with stream:
            await ask(stream, b"GET / HTTP/1.1\r\nHost: box\r\n\r\n", 200)  # idle, then busy again: the timer moves
            await stream.send_all(b"GET /hold HTTP/1.1\r\nHost: box\r\n\r\n")
            with trio.fail_after(5):
                await app.entered.wait()
            await trio.sleep(1.0)  # three keep-alive timeouts inside the app
            app.release.set()
            with trio.fail_after(5):
                status = (await stream.receive_some(65536)).split(b"\r\n")[0]
            assert b" 200 " in status, "the keep-alive timer cut a request that was in the app"
            began = trio.current_time()
            assert await closed_by_box(stream), "the connection stayed open after the keep-alive timeout"
            assert trio.current_time() - began < 3


async def test_a_stopping_server_closes_its_idle_keep_alive_connections_at_once(tmp_path: Any) -> None:
    async with serving(tmp_path, App(), server.Intake(4)) as (url, stop):  # the keep-alive timeout is 75 s
        streams = [await connect(url) for _ in range(3)]
        for stream in streams:
            await ask(stream, b"GET / HTTP/1.1\r\nHost: box\r\n\r\n", 200)
        stop.set()
        with trio.fail_after(1.5):  # well inside the shutdown grace (2 s), which would also end them
            for stream in streams:
                assert await closed_by_box(stream)
                await stream.aclose()


async def test_a_client_that_resets_mid_response_leaves_the_server_serving(tmp_path: Any,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    app = StreamingApp()
    async with serving(tmp_path, app, server.Intake(4)) as (url, _):
        stream = await connect(url)
        await stream.send_all(b"GET /endless HTTP/1.1\r\nHost: box\r\n\r\n")
        assert await stream.receive_some(65536)
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
        await stream.aclose()
        with trio.fail_after(5):
            await app.left.wait()  # the app was told its client left
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await client.get("/")).text == "ok"
    assert not [record for record in caplog.records if record.levelname in ("ERROR", "CRITICAL")]


async def test_a_connection_its_client_closed_ends_without_waiting_for_the_keep_alive_timeout(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    ended: list[float] = []

    class Watched(connection.Connection):
        async def run(self) -> None:
            try:
                await super().run()
            finally:
                ended.append(trio.current_time())

    monkeypatch.setattr(server, "Connection", Watched)
    async with serving(tmp_path, App(), server.Intake(4)) as (url, _):  # the keep-alive timeout is 75 s
        stream = await connect(url)
        await ask(stream, b"GET / HTTP/1.1\r\nHost: box\r\n\r\n", 200)
        closed = trio.current_time()
        await stream.aclose()
        with trio.fail_after(5):
            while not ended:
                await trio.sleep(0.01)
        assert ended[0] - closed < 1


class Counter(trio.abc.Instrument):
    def __init__(self) -> None:
        self.steps = 0
        self.spawned = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.spawned += 1


async def per_request(url: str, requests: int) -> Counter:
    """Task steps and spawned tasks, in the whole loop, for ``requests`` requests over one kept-alive connection."""
    stream = await connect(url)
    async with stream:
        await ask(stream, b"GET / HTTP/1.1\r\nHost: box\r\n\r\n", 200)  # the connection is up and idle
        counter = Counter()
        trio.lowlevel.add_instrument(counter)
        try:
            for _ in range(requests):
                await ask(stream, b"GET / HTTP/1.1\r\nHost: box\r\n\r\n", 200)
        finally:
            trio.lowlevel.remove_instrument(counter)
    return counter


async def test_a_kept_alive_request_costs_fewer_scheduling_rounds_than_with_hypercorns_own_handler(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The figure this module exists for, counted rather than timed: hypercorn's TCPServer steps its tasks
    about twice as often per request and spawns a keep-alive timer task beside each request's app task."""
    requests = 50
    async with serving(tmp_path / "hypercorn", App(), server.Intake(4)) as (url, _):
        monkeypatch.setattr(server, "Connection", lambda *args: TCPServer(*args[:5]))  # it has no inline
        theirs = await per_request(url, requests)
        monkeypatch.undo()
    async with serving(tmp_path / "box", App(), server.Intake(4)) as (url, _):
        ours = await per_request(url, requests)
    assert theirs.spawned == 2 * requests  # the app's task and the timer's
    assert ours.spawned == requests  # the app's task only
    assert ours.steps <= theirs.steps * 0.7, (ours.steps / requests, theirs.steps / requests)


class EchoApp(App):
    """``POST /echo``: reads the whole body and answers with it, noting the task it ran in; ``POST /again``
    reads its body, then waits for one more event, as an app watching for a disconnect does."""

    def __init__(self) -> None:
        super().__init__()
        self.tasks: list[trio.lowlevel.Task] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] in ("/echo", "/again"):
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body", False):
                    break
            self.tasks.append(trio.lowlevel.current_task())
            if scope["path"] == "/again":
                await receive()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await super().__call__(scope, receive, send)


def inline(scope: dict[str, Any]) -> bool:
    return scope["type"] == "http" and scope["method"] == "POST"


def post(path: str, body: bytes, *extra: str) -> bytes:
    head = "".join(f"{line}\r\n" for line in extra)
    return (f"POST {path} HTTP/1.1\r\nHost: box\r\nContent-Length: {len(body)}\r\n{head}\r\n").encode() + body


async def answer(stream: trio.SocketStream, buffered: bytes = b"") -> tuple[bytes, bytes, bytes]:
    """(status line, body, what followed) of the next response."""
    data = buffered
    with trio.fail_after(5):
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some(65536)
        head, _, rest = data.partition(b"\r\n\r\n")
        length = next(int(line.partition(b":")[2]) for line in head.split(b"\r\n")[1:]
                      if line.lower().startswith(b"content-length:"))
        while len(rest) < length:
            rest += await stream.receive_some(65536)
    return head.split(b"\r\n")[0], rest[:length], rest[length:]


async def test_a_request_whose_body_comes_with_its_head_runs_inline_in_its_connections_task(tmp_path: Any) -> None:
    """No task is spawned for it and it starts in the round of the read; the same server still gives every
    request ``inline`` does not choose a task of its own."""
    app = EchoApp()
    async with serving(tmp_path, app, server.Intake(4), inline=inline) as (url, _):
        stream = await connect(url)
        async with stream:
            await ask(stream, post("/echo", b"warm"), 200)
            counter = Counter()
            trio.lowlevel.add_instrument(counter)
            try:
                for index in range(20):
                    await stream.send_all(post("/echo", b"body %d" % index))
                    line, body, rest = await answer(stream)
                    assert b" 200 " in line and body == b"body %d" % index and rest == b""
            finally:
                trio.lowlevel.remove_instrument(counter)
            assert counter.spawned == 0
            inline_steps = counter.steps
            counter = Counter()
            trio.lowlevel.add_instrument(counter)
            try:
                for _ in range(20):
                    await ask(stream, b"GET / HTTP/1.1\r\nHost: box\r\n\r\n", 200)
            finally:
                trio.lowlevel.remove_instrument(counter)
            assert counter.spawned == 20
            assert inline_steps < counter.steps, (inline_steps, counter.steps)
    assert len({id(task) for task in app.tasks}) == 1  # every /echo ran in the connection's one task


async def test_a_body_that_comes_after_its_head_is_read_by_a_task_of_its_own(tmp_path: Any) -> None:
    """The app then meets its own body deadline, as every request does; the body is whole either way, also
    after a 100-continue."""
    app = EchoApp()
    async with serving(tmp_path, app, server.Intake(4), inline=inline) as (url, _):
        stream = await connect(url)
        async with stream:
            request = post("/echo", b"x" * 5000)
            head, body = request[:-5000], request[-5000:]
            await stream.send_all(head)
            await trio.sleep(0.05)
            await stream.send_all(body)
            line, echoed, _ = await answer(stream)
            assert b" 200 " in line and echoed == body
            await stream.send_all(post("/echo", b"y" * 10, "Expect: 100-continue")[:-10])
            with trio.fail_after(5):
                continued = await stream.receive_some(65536)
            assert continued.startswith(b"HTTP/1.1 100 ")
            await stream.send_all(b"y" * 10)
            line, echoed, _ = await answer(stream, continued.partition(b"\r\n\r\n")[2])
            assert b" 200 " in line and echoed == b"y" * 10
    assert len({id(task) for task in app.tasks}) == 2  # each in a task of its own (inline, both are the connection's)


async def test_pipelined_requests_inline_or_not_are_answered_in_order(tmp_path: Any) -> None:
    async with serving(tmp_path, EchoApp(), server.Intake(4), inline=inline) as (url, _):
        stream = await connect(url)
        async with stream:
            await stream.send_all(post("/echo", b"one") + b"GET / HTTP/1.1\r\nHost: box\r\n\r\n"
                                  + post("/echo", b"three") + post("/echo", b"four"))
            rest = b""
            for expected in (b"one", b"ok", b"three", b"four"):
                line, body, rest = await answer(stream, rest)
                assert b" 200 " in line and body == expected


async def test_a_body_in_more_pieces_than_the_app_queue_holds_does_not_wait_on_itself(tmp_path: Any) -> None:
    """A chunked body of 40 chunks in one write is 40 events, past the queue's limit: the app then takes its
    own task before the connection would wait for it to drain the queue."""
    chunks = [b"%02d" % index for index in range(40)]
    body = b"".join(b"2\r\n" + piece + b"\r\n" for piece in chunks) + b"0\r\n\r\n"
    async with serving(tmp_path, EchoApp(), server.Intake(4), inline=inline) as (url, _):
        stream = await connect(url)
        async with stream:
            await stream.send_all(b"POST /echo HTTP/1.1\r\nHost: box\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
            line, echoed, _ = await answer(stream)
            assert b" 200 " in line and echoed == b"".join(chunks)


async def test_an_inline_app_that_waits_for_more_than_its_body_fails_instead_of_hanging(
        tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    """Nothing reads while it runs, so nothing could answer the wait: the app gets an error at once (hypercorn
    logs it, answers 500 and closes the connection), and the server serves the next one."""
    async with serving(tmp_path, EchoApp(), server.Intake(4), inline=inline) as (url, _):
        stream = await connect(url)
        async with stream:
            await stream.send_all(post("/again", b"z"))
            line, _, _ = await answer(stream)
            assert b" 500 " in line
            assert await closed_by_box(stream)  # hypercorn closes after an app's error, as for any request
        stream = await connect(url)
        async with stream:
            await ask(stream, post("/echo", b"next"), 200)
    assert any("inline" in str(record.exc_info[1]) for record in caplog.records if record.exc_info)
