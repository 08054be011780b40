"""The box's accept loop (api/server.py): hypercorn's connections behind an intake, on real sockets.

Each test serves a small ASGI app through ``server.serve`` on 127.0.0.1 with
its own intake, and speaks HTTP to it with httpx or raw trio streams.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from molecule_box.api import server
from tests.conftest import BoxRunner, make_settings


class App:
    """``/hold`` waits in the app until ``release`` is set; every other path answers at once."""

    def __init__(self) -> None:
        self.entered = trio.Event()
        self.release = trio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["path"] == "/hold":
            self.entered.set()
            await self.release.wait()
        if scope["path"] == "/early":  # answers without reading the body, as the proxy's 413 does
            self.entered.set()
            await self.release.wait()
            await send({"type": "http.response.start", "status": 413,
                        "headers": [(b"content-length", b"2"), (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": b"no"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})


@asynccontextmanager
async def serving(tmp_path: Path, app: App, intake: server.Intake, inline: Callable[[Any], bool] | None = None,
                  **env: str) -> AsyncIterator[tuple[str, trio.Event]]:
    """``app`` served by ``server.serve`` on 127.0.0.1, with the settings ``env`` changes; (its URL, the stop)."""
    config = server.hypercorn_config(make_settings(tmp_path, **env))
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(partial(server.serve, app, config, intake=intake, inline=inline,
                                           shutdown_trigger=stop.wait))
        try:
            yield urls[0], stop
        finally:
            app.release.set()
            stop.set()


async def idle_connection(url: str) -> trio.SocketStream:
    """A client that connects and sends nothing (a preconnect, a stalled client)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return await trio.open_tcp_stream(host, int(port))


async def timed_get(client: httpx.AsyncClient, path: str = "/") -> float:
    began = trio.current_time()
    response = await client.get(path)
    assert response.status_code == 200 and response.text == "ok"
    return trio.current_time() - began


async def test_a_connection_that_sends_nothing_delays_the_next_only_until_its_place_expires(tmp_path: Path) -> None:
    async with serving(tmp_path, App(), server.Intake(1, hold=0.3)) as (url, _):
        began = trio.current_time()
        idle = await idle_connection(url)
        async with httpx.AsyncClient(base_url=url) as client:
            with trio.fail_after(5):  # without the hold, the idle client would keep the only place for 75 s
                await timed_get(client)
        assert trio.current_time() - began >= 0.3  # paced: accepted once the idle connection's place expired
        await idle.aclose()


async def test_a_request_that_reached_the_app_gives_its_place_to_the_next_connection(tmp_path: Path) -> None:
    app = App()
    async with serving(tmp_path, app, server.Intake(1, hold=30)) as (url, _):
        async with httpx.AsyncClient(base_url=url) as held, httpx.AsyncClient(base_url=url) as other:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(timed_get, held, "/hold")
                with trio.fail_after(5):
                    await app.entered.wait()
                    await timed_get(other)  # answered while the first request is still in the app
                app.release.set()


async def test_keep_alive_requests_are_not_paced_again(tmp_path: Path) -> None:
    async with serving(tmp_path, App(), server.Intake(1, hold=30)) as (url, _):
        async with httpx.AsyncClient(base_url=url) as client:
            await timed_get(client)  # its connection stays open; it was paced once
            idle = await idle_connection(url)  # takes the only place for 30 s
            await trio.sleep(0.1)
            newcomer = await idle_connection(url)
            await newcomer.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            with trio.move_on_after(0.5) as waited:
                await newcomer.receive_some()
            assert waited.cancelled_caught, "a new connection must wait while the only place is held"
            with trio.fail_after(5):
                await timed_get(client)
            await idle.aclose()
            await newcomer.aclose()


async def test_a_stopping_server_refuses_new_connections_and_finishes_the_open_request(tmp_path: Path) -> None:
    app = App()
    async with serving(tmp_path, app, server.Intake(4)) as (url, stop), trio.open_nursery() as nursery:
        outcome: dict[str, float] = {}

        async def call() -> None:
            async with httpx.AsyncClient(base_url=url) as client:
                outcome["elapsed"] = await timed_get(client, "/hold")

        nursery.start_soon(call)
        with trio.fail_after(5):
            await app.entered.wait()
        stop.set()
        with trio.fail_after(5):  # the listeners close as the stop begins
            while True:
                try:
                    stream = await idle_connection(url)
                except OSError:
                    break
                await stream.aclose()
                await trio.sleep(0.05)
        app.release.set()
        with trio.fail_after(5):
            while "elapsed" not in outcome:
                await trio.sleep(0.01)


async def test_the_box_paces_accept_with_its_connection_intake_setting(runner: BoxRunner) -> None:
    box = await runner.start(MOLECULE_BOX_CONNECTION_INTAKE="1")
    url = box.urls[0]
    began = trio.current_time()
    idle = await idle_connection(url)
    async with httpx.AsyncClient(base_url=url) as client:
        with trio.fail_after(5):
            response = await client.get("/health")
        assert response.status_code == 200
    assert trio.current_time() - began >= server.INTAKE_HOLD  # one place, held by the idle client until it expired
    await idle.aclose()


async def test_one_client_address_fills_at_most_half_the_intake_queue(tmp_path: Path) -> None:
    async with serving(tmp_path, App(), server.Intake(1, hold=30, queue=4)) as (url, _):
        holder = await idle_connection(url)  # holds the only place
        waiting = [await idle_connection(url) for _ in range(2)]  # its address's share of the queue
        refused = await idle_connection(url)
        with trio.move_on_after(5) as waited:
            assert await refused.receive_some() == b""
        assert not waited.cancelled_caught, "a connection beyond its address's share must be closed at once"
        for stream in (holder, *waiting, refused):
            await stream.aclose()


def test_an_intake_needs_a_place() -> None:
    with pytest.raises(ValueError):
        server.Intake(0)


async def test_an_answer_to_a_body_nobody_reads_closes_the_connection(tmp_path: Path) -> None:
    """The app answers without reading a big body. hypercorn's queue of body chunks to the app is full by then,
    and hypercorn's close puts one more message in it: the box must keep it moving, or the connection wedges."""
    app = App()
    async with serving(tmp_path, app, server.Intake(4)) as (url, _):
        stream = await idle_connection(url)
        async with stream:
            size = 256 * 1024 * 1024  # more than the socket buffers hold: the sender stalls once the queue is full
            await stream.send_all(f"POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode())
            last_progress = trio.current_time()

            async def send_body() -> None:
                nonlocal last_progress
                try:
                    for _ in range(size // 65536):
                        await stream.send_all(b" " * 65536)
                        last_progress = trio.current_time()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_body)
                with trio.fail_after(30):
                    await app.entered.wait()
                    while trio.current_time() - last_progress < 0.3:  # the whole pipeline backed up
                        await trio.sleep(0.05)
                app.release.set()
                received = b""
                with trio.move_on_after(5) as hung:
                    try:
                        while chunk := await stream.receive_some(65536):
                            received += chunk
                    except trio.BrokenResourceError:
                        pass
                nursery.cancel_scope.cancel()
            assert received.startswith(b"HTTP/1.1 413 ")
            assert not hung.cancelled_caught, "the connection must be closed after the answer"
