"""The ASGI front: hot routes go to lean handlers, everything else to the quart-trio app.

quart-trio costs about a quarter of the server's ceiling on a trivial route
(reference perf-notes), and heartbeats arrive from every agent every 30 s, so
``POST /registry/heartbeat`` is served here on raw ASGI: read the body, one
pydantic parse, one token lookup, one actor round trip (which waits for the
group commit), one JSON write. Errors go through the same mapping as the app.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from ..actors import commands as c
from ..errors import BadRequest, PayloadTooLarge, RequestTimeout
from ..schemas import Heartbeat
from .auth import authorize, scope_headers
from .errors import JSON_HEADERS, encode, error_response
from .routing import declare

if TYPE_CHECKING:
    from ..box import Box

ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[dict[str, Any]]], Callable[[dict[str, Any]], Awaitable[None]]],
                   Awaitable[None]]

HEARTBEAT_LIMIT = 64 * 1024
#: Longest a request body may take to arrive, on these routes as on the app's (its BODY_TIMEOUT).
BODY_DEADLINE = 60.0

declare("/registry/heartbeat", "POST", summary="Agent liveness and load snapshot", auth="workspace",
        tag="registry", body=Heartbeat,
        responses={200: "{status: ok}", 400: "Bad body", 401: "Wrong or missing token", 404: "Deleted workspace",
                   408: f"Body not received within {BODY_DEADLINE:g} s"})


declare("/workspaces/<id>/a2a", "POST", tag="a2a", auth="caller",
        summary="Proxy an A2A JSON-RPC call to the workspace's agent (streamed; queued when busy)",
        responses={200: "The agent's reply, streamed as it arrives", 202: "Queued durably, or delivered to a "
                   "poll-mode agent's inbox", 400: "Bad body", 401: "Caller not authenticated",
                   402: "Budget exceeded", 403: "Hierarchy forbids it, or a system caller id", 404: "Unknown",
                   408: f"Body not received within {BODY_DEADLINE:g} s", 413: "Body over 1 MiB",
                   429: "The busy workspace's queue is full (A2A_QUEUE_LIMIT)", 502: "Agent unreachable",
                   503: "Paused, offline or waking",
                   504: "Deadline (X-Timeout, idle, ceiling) passed"})


async def read_body(receive: Callable[[], Awaitable[dict[str, Any]]], limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    with trio.move_on_after(BODY_DEADLINE):
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise BadRequest("client disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body over {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
    raise RequestTimeout()


async def send_json(send: Callable[[dict[str, Any]], Awaitable[None]], status: int, body: Any,
                    headers: dict[str, str] | None = None) -> None:
    payload = encode(body)
    raw_headers = [*JSON_HEADERS, (b"content-length", str(len(payload)).encode())]
    for name, value in (headers or {}).items():
        raw_headers.append((name.lower().encode(), value.encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})


def header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


class Front:
    def __init__(self, box: Box, app: ASGIApp) -> None:
        self.box = box
        self.app = app
        self.hot: dict[tuple[str, str], ASGIApp] = {("POST", "/registry/heartbeat"): self.heartbeat}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            handler = self.hot.get((scope["method"], path))
            if handler is not None:
                await handler(scope, receive, send)
                return
            if scope["method"] == "POST" and path.endswith("/a2a") and path.startswith("/workspaces/") \
                    and path.count("/") == 3:
                await self.box.proxy.handle(scope, receive, send, path[len("/workspaces/"):-len("/a2a")])
                return
        await self.app(scope, receive, send)

    async def heartbeat(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        box = self.box
        try:
            raw = await read_body(receive, HEARTBEAT_LIMIT)
            body = Heartbeat.model_validate_json(raw or b"{}")
            await authorize(box, "workspace", scope_headers(scope), body.workspace_id,
                            proof_of_life=False)  # the heartbeat is the proof
            result = await box.supervisor.ask(body.workspace_id, c.Heartbeat(body))
            status, payload, headers = 200, result, None
        except Exception as exc:  # mapped like every other route; never a bare 500 page
            status, payload, headers = error_response(exc)
        await send_json(send, status, payload, headers)
