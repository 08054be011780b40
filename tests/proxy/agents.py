"""Small stdlib-free test agents served by hypercorn on trio, on 127.0.0.1 (real sockets, real HTTP)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import hypercorn.config
import hypercorn.trio
import trio

ASGI = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


class TestAgent:
    """An A2A-ish agent: answers JSON-RPC, can stream SSE, be slow, or fail; records what it received."""

    __test__ = False  # a helper, not a pytest test class

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.delay = 0.0
        self.fail_status: int | None = None
        self.stream_events = 0
        self.stream_gap = 0.0
        self.finished = trio.Event()
        self.release = trio.Event()
        self.hold = False
        self.url = ""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        payload = json.loads(body) if body else {}
        self.received.append((headers, payload))
        if self.hold:
            await self.release.wait()
        if self.delay:
            await trio.sleep(self.delay)
        if self.fail_status:
            out = json.dumps({"error": "agent exploded"}).encode()
            await send({"type": "http.response.start", "status": self.fail_status,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": out})
            return
        if self.stream_events:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")]})
            for i in range(self.stream_events):
                event = {"jsonrpc": "2.0", "id": payload.get("id"), "result": {"kind": "status-update", "n": i}}
                await send({"type": "http.response.body", "body": f"data: {json.dumps(event)}\n\n".encode(),
                            "more_body": True})
                await trio.sleep(self.stream_gap)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            self.finished.set()
            return
        text = ""
        message = (payload.get("params") or {}).get("message") or {}
        for part in message.get("parts", []):
            text += part.get("text", "")
        out = json.dumps({"jsonrpc": "2.0", "id": payload.get("id"), "result": {
            "kind": "message", "role": "agent", "messageId": "reply-1",
            "parts": [{"kind": "text", "text": f"echo: {text}"}]}}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())]})
        await send({"type": "http.response.body", "body": out})
        self.finished.set()


async def serve_agent(nursery: trio.Nursery, app: ASGI, port: int = 0) -> str:
    config = hypercorn.config.Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = None
    shutdown = trio.Event()
    binds = await nursery.start(partial(hypercorn.trio.serve, app, config, shutdown_trigger=shutdown.wait))
    return str(binds[0])
