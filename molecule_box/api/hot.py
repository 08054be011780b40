"""The ASGI front: hot routes go to lean handlers, everything else to the quart-trio app.

quart-trio costs about a quarter of the server's ceiling on a trivial route
(measured: bench/README.md, "What this stack reaches"), and heartbeats arrive from every agent every 30 s, so
``POST /registry/heartbeat`` is served here on raw ASGI: read the body, one
pydantic parse, one token lookup, one actor round trip (which waits for the
group commit), one JSON write. Errors go through the same mapping as the app.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..actors import commands as c
from ..asgi import BODY_DEADLINE, ASGIApp, Receive, Scope, Send, error_response, read_body, send_json
from ..schemas import Heartbeat
from .auth import authorize, scope_headers
from .routing import declare

if TYPE_CHECKING:
    from ..box import Box

HEARTBEAT_LIMIT = 64 * 1024
HEARTBEAT_PATH = "/registry/heartbeat"
#: The key of the hot handler for ``/workspaces/<id>/<action>`` paths, e.g. ("POST", A2A_PATH).
A2A_PATH = "/workspaces/<id>/a2a"

declare(HEARTBEAT_PATH, "POST", summary="Agent liveness and load snapshot", auth="workspace",
        tag="registry", body=Heartbeat,
        responses={200: "{status: ok}", 400: "Bad body", 401: "Wrong or missing token", 404: "Deleted workspace",
                   408: f"Body not received within {BODY_DEADLINE:g} s"})


# Declared here, not beside its handler in proxy/: the proxy is a peer of the API and imports nothing of it.
declare(A2A_PATH, "POST", tag="a2a", auth="caller",
        summary="Proxy an A2A JSON-RPC call to the workspace's agent (streamed; queued when busy)",
        responses={200: "The agent's reply, streamed as it arrives", 202: "Queued durably, or delivered to a "
                   "poll-mode agent's inbox", 400: "Bad body", 401: "Caller not authenticated",
                   402: "Budget exceeded", 403: "Hierarchy forbids it, or a system caller id", 404: "Unknown",
                   408: f"Body not received within {BODY_DEADLINE:g} s", 413: "Body over 1 MiB",
                   429: "The busy workspace's queue is full (A2A_QUEUE_LIMIT)", 502: "Agent unreachable",
                   503: "Paused, offline or waking",
                   504: "Deadline (X-Timeout, idle, ceiling) passed"})


class Front:
    """Hot routes by (method, path) go to their raw handler, a path ``/workspaces/<any id>/<action>`` under the
    key path ``/workspaces/<id>/<action>`` (the handler reads the id from the path); the rest goes to ``app``."""

    def __init__(self, box: Box, app: ASGIApp, hot: Mapping[tuple[str, str], ASGIApp] | None = None) -> None:
        self.box = box
        self.app = app
        self.hot: dict[tuple[str, str], ASGIApp] = {("POST", HEARTBEAT_PATH): self.heartbeat, **(hot or {})}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            handler = self.hot.get((scope["method"], path))
            if handler is None and path.startswith("/workspaces/") and path.count("/") == 3:
                handler = self.hot.get((scope["method"], "/workspaces/<id>/" + path.rpartition("/")[2]))
            if handler is not None:
                await handler(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def runs_inline(self, scope: Scope) -> bool:
        """A heartbeat reads its body, waits for its actor and answers, never for a disconnect: the server may
        run it in the connection's own task (api/connection.py), a scheduling round sooner."""
        return bool(scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == HEARTBEAT_PATH)

    async def heartbeat(self, scope: Scope, receive: Receive, send: Send) -> None:
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
