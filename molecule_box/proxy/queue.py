"""The busy queue: messages for an agent without room, kept durably (store/queue.py) and delivered at the
agent's pace. The one owner of the pending counts, of the drains and of a queued delegation's settlement.

A drain starts on a sign of capacity: the target's heartbeat or register (``WORKSPACE_HEARTBEAT``,
``WORKSPACE_ONLINE`` on the bus, published once the actor committed its record), or a new delegation.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import sqlite_utils
import trio

from .. import strictjson
from ..bus import EventBus
from ..config import Settings
from ..errors import BadRequest
from ..models import Event, Workspace
from ..security.ssrf import UnsafeAgentURL
from ..store import Store
from ..store import delegations as delegation_rows
from ..store import queue as queue_rows
from .activity import ActivityLog, Teller, json_or_text
from .client import UpstreamError
from .forward import CAPTURE_LIMIT, Forwarder
from .normalize import Normalized, agent_error, normalize
from .route import Inbox, Refuse, decide

log = logging.getLogger(__name__)

DRAIN_DEADLINE = 300.0
#: The events that tell the proxy a workspace may have room again.
SIGNS_OF_CAPACITY = frozenset({"WORKSPACE_HEARTBEAT", "WORKSPACE_ONLINE"})


class BusyQueue:
    def __init__(self, store: Store, bus: EventBus, settings: Settings, supervisor: Teller, forward: Forwarder,
                 activity: ActivityLog, is_remote: Callable[[str], bool]) -> None:
        self._store = store
        self._is_remote = is_remote
        self._bus = bus
        self._settings = settings
        self._supervisor = supervisor
        self._forward = forward
        self._activity = activity
        #: Queued (not yet dispatched) messages per workspace, so a sign of capacity checks a dict, not SQLite.
        self._pending: dict[str, int] = {}
        #: The running drain of each workspace whose queue is being delivered (see _drain).
        self._drains: dict[str, _Drain] = {}
        self._drain_send, self._drain_receive = trio.open_memory_channel[tuple[str, _Drain]](math.inf)

    # -- lifetime -----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self._store.write(queue_rows.requeue_dispatched)
        self._pending = queue_rows.pending_counts(self._store.db)
        async with trio.open_nursery() as nursery:
            task_status.started()
            async for workspace_id, drain in self._drain_receive:
                nursery.start_soon(self._drain, workspace_id, drain)

    # -- what comes in ------------------------------------------------------------------------

    async def put(self, workspace_id: str, caller: str | None, message_id: str, method: str, body: bytes,
                  headers: dict[str, str], *, delegation_id: str | None = None,
                  along: Callable[[sqlite_utils.Database], object] | None = None) -> tuple[int, int, bool]:
        """Queues a message, committed before this returns (with ``along``, an op of the same transaction):
        (queue id, depth, duplicate). A full queue raises QueueFull."""
        enqueue = queue_rows.enqueue(workspace_id, caller, message_id, method, body, headers,
                                     self._settings.a2a_queue_limit, delegation_id=delegation_id)

        def op(db: sqlite_utils.Database) -> tuple[int, int, bool]:
            if along is not None:
                along(db)
            return enqueue(db)

        queue_id, depth, duplicate = await self._store.write(op)
        if not duplicate:
            self._pending[workspace_id] = self._pending.get(workspace_id, 0) + 1
        return queue_id, depth, duplicate

    async def put_call(self, ws: Workspace, caller: str | None, norm: Normalized, headers: list[tuple[bytes, bytes]],
                       why: str) -> dict[str, Any]:
        """A call to a busy agent, queued: the caller's 202 body."""
        assert norm.message_id is not None  # route.when_busy queues only a message with an id
        queue_id, depth, duplicate = await self.put(
            ws.id, caller, norm.message_id, norm.method, norm.body,
            {k.decode(): v.decode("latin-1") for k, v in headers})
        log.info("workspace %s busy (%s): message queued as %d (depth %d)", ws.id, why, queue_id, depth)
        return {"queued": True, "queue_id": queue_id, "queue_depth": depth, "duplicate": duplicate,
                "message": "workspace agent busy — message queued and delivered when it has capacity"}

    def on_event(self, event: Event) -> None:
        if event.type in SIGNS_OF_CAPACITY and event.workspace_id is not None:
            self.request_drain(event.workspace_id)

    def request_drain(self, workspace_id: str) -> None:
        """A sign of spare capacity: deliver the queue of ``workspace_id`` at its agent's pace (see _drain).
        A drain that a failed delivery stopped goes on again."""
        if not self._pending.get(workspace_id):  # every heartbeat asks: the common answer costs a dict lookup
            return
        ws = self._supervisor.record(workspace_id)
        if ws is None or ws.spare_capacity() <= 0:
            return
        drain = self._drains.get(workspace_id)
        if drain is None:
            drain = self._drains[workspace_id] = _Drain()
            self._drain_send.send_nowait((workspace_id, drain))
        else:
            drain.stopped = False
            drain.changed.set()

    # -- the drain ----------------------------------------------------------------------------

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
        ws = self._supervisor.record(workspace_id)
        if ws is None or drain.stopped or drain.settling or not self._pending.get(workspace_id):
            return 0
        return ws.spare_capacity(drain.in_flight)

    async def _dispatch(self, workspace_id: str, drain: _Drain, room: int, deliveries: trio.Nursery) -> None:
        """Claims up to ``room`` messages in one commit and sends them in queue order: each delivery starts
        once the one before it went to the agent's connection pool."""
        try:
            items = await self._store.write(queue_rows.claim(workspace_id, room))
            if not items:
                self._pending[workspace_id] = 0
                return
            self._pending[workspace_id] = max(0, self._pending.get(workspace_id, 0) - len(items))
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
        await self._store.write(lambda db: [finish(db) for finish in finishes])
        self._pending[workspace_id] = self._pending.get(workspace_id, 0) + len(items)

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
            final = await self._store.write(queue_rows.finish(
                item["id"], ok=result.ok, error=result.error, attempts=item["attempts"], busy=result.busy))
            if final == "queued":
                self._pending[workspace_id] = self._pending.get(workspace_id, 0) + 1
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
        row = delegation_rows.sent_as(self._store.db, item["delegation_id"], item["caller_id"],
                                      item["workspace_id"])
        if row is None:
            return
        status = "completed" if final == "completed" else "failed"
        result = json.dumps(json_or_text(body)) if body else json.dumps({"error": error})
        await self._store.write(delegation_rows.settle(row["id"], status, result))
        kind = "DELEGATION_COMPLETE" if status == "completed" else "DELEGATION_FAILED"
        self._bus.publish(self._bus.make(kind, row["source_id"], {
            "delegation_id": row["id"], "target_id": item["workspace_id"], "via": "queue_drain",
            "result": json_or_text(body) if body else None, "error": error}))

    async def _deliver(self, item: dict[str, Any], sending: trio.Event) -> Delivered:
        """Sends one queued message; ``sending`` is set as its request goes to the agent's connection pool."""
        ws = self._supervisor.record(item["workspace_id"])
        if ws is None:
            return Delivered(False, False, "workspace removed", b"")
        try:
            norm = normalize(bytes(item["body"]))
        except BadRequest as exc:  # queued before bodies had to be strict JSON: undeliverable, not wedged
            return Delivered(False, False, exc.message, b"")
        decision = decide(ws, norm.message_id, remote=self._is_remote(ws.backend), delivery=True)
        if isinstance(decision, Inbox):
            await self._activity.inbox(ws, item["caller_id"], norm)
            return Delivered(True, False, None, b"")
        if isinstance(decision, Refuse):
            return Delivered(False, False, decision.error.message, b"")
        headers = [(k.encode(), v.encode("latin-1")) for k, v in json.loads(item["headers"]).items()]
        started = time.perf_counter()
        status, body, error, busy = 502, b"", None, False
        try:
            scheme, address, port, host, path = await self._forward.resolve(ws.url or "",
                                                                            box_assigned=ws.url_from_backend)
            with trio.move_on_after(DRAIN_DEADLINE) as scope:
                sending.set()  # on a kept-alive connection the request is written before the next one starts
                async with self._forward.pools.get(scheme, address, port, host).post(path, headers, norm.body) as resp:
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
        self._activity.call(ws, item["caller_id"], norm, logged, body[:CAPTURE_LIMIT], started, error)
        return Delivered(error is None, busy, error, body)


@dataclass(eq=False)
class _Drain:
    """The state of one workspace's drain (see BusyQueue._drain)."""

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
