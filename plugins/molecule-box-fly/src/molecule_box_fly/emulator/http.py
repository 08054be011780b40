"""A minimal HTTP/1.1 server on trio and h11: enough for a JSON API with long-polls and dropped connections.

The emulator needs to do what a web framework hides: close a connection without an answer (the "dropped
connection" fault) and hold a request open for a minute (``/wait``). One task per connection, keep-alive.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import h11
import trio

log = logging.getLogger("molecule_box_fly.emulator")

MAX_BODY = 1024 * 1024


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default


@dataclass
class Response:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


class Drop(Exception):
    """Raised by a handler: close the connection without answering."""


Handler = Callable[[Request], Awaitable[Response]]


async def serve_connection(stream: trio.SocketStream, handler: Handler) -> None:
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            request = await read_request(stream, conn)
            if request is None:
                return
            try:
                response = await handler(request)
            except Drop:
                return
            except Exception:
                log.exception("emulator: handler failed")
                response = Response(500, {"error": "internal emulator error"})
            payload = b"" if response.body is None else json.dumps(response.body).encode()
            headers = [("content-length", str(len(payload)))]
            if response.body is not None:
                headers.append(("content-type", "application/json"))
            headers += list(response.headers.items())
            await stream.send_all(conn.send(h11.Response(status_code=response.status, headers=headers)) or b"")
            await stream.send_all((conn.send(h11.Data(data=payload)) if payload else b"")
                                  + (conn.send(h11.EndOfMessage()) or b""))
            if conn.our_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
        return
    finally:
        with trio.CancelScope(shield=True):
            await stream.aclose()


async def read_request(stream: trio.SocketStream, conn: h11.Connection) -> Request | None:
    head: h11.Request | None = None
    body = b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            conn.receive_data(data)
            if not data and conn.their_state is not h11.DONE:
                return None
            continue
        if isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY:
                return None
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            target = urlsplit(head.target.decode())
            query: dict[str, list[str]] = {}
            for key, value in parse_qsl(target.query, keep_blank_values=True):
                query.setdefault(key, []).append(value)
            headers = {k.decode().lower(): v.decode() for k, v in head.headers}
            return Request(head.method.decode(), target.path, query, headers, body)
        elif isinstance(event, h11.ConnectionClosed):
            return None


async def serve_http(handler: Handler, host: str, port: int, *,
                     task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve on ``host:port`` (0: any free port); ``task_status.started`` gets the port."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    task_status.started(listeners[0].socket.getsockname()[1])

    async def one(stream: trio.SocketStream) -> None:
        await serve_connection(stream, handler)

    await trio.serve_listeners(one, listeners)
