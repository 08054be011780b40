"""The A2A proxy service: forwarding, deadlines, the busy queue, the poll inbox and activity logging.

The request path (``handle``) is raw ASGI, reached from :class:`molecule_box.api.hot.Front`:
auth and hierarchy checks read in-memory actor records, the forward goes
through :mod:`.client`, and the activity row is submitted to the store's
group commit without waiting (it must not add a commit to the hot path).
Writes a caller is *told* about wait for their commit: the queue row before
a 202, the inbox row before a poll-mode 202.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit

import trio

from .. import strictjson
from ..access import can_communicate
from ..actors import commands as c
from ..authz import authorize, scope_headers
from ..api.errors import error_response
from ..api.hot import header, read_body, send_json
from ..errors import (
    BadGateway,
    BadRequest,
    Forbidden,
    GatewayTimeout,
    NotFound,
    PaymentRequired,
    ServiceUnavailable,
)
from ..models import LIVE_STATES, Event, Workspace, WorkspaceStatus, rfc3339
from ..security.ssrf import NO_INBOUND, UnsafeAgentURL, resolve_checked, split_agent_url
from ..store import activity as activity_rows
from ..store import delegations as delegation_rows
from ..store import inbox
from ..store import queue as queue_rows
from .admission import Admission
from .client import Pools, UpstreamError, UpstreamResponse
from .normalize import (
    FORWARDED_HEADERS,
    GET_TASK_METHODS,
    HOP_BY_HOP,
    SEND_METHODS,
    STREAM_METHODS,
    TASK_NOT_FOUND,
    UNSUPPORTED_OPERATION,
    Normalized,
    agent_error,
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
    summarize,
)

if TYPE_CHECKING:
    from ..box import Box

log = logging.getLogger(__name__)
S = WorkspaceStatus

BODY_LIMIT = 1024 * 1024
BOX_ASSIGNED_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "::1/128", "fc00::/7"))
ERROR_BODY_LIMIT = 64 * 1024
CAPTURE_LIMIT = 64 * 1024
AGENT_CEILING = 30 * 60.0
RESOLVE_TTL = 30.0
DRAIN_DEADLINE = 300.0
IDLE_BUMP_EVERY = 1.0
ACTIVITY_FLUSH_EVERY = 0.05
#: A reply up to this size is written to the caller inside the call's work slot (the socket buffer takes it
#: without waiting on the client); a bigger one leaves the slot first.
SEND_IN_SLOT = 64 * 1024

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


class Queued(Exception):
    """Not an error: the call was queued durably; carries the 202 body."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body


class Answered(Exception):
    """Not an error: the box answered an A2A client for a poll-mode agent (a JSON-RPC body, or a stream of it)."""

    def __init__(self, body: dict[str, Any], *, stream: bool = False) -> None:
        self.body = body
        self.stream = stream


class A2AProxy:
    def __init__(self, box: Box) -> None:
        self.box = box
        self.pools = Pools()
        #: Work slots of the proxy (see admission.py): calls worked on at once, not calls in flight.
        self._slots = trio.Semaphore(box.settings.a2a_active_limit)
        self._vetted: dict[tuple[str, bool], tuple[float, tuple[str, str, int, str, str]]] = {}
        #: In-flight calls per target: their idle scopes and idle windows, bumped by the target's events.
        self._inflight: dict[str, dict[trio.CancelScope, float]] = {}
        self._bumped: dict[str, float] = {}
        #: Activity rows of finished calls, written as one group-commit op every ACTIVITY_FLUSH_EVERY.
        self._activity_buf: list[Callable[[Any], int]] = []
        self._outbound: dict[str, float] = {}  # caller id -> time of its last successful call, until the flush
        self._activity_wake = trio.Event()
        #: Queued (not yet dispatched) messages per workspace, so the heartbeat path checks a dict, not SQLite.
        self.pending: dict[str, int] = {}
        #: The running drain of each workspace whose queue is being delivered (see _drain).
        self._drains: dict[str, _Drain] = {}
        self._drain_send, self._drain_receive = trio.open_memory_channel[tuple[str, _Drain]](math.inf)
        box.bus.add_listener(self._on_event)

    # -- lifetime -----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.box.store.write(queue_rows.requeue_dispatched)
        self.pending = queue_rows.pending_counts(self.box.store.db)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._drainer, nursery)
                nursery.start_soon(self._activity_flusher)
                task_status.started()
        finally:
            self._flush_activity()
            self.pools.close()

    def request_drain(self, workspace_id: str) -> None:
        """A sign of spare capacity (a heartbeat, a register, a delegation): deliver the queue of ``workspace_id``
        at its agent's pace (see _drain). A drain that a failed delivery stopped goes on again."""
        if not self.pending.get(workspace_id):  # every heartbeat asks: the common answer costs a dict lookup
            return
        ws = self.box.supervisor.record(workspace_id)
        if ws is None or spare_capacity(ws) <= 0:
            return
        drain = self._drains.get(workspace_id)
        if drain is None:
            drain = self._drains[workspace_id] = _Drain()
            self._drain_send.send_nowait((workspace_id, drain))
        else:
            drain.stopped = False
            drain.changed.set()

    def _on_event(self, event: Event) -> None:
        """A sign of life from a target pushes back the idle deadline of every call in flight to it.

        At most once per IDLE_BUMP_EVERY per target (the window gets that much slack in exchange):
        bumping on every event is O(calls in flight) per event, so O(n^2) when n calls finish
        together, each finished call publishing its own ACTIVITY_LOGGED."""
        workspace_id = event.workspace_id or ""
        calls = self._inflight.get(workspace_id)
        if not calls:
            return
        now = trio.current_time()
        if now < self._bumped.get(workspace_id, -math.inf) + IDLE_BUMP_EVERY:
            return
        self._bumped[workspace_id] = now
        for scope, idle in calls.items():
            deadline = now + idle + IDLE_BUMP_EVERY
            if scope.deadline < deadline:  # noqa: PLR1730 (set only when it moves: the setter re-registers it)
                scope.deadline = deadline

    # -- caller, target, URL ------------------------------------------------------------------

    async def _caller(self, scope: dict[str, Any]) -> str | None:
        """The calling workspace (None: the operator/user, who must hold the admin token)."""
        return (await authorize(self.box, "caller", scope_headers(scope))).workspace_id

    async def _resolve(self, url: str, *, box_assigned: bool = False) -> tuple[str, str, int, str, str]:
        """(scheme, vetted address, port, host name, path): DNS re-resolved (cached briefly), SSRF-checked.

        The whole answer is cached per URL for RESOLVE_TTL (a literal-IP URL is pure parsing and policy,
        a host name's address is re-resolved after that), so the hot path skips urlsplit, ipaddress
        parsing and the network checks on all but the first call of each window."""
        vetted = self._vetted_now(url, box_assigned)
        if vetted is not None:
            return vetted
        now = trio.current_time()
        host, port = split_agent_url(url)
        parts = urlsplit(url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        allowed = self.box.settings.allow_agent_networks
        if box_assigned:
            # A URL the box's own backend assigned (a container port on 127.0.0.1) is trusted for loopback and
            # private ranges (reference §13.1.10); link-local, metadata and the like stay refused.
            allowed = (*allowed, *BOX_ASSIGNED_NETWORKS)
        addresses = await resolve_checked(host, port, allowed)
        vetted = (parts.scheme, str(addresses[0]), port, host, path)
        if len(self._vetted) > 4096:
            self._vetted.clear()
        self._vetted[(url, box_assigned)] = (now + RESOLVE_TTL, vetted)
        return vetted

    def _vetted_now(self, url: str, box_assigned: bool) -> tuple[str, str, int, str, str] | None:
        """The cached answer of :meth:`_resolve`, if still fresh (keyed with the policy it passed)."""
        cached = self._vetted.get((url, box_assigned))
        return cached[1] if cached is not None and cached[0] > trio.current_time() else None

    def _idle_window(self, ws: Workspace) -> float:
        meta = ws.runtime_metadata if isinstance(ws.runtime_metadata, dict) else {}
        custom = meta.get("idle_timeout_seconds")
        return float(custom) if isinstance(custom, (int, float)) and custom > 0 else \
            self.box.settings.a2a_idle_timeout_seconds

    # -- the request path ---------------------------------------------------------------------

    async def handle(self, scope: dict[str, Any], receive: Receive, send: Send, raw_id: str) -> None:
        started = time.perf_counter()
        admission = Admission(self._slots)
        try:
            try:
                target_id = str(uuid.UUID(raw_id))
            except ValueError:
                raise BadRequest("invalid workspace ID") from None
            raw = await read_body(receive, BODY_LIMIT)  # before admission: a slow client holds no slot
            await admission.enter()
            caller = await self._caller(scope)
            box = self.box
            ws = box.supervisor.record(target_id)
            if ws is None:
                raise NotFound("workspace not found")
            if caller is not None and caller != target_id and not can_communicate(
                    box.supervisor.record, caller, target_id):
                raise Forbidden("access denied: workspaces cannot communicate per hierarchy rules")
            if ws.budget_limit is not None and ws.monthly_spend >= ws.budget_limit:
                raise PaymentRequired()
            norm = normalize(raw)
            timeout = caller_timeout(header(scope, b"x-timeout"))
            forward_headers = [(k, v) for k, v in scope["headers"] if k in FORWARDED_HEADERS]
            if not any(k == b"content-type" for k, _ in forward_headers):
                forward_headers.append((b"content-type", b"application/json"))
            try:
                ws = await self._route(ws, caller, norm, forward_headers, admission)
            except Queued:
                await self._note_reply(caller, target_id, norm, admission)
                raise
            await self._note_reply(caller, target_id, norm, admission)
            await self._forward_streaming(scope, receive, send, ws, caller, norm, forward_headers, timeout, started,
                                          admission)
        except Queued as queued:
            admission.leave()
            await send_json(send, 202, queued.body)
        except Answered as answered:
            admission.leave()
            await _send_answer(send, answered)
        except Exception as exc:
            admission.leave()
            status, body, headers = error_response(exc)
            await send_json(send, status, body, headers)
        finally:
            admission.leave()

    async def _route(self, ws: Workspace, caller: str | None, norm: Normalized,
                     headers: list[tuple[bytes, bytes]], admission: Admission) -> Workspace:
        """Decide what happens to a call before any byte goes to the agent; raises Queued or an error.
        A queued call waits for its commit without a work slot."""
        if ws.status in (S.HIBERNATED, S.HIBERNATING):
            self.box.supervisor.wake_soon(ws.id)  # a paused ancestor refuses it (409)
            raise ServiceUnavailable("workspace is hibernated and is being woken", retry_after=15, waking=True)
        if ws.status is S.PAUSED:
            raise ServiceUnavailable("workspace is paused", retry_after=30, status=ws.status.value)
        if ws.url in (None, "", NO_INBOUND):
            if self.box.backends.is_remote(ws.backend):
                admission.leave()
                raise await self._poll_mode(ws, caller, norm, headers)
            raise ServiceUnavailable("workspace has no URL yet", retry_after=10, status=ws.status.value)
        if ws.status not in (S.ONLINE, S.DEGRADED):
            raise ServiceUnavailable(f"workspace is {ws.status.value}", retry_after=10, status=ws.status.value)
        if ws.active_tasks >= ws.max_concurrent_tasks and ws.active_tasks > 0:
            admission.leave()
            raise Queued(await self._busy(ws, caller, norm, headers, "agent at its max_concurrent_tasks"))
        return ws

    async def _busy(self, ws: Workspace, caller: str | None, norm: Normalized, headers: list[tuple[bytes, bytes]],
                    why: str) -> dict[str, Any]:
        if ws.capabilities.get("session"):
            raise ServiceUnavailable("workspace agent busy — retry after a short backoff", retry_after=30,
                                     busy=True, native_session=True)
        if norm.message_id is None:
            raise ServiceUnavailable("workspace agent busy — retry after a short backoff", retry_after=30, busy=True)
        hdrs = {k.decode(): v.decode("latin-1") for k, v in headers}
        queue_id, depth, duplicate = await self.box.store.write(
            queue_rows.enqueue(ws.id, caller, norm.message_id, norm.method, norm.body, hdrs,
                               self.box.settings.a2a_queue_limit))
        if not duplicate:
            self.pending[ws.id] = self.pending.get(ws.id, 0) + 1
        log.info("workspace %s busy (%s): message queued as %d (depth %d)", ws.id, why, queue_id, depth)
        return {"queued": True, "queue_id": queue_id, "queue_depth": depth, "duplicate": duplicate,
                "message": "workspace agent busy — message queued and delivered when it has capacity"}

    async def _poll_mode(self, ws: Workspace, caller: str | None, norm: Normalized,
                         headers: list[tuple[bytes, bytes]]) -> Queued | Answered:
        """A call to a poll-mode agent, answered in the caller's protocol (docs/design.md, "Poll mode"): an
        A2A client (it sends A2A-Version) gets a Task of its generation, any other caller the platform's 202."""
        if norm.method in GET_TASK_METHODS:
            return Answered(self._inbox_task(ws, caller, norm))
        a2a_client = speaks_a2a(next((v.decode("latin-1") for k, v in headers if k == b"a2a-version"), None))
        if a2a_client and norm.method not in SEND_METHODS:
            return Answered(rpc_error(norm.payload, UNSUPPORTED_OPERATION,
                                      f"{norm.method} is not supported by a poll-mode agent"))
        queued = await self._to_inbox(ws, caller, norm)
        if not a2a_client:
            return Queued(queued)
        task = inbox_task(norm.method, norm.payload, queued["activity_id"], "queued", None, rfc3339(time.time()))
        return Answered(rpc_result(norm.payload, task), stream=norm.method in STREAM_METHODS)

    async def _to_inbox(self, ws: Workspace, caller: str | None, norm: Normalized) -> dict[str, Any]:
        """Poll mode: the message waits in the agent's inbox (its activity), committed before we answer.
        Whole: the caller is told it was delivered (its size is bounded by BODY_LIMIT, 413 beyond)."""
        row_id = await self.box.store.write(activity_rows.insert(
            workspace_id=ws.id, activity_type="a2a_receive", source_id=caller, target_id=ws.id,
            method=norm.method, summary=summarize(norm.method, ws.name), request_body=norm.body, status="queued",
            inbox="open", body_limit=None))
        self._activity_event(ws, caller, norm.method, "queued", 0)
        return {"queued": True, "delivery": "poll", "queue_id": row_id, "activity_id": row_id,
                "task_id": inbox_task_id(row_id),
                "message": "delivered to the agent's inbox; it replies asynchronously"}

    def _inbox_task(self, ws: Workspace, caller: str | None, norm: Normalized) -> dict[str, Any]:
        """``tasks/get`` / ``GetTask`` of a message in a poll-mode agent's inbox, answered from its row: the
        caller that sent it (or the admin) reads its state and, once the agent replied, the reply."""
        params = norm.payload.get("params")
        row_id = inbox_row_id(params.get("id") if isinstance(params, dict) else None)
        row = inbox.task_row(self.box.store.db, ws.id, row_id) if row_id is not None else None
        if row is None or (caller is not None and row["source_id"] != caller):
            return rpc_error(norm.payload, TASK_NOT_FOUND, "task not found")
        state = inbox.state(row, inbox.cursor(self.box.store.db, ws.id),
                            inbox.expire_before(self.box.settings.inbox_ttl_days, time.time())) or "queued"
        reply = _json_or_text(row["response_body"].encode()) if state == "replied" and row["response_body"] else None
        text = str(reply.get("result", "")) if isinstance(reply, dict) else None
        request = _json_or_text(row["request_body"].encode()) if row["request_body"] else None
        return rpc_result(norm.payload, inbox_task(norm.method, request, row["id"], state, text,
                                                   rfc3339(row["created_at"])))

    async def _note_reply(self, caller: str | None, target_id: str, norm: Normalized, admission: Admission) -> None:
        """A poll-mode agent's reply to a peer (role agent, as the SDK's ``reply()`` sends it), accepted for
        delivery, answers the message it names or else the oldest it fetched from that peer (store/inbox.py)."""
        record = self.box.supervisor.record(caller) if caller is not None and caller != target_id else None
        if record is None or record.url not in (None, "", NO_INBOUND) or not is_reply(norm.payload):
            return
        admission.leave()  # a commit follows
        await self.box.store.write(inbox.mark_replied(
            record.id, target_id, {"result": message_text(norm.payload)}, replied_task(norm.payload)))
        await admission.enter()

    async def _forward_streaming(self, scope: dict[str, Any], receive: Receive, send: Send, ws: Workspace,
                                 caller: str | None, norm: Normalized, headers: list[tuple[bytes, bytes]],
                                 timeout: float | None, started: float, admission: Admission) -> None:
        try:
            vetted = self._vetted_now(ws.url or "", ws.url_from_backend)
            if vetted is None:  # a DNS lookup may wait: not in a work slot
                admission.leave()
                vetted = await self._resolve(ws.url or "", box_assigned=ws.url_from_backend)
                await admission.enter()
            scheme, address, port, host, path = vetted
        except UnsafeAgentURL as exc:
            raise BadGateway(
                f"workspace URL is not allowed: {exc.message.removeprefix('agent URL refused: ')}") from None
        now = trio.current_time()
        hard = min(now + timeout if timeout else math.inf, now + AGENT_CEILING if caller else math.inf)
        idle = self._idle_window(ws)
        idle_scope = trio.CancelScope(deadline=now + idle)
        calls = self._inflight.setdefault(ws.id, {})
        calls[idle_scope] = idle
        status, captured, error, response_started = 502, bytearray(), None, False
        try:
            with trio.CancelScope(deadline=hard) as hard_scope, idle_scope:
                pool = self.pools.get(scheme, address, port, host)
                # The pool leaves the work slot before it waits on the network (connect, the agent's answer).
                async with pool.post(path, headers, norm.body, waiting=admission.leave) as resp:
                    await admission.enter()
                    status = resp.status
                    if status >= 300:
                        body = await resp.read(ERROR_BODY_LIMIT)
                        captured += body
                        error = agent_error(status, body)
                        await send_json(send, status, {"error": error})
                        response_started = True
                    else:
                        response_started = True
                        await self._relay(send, receive, resp, idle_scope, idle, captured, admission)
            if not response_started:
                cause = "X-Timeout deadline" if hard_scope.cancelled_caught and timeout else (
                    "30 min agent-to-agent ceiling" if hard_scope.cancelled_caught else f"idle {idle:g}s")
                error = f"the agent did not answer in time ({cause})"
                status = 504
                raise GatewayTimeout(error)
        except UpstreamError as exc:
            admission.leave()  # what follows waits (a commit, our client)
            error = exc.detail
            if exc.response_started or response_started:
                log.warning("workspace %s: response cut mid-stream: %s", ws.id, exc.detail)
                with trio.CancelScope(shield=True), trio.move_on_after(1):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            if exc.kind in ("reset", "timeout"):
                status = 202
                raise Queued(await self._busy(ws, caller, norm, headers, exc.detail)) from None
            status = 502
            log.warning("workspace %s: cannot reach the agent: %s", ws.id, exc.detail)
            raise BadGateway(exc.detail if exc.kind == "tls" else None, delivery_confirmed=False) from None
        finally:
            calls.pop(idle_scope, None)
            if not calls:
                self._inflight.pop(ws.id, None)
                self._bumped.pop(ws.id, None)
            self._log_call(ws, caller, norm, status, bytes(captured), started, error)

    async def _relay(self, send: Send, receive: Receive, resp: UpstreamResponse, idle_scope: trio.CancelScope,
                     idle: float, captured: bytearray, admission: Admission) -> None:
        out_headers = [(k, v) for k, v in resp.headers if k not in HOP_BY_HOP]
        length = resp.header(b"content-length")
        if length is not None:
            out_headers.append((b"content-length", length))
        streaming = length is None
        if not streaming:
            body = await resp.read(10 * 1024 * 1024)
            if len(body) > SEND_IN_SLOT:
                admission.leave()  # a big reply may wait on a slow client
            captured += body[:CAPTURE_LIMIT]
            await send({"type": "http.response.start", "status": resp.status, "headers": out_headers})
            await send({"type": "http.response.body", "body": body})
            return
        admission.leave()  # a stream waits on the agent between events
        await send({"type": "http.response.start", "status": resp.status, "headers": out_headers})
        # A stream: pass chunks on as they arrive, and stop the upstream call if our client goes away.
        async with trio.open_nursery() as nursery:
            async def watch_client() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch_client)
            async for chunk in resp.chunks():
                idle_scope.deadline = max(idle_scope.deadline, trio.current_time() + idle)
                if len(captured) < CAPTURE_LIMIT:
                    captured += chunk[:CAPTURE_LIMIT - len(captured)]
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            nursery.cancel_scope.cancel()

    # -- activity ------------------------------------------------------------------------------

    def _log_call(self, ws: Workspace, caller: str | None, norm: Normalized, status: int, response: bytes,
                  started: float, error: str | None) -> None:
        duration = int((time.perf_counter() - started) * 1000)
        outcome = "queued" if status == 202 else ("ok" if status < 400 else "error")
        self._activity_buf.append(activity_rows.insert(
            workspace_id=ws.id, activity_type="a2a_receive", source_id=caller, target_id=ws.id, method=norm.method,
            summary=summarize(norm.method, ws.name) if error is None
            else f"A2A request to {ws.name} failed: {error}"[:500],
            request_body=norm.body, response_body=response or None, duration_ms=duration, status=outcome,
            error_detail=error))
        if caller is not None and 200 <= status < 300 and status != 202 and error is None:
            self._outbound[caller] = time.time()
        if len(self._activity_buf) == 1:
            self._activity_wake.set()
        self._activity_event(ws, caller, norm.method, outcome, duration)
        if caller is None and status < 400 and status != 202:
            self.box.bus.publish(self.box.bus.make("A2A_RESPONSE", ws.id, {
                "response_body": _json_or_text(response), "method": norm.method, "duration_ms": duration}))

    async def _activity_flusher(self) -> None:
        """Hands the buffered activity rows to the store as one op per ACTIVITY_FLUSH_EVERY.

        A row per call as its own op made every group-commit batch carry ~20 inserts (each in its own
        SAVEPOINT) under load, and heartbeats, which wait for their commit, waited behind them."""
        while True:
            await self._activity_wake.wait()
            await trio.sleep(ACTIVITY_FLUSH_EVERY)
            self._flush_activity()

    def _flush_activity(self) -> None:
        ops, self._activity_buf = self._activity_buf, []
        self._activity_wake = trio.Event()
        outbound, self._outbound = self._outbound, {}
        for caller, at in outbound.items():  # callers' last_outbound_at, owned by their actors
            self.box.supervisor.tell(caller, c.Outbound(at=at))
        if not ops:
            return
        self.box.store.submit(activity_rows.insert_each(ops))

    def _activity_event(self, ws: Workspace, caller: str | None, method: str, status: str, duration: int) -> None:
        self.box.bus.publish(self.box.bus.make("ACTIVITY_LOGGED", ws.id, {
            "activity_type": "a2a_receive", "method": method, "summary": summarize(method, ws.name),
            "status": status, "source_id": caller, "target_id": ws.id, "duration_ms": duration}))

    # -- the queue drainer ----------------------------------------------------------------------

    async def _drainer(self, nursery: trio.Nursery) -> None:
        async for workspace_id, drain in self._drain_receive:
            nursery.start_soon(self._drain, workspace_id, drain)

    async def _drain(self, workspace_id: str, drain: _Drain) -> None:
        """Delivers the workspace's queue, oldest first, keeping up to its agent's spare capacity in flight.

        Why not one message per sign of capacity: heartbeats come every 30 s, so a queue of 1,000 took
        8 hours. Each answer frees room for the next message at once; an answer that is not a success
        (busy or failed) stops the drain until the next sign of capacity (request_drain), and the messages
        not sent stay queued. Ends when the queue is empty or there is no room, with nothing in flight."""
        try:
            async with trio.open_nursery() as deliveries:
                while True:
                    room = self._room(workspace_id, drain)
                    if room > 0:
                        await self._dispatch(workspace_id, drain, room, deliveries)
                    elif drain.running:
                        drain.changed = trio.Event()
                        await drain.changed.wait()
                    else:
                        # Now, not after the nursery: a sign of capacity from here on starts a new drain.
                        self._drains.pop(workspace_id, None)
                        return
        finally:
            if self._drains.get(workspace_id) is drain:
                del self._drains[workspace_id]

    def _room(self, workspace_id: str, drain: _Drain) -> int:
        """How many more messages may go out now: none once stopped, nor while a message that failed is not
        back in the queue yet (it goes out again before the ones behind it)."""
        ws = self.box.supervisor.record(workspace_id)
        if ws is None or drain.stopped or drain.settling or not self.pending.get(workspace_id):
            return 0
        return spare_capacity(ws, drain.in_flight)

    async def _dispatch(self, workspace_id: str, drain: _Drain, room: int, deliveries: trio.Nursery) -> None:
        """Claims up to ``room`` messages in one commit and sends them in queue order: each delivery starts
        once the one before it went to the agent's connection pool."""
        try:
            items = await self.box.store.write(queue_rows.claim(workspace_id, room))
            if not items:
                self.pending[workspace_id] = 0
                return
            self.pending[workspace_id] = max(0, self.pending.get(workspace_id, 0) - len(items))
            for index, item in enumerate(items):
                if drain.stopped:  # an answer of the ones sent stopped the drain: the rest was never sent
                    await self._unclaim(workspace_id, items[index:])
                    return
                sending = trio.Event()
                drain.in_flight += 1
                drain.running += 1
                deliveries.start_soon(self._delivery, item, drain, sending)
                await sending.wait()
        except Exception:  # the store failed: stop until the next sign of capacity (rows it claimed stay
            # dispatched until the next start)
            log.exception("dispatching queued messages of %s failed", workspace_id)
            drain.stopped = True

    async def _unclaim(self, workspace_id: str, items: list[dict[str, Any]]) -> None:
        """Claimed messages that were never sent go back to the queue as they were (no attempt used)."""
        finishes = [queue_rows.finish(item["id"], ok=False, busy=True, error=item["last_error"]) for item in items]
        await self.box.store.write(lambda db: [finish(db) for finish in finishes])
        self.pending[workspace_id] = self.pending.get(workspace_id, 0) + len(items)

    async def _delivery(self, item: dict[str, Any], drain: _Drain, sending: trio.Event) -> None:
        """One claimed message: delivered, its agent's room given back at the answer, then its outcome
        committed and its delegation settled."""
        workspace_id = item["workspace_id"]
        result = Delivered(False, False, "delivery did not finish", b"")
        try:
            try:
                result = await self._deliver(item, sending)
            except Exception as exc:  # a bug, not the agent: the message goes back to the queue, the drain stops
                log.exception("delivering queue item %d of %s failed", item["id"], workspace_id)
                result = Delivered(False, False, f"delivery failed: {type(exc).__name__}", b"")
            finally:
                sending.set()
                drain.in_flight -= 1
                if not result.ok:
                    drain.stopped = True
                    drain.settling += 1
                drain.changed.set()
            final = await self.box.store.write(queue_rows.finish(
                item["id"], ok=result.ok, error=result.error, attempts=item["attempts"], busy=result.busy))
            if final == "queued":
                self.pending[workspace_id] = self.pending.get(workspace_id, 0) + 1
            await self._settle_delegation(item, final, result.body, result.error)
            if not result.ok:
                log.info("queue item %d for %s: %s (%s)", item["id"], workspace_id, final, result.error)
        except Exception:
            log.exception("recording the delivery of queue item %d of %s failed", item["id"], workspace_id)
        finally:
            drain.running -= 1
            if not result.ok:
                drain.settling -= 1
            drain.changed.set()

    async def _settle_delegation(self, item: dict[str, Any], final: str, body: bytes, error: str | None) -> None:
        """A delivered (or finally failed) queue item that a delegation enqueued records the delegation's result.

        Only that row: its flag, source and target must all be the delegation's. A message id alone proves
        nothing (any caller may reuse a delegation id, and DELEGATION_SENT broadcasts them)."""
        if final == "queued" or item["caller_id"] is None or item["delegation_id"] is None:
            return
        row = delegation_rows.sent_as(self.box.store.db, item["delegation_id"], item["caller_id"],
                                      item["workspace_id"])
        if row is None:
            return
        status = "completed" if final == "completed" else "failed"
        result = json.dumps(_json_or_text(body)) if body else json.dumps({"error": error})
        await self.box.store.write(delegation_rows.settle(row["id"], status, result))
        kind = "DELEGATION_COMPLETE" if status == "completed" else "DELEGATION_FAILED"
        self.box.bus.publish(self.box.bus.make(kind, row["source_id"], {
            "delegation_id": row["id"], "target_id": item["workspace_id"], "via": "queue_drain",
            "result": _json_or_text(body) if body else None, "error": error}))

    async def _deliver(self, item: dict[str, Any], sending: trio.Event) -> Delivered:
        """Sends one queued message; ``sending`` is set as its request goes to the agent's connection pool."""
        ws = self.box.supervisor.record(item["workspace_id"])
        if ws is None:
            return Delivered(False, False, "workspace removed", b"")
        try:
            norm = normalize(bytes(item["body"]))
        except BadRequest as exc:  # queued before bodies had to be strict JSON: undeliverable, not wedged
            return Delivered(False, False, exc.message, b"")
        if ws.url in (None, "", NO_INBOUND) and self.box.backends.is_remote(ws.backend):
            await self._to_inbox(ws, item["caller_id"], norm)
            return Delivered(True, False, None, b"")
        if ws.status not in (S.ONLINE, S.DEGRADED) or not ws.url:
            return Delivered(False, False, f"workspace is {ws.status.value}", b"")
        headers = [(k.encode(), v.encode("latin-1")) for k, v in json.loads(item["headers"]).items()]
        started = time.perf_counter()
        status, body, error, busy = 502, b"", None, False
        try:
            scheme, address, port, host, path = await self._resolve(ws.url, box_assigned=ws.url_from_backend)
            with trio.move_on_after(DRAIN_DEADLINE) as scope:
                sending.set()  # on a kept-alive connection the request is written before the next one starts
                async with self.pools.get(scheme, address, port, host).post(path, headers, norm.body) as resp:
                    status = resp.status
                    body = await resp.read(10 * 1024 * 1024)
            if scope.cancelled_caught:
                error = "delivery timed out"
            elif busy_answer(status, body):
                busy = True
                error = f"agent busy: {agent_error(status, body)}"
            elif status >= 300:
                error = agent_error(status, body)
        except (UpstreamError, UnsafeAgentURL) as exc:
            error = str(exc)
        logged = status if error is None else 202 if busy else max(status, 502)  # busy: still queued
        self._log_call(ws, item["caller_id"], norm, logged, body[:CAPTURE_LIMIT], started, error)
        return Delivered(error is None, busy, error, body)


@dataclass(eq=False)
class _Drain:
    """The state of one workspace's drain (see A2AProxy._drain)."""

    #: Deliveries sent and not answered yet: they hold the agent's capacity.
    in_flight: int = 0
    #: Delivery tasks not finished yet (an answered one still commits its outcome).
    running: int = 0
    #: Deliveries that did not succeed and whose message is not back in the queue yet.
    settling: int = 0
    #: An answer was not a success: nothing more goes out until the next sign of capacity.
    stopped: bool = False
    #: Set when any of the above changes.
    changed: trio.Event = field(default_factory=trio.Event)


class Delivered(NamedTuple):
    """The outcome of one queued message's delivery."""

    ok: bool
    busy: bool
    error: str | None
    body: bytes


def spare_capacity(ws: Workspace, in_flight: int = 0) -> int:
    """How many more messages the workspace's agent may be handed now: its ``max_concurrent_tasks`` less what
    it is busy with (none unless it is live). The one test of spare capacity: whether a sign of life starts a
    drain, and how far a drain goes.

    An agent's heartbeat counts the deliveries it is working on in its ``active_tasks``, so adding the
    deliveries in flight would count them twice and pause a drain at every heartbeat; the larger of the two is
    what it is busy with. Either way no more than ``max_concurrent_tasks`` deliveries are ever in flight, and
    an agent whose own work was not yet in its last heartbeat answers busy, which stops the drain."""
    if ws.status not in LIVE_STATES:
        return 0
    return max(0, ws.max_concurrent_tasks - max(ws.active_tasks, in_flight))


def busy_answer(status: int, body: bytes) -> bool:
    """The agent says it has no room for the message: HTTP 429 or 503, or a JSON-RPC error whose ``data`` has
    ``"busy": true`` (the box's own busy answer, ``{"busy": true}``, counts too). The message stays queued."""
    if status in (429, 503):
        return True
    if b'"busy"' not in body:
        return False
    try:
        parsed = strictjson.loads(body)
    except ValueError:
        return False
    if not isinstance(parsed, dict):
        return False
    error = parsed.get("error")
    data = error.get("data") if isinstance(error, dict) else None
    return parsed.get("busy") is True or (isinstance(data, dict) and data.get("busy") is True)


async def _send_answer(send: Send, answered: Answered) -> None:
    """A JSON-RPC answer, or (to a streaming method) the same as the one event of an SSE stream."""
    if not answered.stream:
        await send_json(send, 200, answered.body)
        return
    event = b"data: " + json.dumps(answered.body, separators=(",", ":")).encode() + b"\n\n"
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
        (b"content-length", str(len(event)).encode())]})
    await send({"type": "http.response.body", "body": event})


def _json_or_text(body: bytes) -> Any:
    """An agent's reply as JSON for the events and delegation results, or as text when it is not strict JSON."""
    try:
        return strictjson.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")
