"""Events to clients: WebSocket ``/ws``, per-workspace SSE, and the persisted history.

Unlike the platform, no stream is open to anonymous clients: ``/ws`` takes the
admin token (header, or ``?token=`` for browsers) for every event, or a
workspace's own token plus ``X-Workspace-ID`` for its own events, its peers'
lifecycle and the conversations it is a party to (``events.workspace_view``).
Streams are capped per holder and in total (429), end when their token is
revoked or their workspace removed, and end with a reconnect hint when their
client falls too far behind (docs/events.md).
"""

from __future__ import annotations

import json
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any

import trio
from quart import Blueprint, Response, websocket

from ..bus import FELL_BEHIND, REMOVED, REVOKED, Stream, View, workspace_view
from ..errors import Unauthorized
from ..models import Event
from ..security.tokens import parse_bearer
from ..store import events as event_rows
from ..store import tokens as token_rows
from .auth import Principal, authorize
from .errors import error_response
from .routing import Call, box, declare, respond, route

bp = Blueprint("events", __name__)

SSE_KEEPALIVE = 15.0
SSE_BATCH = 256
#: Heartbeats alone wait this long for company before they are written: a stream carrying 1,000 workspaces'
#: heartbeats (33 a second) wrote each on its own, and those writes were most of what open dashboards cost the
#: box. Any other event ends the wait, so a status change is never held back.
SSE_HEARTBEAT_WAIT = 0.25
HEARTBEAT = "WORKSPACE_HEARTBEAT"
#: The SSE ``retry:`` of a stream that fell behind (milliseconds before the client reconnects).
RECONNECT_MS = 1000


@route(bp, "/events", "GET", summary="The last 100 recorded events", auth="admin")
async def history(call: Call[None]) -> Any:
    return respond([e.history_row() for e in event_rows.recent(box().store.db)])


@route(bp, "/events/<raw_id>", "GET", summary="The last 100 recorded events of one workspace", auth="admin")
async def workspace_history(call: Call[None]) -> Any:
    return respond([e.history_row() for e in event_rows.recent(box().store.db, call.workspace_id)])


def _open(principal: Principal, view: View | None) -> Stream:
    """A stream counted against its holder, or 429: the admin, or a workspace, whose tokens share one
    allowance (any of them can mint more)."""
    b = box()
    if principal.is_admin:
        return b.bus.open_stream("admin", view=view)
    stream = b.bus.open_stream(f"workspace:{principal.workspace_id}", token_id=principal.token_id,
                               workspace_id=principal.workspace_id, view=view)
    # A revocation committed while the token was being checked found no stream to end; from here on,
    # end_streams finds this one.
    if principal.token_id is not None and not token_rows.is_live(b.store.db, principal.token_id):
        stream.close()
        raise Unauthorized("invalid workspace auth token")
    return stream


def _sse_data(fields: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(fields, default=str).encode() + b"\n\n"


def _sse_last(reason: str) -> bytes:
    """The last frame: a stream that fell behind may come back at once, a revoked one may not."""
    head = f"event: reconnect\nretry: {RECONNECT_MS}\n" if reason == FELL_BEHIND else "event: closed\n"
    return head.encode() + _sse_data({"reason": reason})


def _sse(stream: Stream, frame: Callable[[Event], dict[str, Any]]) -> AsyncIterator[bytes]:
    """Frames of a stream as server-sent events, with keep-alive comments so proxies keep it open."""

    async def frames() -> AsyncIterator[bytes]:
        try:
            yield b": ping\n\n"
            while True:
                event: Event | None = None
                with trio.move_on_after(SSE_KEEPALIVE):
                    event = await stream.next()
                if stream.reason is not None:
                    break
                if event is None:
                    yield b": keepalive\n\n"
                    continue
                # Everything already queued goes out in one write: one event per send cannot keep up with a
                # busy box (each send is a scheduling round).
                batch = [event, *stream.queued(SSE_BATCH - 1)]
                waiting = all(e.type == HEARTBEAT for e in batch)
                with trio.move_on_after(SSE_HEARTBEAT_WAIT if waiting else 0):
                    while waiting and len(batch) < SSE_BATCH:
                        more = await stream.next()
                        if more is None:
                            break
                        batch += [more, *stream.queued(SSE_BATCH - len(batch) - 1)]
                        waiting = all(e.type == HEARTBEAT for e in batch)
                if stream.reason is not None:
                    break
                yield b"".join(_sse_data(frame(e)) for e in batch)
            yield _sse_last(stream.reason)
        finally:
            stream.close()

    return frames()


def _sse_response(stream: Stream, frame: Callable[[Event], dict[str, Any]]) -> Response:
    body = _sse(stream, frame)
    # A body that is never iterated (the client left before the head went out) never runs its finally:
    # the stream's place comes back when the body is collected too.
    weakref.finalize(body, stream.close)
    response = Response(body, content_type="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    response.timeout = None
    return response


@route(bp, "/events/stream", "GET", auth="admin",
       responses={200: "text/event-stream", 429: "Too many event streams open (Retry-After)"},
       summary="Server-sent events of every workspace, in the /ws frame shape (molecule-box addition)")
async def all_events_stream(call: Call[None]) -> Any:
    return _sse_response(_open(call.principal, None), Event.ws_frame)


@route(bp, "/workspaces/<raw_id>/events/stream", "GET", summary="Server-sent events of one workspace",
       auth="workspace", responses={200: "text/event-stream", 404: "Unknown workspace",
                                    429: "Too many event streams open (Retry-After)"}, load="live")
async def workspace_stream(call: Call[None]) -> Any:
    wid = call.workspace_id
    return _sse_response(_open(call.principal, lambda e: e if e.workspace_id == wid else None), Event.sse_frame)


declare("/ws", "GET", summary="WebSocket of live events (admin: all; workspace: its own, its peers' lifecycle, "
        "its conversations)", auth="caller", tag="events",
        responses={101: "Switching protocols", 401: "Unauthorized", 429: "Too many event streams open (Retry-After)"},
        query={"token": "admin token, for browsers that cannot set headers"})

#: WebSocket close of a stream the box ended: 1013 "try again later" invites a reconnect; 1008 does not.
WS_CLOSE = {FELL_BEHIND: (1013, f"{FELL_BEHIND}: reconnect"), REVOKED: (1008, REVOKED), REMOVED: (1008, REMOVED)}


@bp.websocket("/ws")
async def events_socket() -> Any:
    b = box()
    caller = (websocket.headers.get("X-Workspace-ID") or "").strip()
    token = parse_bearer(websocket.headers.get("Authorization")) or websocket.args.get("token") or None
    # Browsers cannot set headers: the admin's token may come as ?token= instead.
    headers = {"X-Workspace-ID": caller, **({"Authorization": f"Bearer {token}"} if token else {})}
    try:
        principal = await authorize(b, "caller", headers)
        stream = _open(principal, workspace_view(b.supervisor.record, caller) if caller else None)
    except Exception as exc:
        status, body, headers = error_response(exc)
        return Response(json.dumps(body), status=status, content_type="application/json", headers=headers)
    try:
        await websocket.accept()
        async with trio.open_nursery() as nursery:
            async def drain_client() -> None:
                while True:
                    await websocket.receive()  # client frames are ignored; this notices the close

            nursery.start_soon(drain_client)
            while (event := await stream.next()) is not None:
                await websocket.send(json.dumps(event.ws_frame(), default=str))
            nursery.cancel_scope.cancel()
        code, reason = WS_CLOSE.get(stream.reason or "", (1000, "closed"))
        await websocket.close(code, reason)
    finally:
        stream.close()
