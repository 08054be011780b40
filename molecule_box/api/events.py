"""Events to clients: WebSocket ``/ws``, per-workspace SSE, and the persisted history (reference §8).

Unlike the platform, no stream is open to anonymous clients: ``/ws`` takes the
admin token (header, or ``?token=`` for browsers) for every event, or a
workspace's own token plus ``X-Workspace-ID`` for the events of the workspaces
it may talk to.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import trio
from quart import Blueprint, Response, websocket

from ..access import can_communicate
from ..errors import NotFound, Unauthorized
from ..models import Event, WorkspaceStatus
from ..security.tokens import parse_bearer
from ..store import events as event_rows
from .auth import identify, require_admin, require_workspace
from .errors import error_response
from .routing import box, declare, respond, route
from .workspaces import load, workspace_id

bp = Blueprint("events", __name__)

SSE_KEEPALIVE = 15.0
SSE_BATCH = 256


@route(bp, "/events", "GET", summary="The last 100 recorded events", auth="admin")
async def history() -> Any:
    b = box()
    await require_admin(b)
    return respond([e.history_row() for e in event_rows.recent(b.store.db)])


@route(bp, "/events/<raw_id>", "GET", summary="The last 100 recorded events of one workspace", auth="admin")
async def workspace_history(raw_id: str) -> Any:
    b = box()
    await require_admin(b)
    wid = workspace_id(raw_id)
    return respond([e.history_row() for e in event_rows.recent(b.store.db, wid)])


def _sse(events: Any, frame: Any) -> AsyncIterator[bytes]:
    """Frames of a subscription as server-sent events, with keep-alive comments so proxies keep it open."""

    async def frames() -> AsyncIterator[bytes]:
        yield b": ping\n\n"
        while True:
            event: Event | None = None
            with trio.move_on_after(SSE_KEEPALIVE):
                event = await events.receive()
            if event is None:
                yield b": keepalive\n\n"
                continue
            # Everything already queued goes out in one write: one event per send cannot keep up with a
            # busy box (each send is a scheduling round), and the bus drops what a full buffer cannot take.
            chunks = [b"data: " + json.dumps(frame(event), default=str).encode() + b"\n\n"]
            while len(chunks) < SSE_BATCH:
                try:
                    event = events.receive_nowait()
                except trio.WouldBlock:
                    break
                chunks.append(b"data: " + json.dumps(frame(event), default=str).encode() + b"\n\n")
            yield b"".join(chunks)

    return frames()


def _sse_response(body: AsyncIterator[bytes]) -> Response:
    response = Response(body, content_type="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    response.timeout = None
    return response


@route(bp, "/events/stream", "GET", auth="admin", responses={200: "text/event-stream"},
       summary="Server-sent events of every workspace, in the /ws frame shape (molecule-box addition)")
async def all_events_stream() -> Any:
    b = box()
    await require_admin(b)

    async def body() -> AsyncIterator[bytes]:
        with b.bus.subscribe() as events:
            async for chunk in _sse(events, Event.ws_frame):
                yield chunk

    return _sse_response(body())


@route(bp, "/workspaces/<raw_id>/events/stream", "GET", summary="Server-sent events of one workspace",
       auth="workspace", responses={200: "text/event-stream", 404: "Unknown workspace"})
async def workspace_stream(raw_id: str) -> Any:
    b = box()
    wid = workspace_id(raw_id)
    await require_workspace(b, wid)
    if load(wid).status is WorkspaceStatus.REMOVED:
        raise NotFound("workspace not found")

    async def body() -> AsyncIterator[bytes]:
        with b.bus.subscribe(lambda e: e.workspace_id == wid, buffer=64) as events:
            async for chunk in _sse(events, Event.sse_frame):
                yield chunk

    return _sse_response(body())


declare("/ws", "GET", summary="WebSocket of live events (admin: all; workspace: those it may talk to)",
        auth="caller", tag="events", responses={101: "Switching protocols", 401: "Unauthorized"},
        query={"token": "admin token, for browsers that cannot set headers"})


@bp.websocket("/ws")
async def events_socket() -> Any:
    b = box()
    caller = (websocket.headers.get("X-Workspace-ID") or "").strip()
    token = parse_bearer(websocket.headers.get("Authorization")) or websocket.args.get("token") or None
    wanted = None
    try:
        if caller:
            await require_workspace(b, caller, allow_admin=True, headers={"Authorization": f"Bearer {token}"}
                                    if token else {})

            def wanted(event: Event) -> bool:
                return event.workspace_id is None or can_communicate(b.supervisor.record, caller, event.workspace_id)
        else:
            principal = await identify(b, token)
            if principal is None or not principal.is_admin:
                raise Unauthorized("admin auth required" if token is None else "invalid admin auth token")
    except Exception as exc:
        status, body, headers = error_response(exc)
        return Response(json.dumps(body), status=status, content_type="application/json", headers=headers)
    await websocket.accept()
    with b.bus.subscribe(wanted) as events:
        async with trio.open_nursery() as nursery:
            async def drain_client() -> None:
                while True:
                    await websocket.receive()  # client frames are ignored; this notices the close

            nursery.start_soon(drain_client)
            async for event in events:
                await websocket.send(json.dumps(event.ws_frame(), default=str))
