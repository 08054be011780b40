"""The A2A proxy: ``POST /workspaces/:id/a2a`` on raw ASGI, a peer of the API.

The request path (``handle``): the caller is authenticated and the hierarchy checked against in-memory actor
records, the body normalised, then :func:`.route.decide` says what becomes of the call: forwarded
(:mod:`.forward`), queued for a busy agent (:mod:`.queue`), put in a poll-mode agent's inbox, or refused.
Writes a caller is *told* about wait for their commit: the queue row before a 202, the inbox row before a
poll-mode 202. A forwarded call's activity row is written off the request path (:mod:`.activity`).

It takes what it uses (the store, the bus, the settings, the clock, the supervisor's records and mailboxes,
and the API's token check) instead of the box, so it imports nothing of the box or the API.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import trio

from ..access import can_communicate
from ..asgi import Receive, Scope, Send, error_response, header, read_body, scope_headers, send_json
from ..bus import EventBus
from ..config import Settings
from ..errors import BadRequest, Forbidden, NotFound, PaymentRequired
from ..models import Workspace, rfc3339
from ..security.ssrf import NO_INBOUND
from ..store import Store, inbox
from .activity import ActivityLog, Teller, json_or_text
from .admission import Admission
from .forward import Forwarder
from .normalize import (
    FORWARDED_HEADERS,
    GET_TASK_METHODS,
    SEND_METHODS,
    STREAM_METHODS,
    TASK_NOT_FOUND,
    UNSUPPORTED_OPERATION,
    Normalized,
    caller_timeout,
    inbox_row_id,
    inbox_task,
    inbox_task_id,
    is_reply,
    message_text,
    normalize,
    replied_task,
    rpc_error,
    rpc_result,
    speaks_a2a,
)
from .queue import BusyQueue
from .route import Forward, Inbox, Refuse, decide

log = logging.getLogger(__name__)

BODY_LIMIT = 1024 * 1024
PATH_PREFIX = len("/workspaces/")
PATH_SUFFIX = len("/a2a")


class Principal(Protocol):
    """Who a token belongs to, as far as the proxy asks."""

    @property
    def is_admin(self) -> bool: ...

    @property
    def workspace_id(self) -> str | None: ...


#: The box's caller check (``authorize`` with the caller tier): who the request's headers prove, or
#: Unauthorized/Forbidden, counted like every refusal. The admin without ``X-Workspace-ID`` has no workspace id.
AuthorizeCaller = Callable[[Mapping[str, str]], Awaitable[Principal]]


class A2AProxy:
    def __init__(self, *, store: Store, bus: EventBus, settings: Settings, supervisor: Teller,
                 authorize: AuthorizeCaller, is_remote: Callable[[str], bool],
                 now: Callable[[], float] = time.time) -> None:
        self._store = store
        self._settings = settings
        self._supervisor = supervisor
        self._authorize = authorize
        self._is_remote = is_remote
        self._now = now
        #: Work slots of the proxy (see admission.py): calls worked on at once, not calls in flight.
        self._slots = trio.Semaphore(settings.a2a_active_limit)
        self._bus = bus
        self.activity = ActivityLog(store, bus, supervisor, now, settings.inbox_ttl_days)
        self.forward = Forwarder(settings, self.activity)
        self.queue = BusyQueue(store, bus, settings, supervisor, self.forward, self.activity, is_remote)
        bus.add_listener(self.forward.on_event)
        bus.add_listener(self.queue.on_event)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.queue.run)
                nursery.start_soon(self.activity.run)
                task_status.started()
        finally:
            self.forward.pools.close()

    # -- the request path ---------------------------------------------------------------------

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /workspaces/<id>/a2a``: the answer is always sent from here (an error mapped like the app's)."""
        started = time.perf_counter()
        admission = Admission(self._slots)
        try:
            try:
                target_id = str(uuid.UUID(scope["path"][PATH_PREFIX:-PATH_SUFFIX]))
            except ValueError:
                raise BadRequest("invalid workspace ID") from None
            raw = await read_body(receive, BODY_LIMIT)  # before admission: a slow client holds no slot
            await admission.enter()
            caller = await self._caller(scope)
            record = self._supervisor.record
            ws = record(target_id)
            if ws is None:
                raise NotFound("workspace not found")
            if caller is not None and caller != target_id and not can_communicate(record, caller, target_id):
                raise Forbidden("access denied: workspaces cannot communicate per hierarchy rules")
            if ws.budget_limit is not None and ws.monthly_spend >= ws.budget_limit:
                raise PaymentRequired()
            norm = normalize(raw)
            timeout = caller_timeout(header(scope, b"x-timeout"))
            forward_headers = [(k, v) for k, v in scope["headers"] if k in FORWARDED_HEADERS]
            if not any(k == b"content-type" for k, _ in forward_headers):
                forward_headers.append((b"content-type", b"application/json"))
            decision = decide(ws, norm.message_id, remote=self._is_remote(ws.backend))
            replied = False
            if isinstance(decision, Forward):
                await self._note_reply(caller, target_id, norm, admission)
                replied = True
                busy = await self.forward.call(receive, send, ws, caller, norm, forward_headers, timeout, started,
                                               admission)
                if busy is None:
                    return
                decision = busy
            admission.leave()  # what follows waits (a commit, our client)
            if isinstance(decision, Refuse):
                if decision.wake:
                    self._supervisor.wake_soon(ws.id)  # a paused ancestor refuses it (409)
                raise decision.error
            if isinstance(decision, Inbox):
                status, body, stream = await self._poll_mode(ws, caller, norm, forward_headers)
            else:
                status, body, stream = 202, await self.queue.put_call(ws, caller, norm, forward_headers,
                                                                      decision.why), False
            if status == 202 and not replied:
                await self._note_reply(caller, target_id, norm, admission)
                admission.leave()
            await _send_answer(send, status, body, stream)
        except Exception as exc:
            admission.leave()
            status, error, headers = error_response(exc)
            await send_json(send, status, error, headers)
        finally:
            admission.leave()

    async def _caller(self, scope: Scope) -> str | None:
        """The calling workspace (None: the operator/user, who must hold the admin token)."""
        return (await self._authorize(scope_headers(scope))).workspace_id

    # -- poll mode ----------------------------------------------------------------------------

    async def _poll_mode(self, ws: Workspace, caller: str | None, norm: Normalized,
                         headers: list[tuple[bytes, bytes]]) -> tuple[int, dict[str, Any], bool]:
        """A call to a poll-mode agent, answered in the caller's protocol (docs/design.md, "Poll mode"): an
        A2A client (it sends A2A-Version) gets a Task of its generation (a JSON-RPC answer, streamed as one
        event to a streaming method), any other caller the platform's 202. (status, body, stream)."""
        if norm.method in GET_TASK_METHODS:
            return 200, self._inbox_task(ws, caller, norm), False
        a2a_client = speaks_a2a(next((v.decode("latin-1") for k, v in headers if k == b"a2a-version"), None))
        if a2a_client and norm.method not in SEND_METHODS:
            return 200, rpc_error(norm.payload, UNSUPPORTED_OPERATION,
                                  f"{norm.method} is not supported by a poll-mode agent"), False
        row_id = await self.activity.inbox(ws, caller, norm)
        if not a2a_client:
            return 202, {"queued": True, "delivery": "poll", "queue_id": row_id, "activity_id": row_id,
                         "task_id": inbox_task_id(row_id),
                         "message": "delivered to the agent's inbox; it replies asynchronously"}, False
        task = inbox_task(norm.method, norm.payload, row_id, "queued", None, rfc3339(self._now()))
        return 200, rpc_result(norm.payload, task), norm.method in STREAM_METHODS

    def _inbox_task(self, ws: Workspace, caller: str | None, norm: Normalized) -> dict[str, Any]:
        """``tasks/get`` / ``GetTask`` of a message in a poll-mode agent's inbox, answered from its row: the
        caller that sent it (or the admin) reads its state and, once the agent replied, the reply."""
        db = self._store.db
        params = norm.payload.get("params")
        row_id = inbox_row_id(params.get("id") if isinstance(params, dict) else None)
        row = inbox.task_row(db, ws.id, row_id) if row_id is not None else None
        if row is None or (caller is not None and row["source_id"] != caller):
            return rpc_error(norm.payload, TASK_NOT_FOUND, "task not found")
        state = inbox.state(row, inbox.cursor(db, ws.id),
                            inbox.expire_before(self._settings.inbox_ttl_days, self._now())) or "queued"
        reply = json_or_text(row["response_body"].encode()) if state == "replied" and row["response_body"] else None
        text = str(reply.get("result", "")) if isinstance(reply, dict) else None
        request = json_or_text(row["request_body"].encode()) if row["request_body"] else None
        return rpc_result(norm.payload, inbox_task(norm.method, request, row["id"], state, text,
                                                   rfc3339(row["created_at"])))

    async def _note_reply(self, caller: str | None, target_id: str, norm: Normalized, admission: Admission) -> None:
        """A poll-mode agent's reply to a peer (role agent, as the SDK's ``reply()`` sends it), accepted for
        delivery, answers the message it names or else the oldest it fetched from that peer (store/inbox.py)."""
        record = self._supervisor.record(caller) if caller is not None and caller != target_id else None
        if record is None or record.url not in (None, "", NO_INBOUND) or not is_reply(norm.payload):
            return
        admission.leave()  # a commit follows
        answered = await self._store.write(inbox.mark_replied(
            record.id, target_id, {"result": message_text(norm.payload)}, replied_task(norm.payload)))
        if answered is not None:
            self._bus.publish(self._bus.make(inbox.EVENT, record.id, inbox.event_payload(
                record.id, answered, "replied", target_id)))
        await admission.enter()


async def _send_answer(send: Send, status: int, body: dict[str, Any], stream: bool) -> None:
    """A JSON answer, or (to a streaming method) the same as the one event of an SSE stream."""
    if not stream:
        await send_json(send, status, body)
        return
    event = b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
        (b"content-length", str(len(event)).encode())]})
    await send({"type": "http.response.body", "body": event})
