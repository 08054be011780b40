"""The proxy's activity log: a row per call (and per poll-mode message), and its ``ACTIVITY_LOGGED`` event,
published only once the row is committed (a subscriber that reads the activity at the event finds the row).

A finished call's row is buffered and written as one group-commit op every ACTIVITY_FLUSH_EVERY, off the
request path: a row per call as its own op made every group-commit batch carry ~20 inserts (each in its own
SAVEPOINT) under load, and heartbeats, which wait for their commit, waited behind them. A poll-mode message's
row is committed before its caller is answered (the caller is told it was delivered).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import sqlite_utils
import trio

from .. import strictjson
from ..actors import commands as c
from ..bus import EventBus
from ..models import Event, Workspace
from ..store import Store
from ..store import activity as activity_rows
from ..store import inbox as inbox_rows
from ..store.errors import StoreError
from .normalize import Normalized, summarize

log = logging.getLogger(__name__)

ACTIVITY_FLUSH_EVERY = 0.05


class Teller(Protocol):
    """What the proxy's parts ask of the supervisor: a workspace's committed record, and a command to its actor."""

    def record(self, workspace_id: str) -> Workspace | None: ...

    def tell(self, workspace_id: str, message: c.Message) -> bool: ...

    def wake_soon(self, workspace_id: str) -> None: ...


class ActivityLog:
    def __init__(self, store: Store, bus: EventBus, supervisor: Teller, now: Callable[[], float],
                 inbox_ttl_days: float | None = None) -> None:
        self._store = store
        self._inbox_ttl = inbox_ttl_days
        self._bus = bus
        self._supervisor = supervisor
        self._now = now
        self._rows: list[Callable[[sqlite_utils.Database], int]] = []
        self._events: list[Event] = []
        self._outbound: dict[str, float] = {}  # caller id -> time of its last successful call, until the flush
        self._wake = trio.Event()

    def call(self, ws: Workspace, caller: str | None, norm: Normalized, status: int, response: bytes,
             started: float, error: str | None) -> None:
        """A finished call (or delivery): its row and event go out with the next flush."""
        duration = int((time.perf_counter() - started) * 1000)
        outcome = "queued" if status == 202 else ("ok" if status < 400 else "error")
        self._rows.append(activity_rows.insert(
            workspace_id=ws.id, activity_type="a2a_receive", source_id=caller, target_id=ws.id, method=norm.method,
            summary=summarize(norm.method, ws.name) if error is None
            else f"A2A request to {ws.name} failed: {error}"[:500],
            request_body=norm.body, response_body=response or None, duration_ms=duration, status=outcome,
            error_detail=error))
        self._events.append(self._event(ws, caller, norm.method, outcome, duration))
        if caller is not None and 200 <= status < 300 and status != 202 and error is None:
            self._outbound[caller] = self._now()
        if len(self._rows) == 1:
            self._wake.set()
        if caller is None and status < 400 and status != 202:
            self._bus.publish(self._bus.make("A2A_RESPONSE", ws.id, {
                "response_body": json_or_text(response), "method": norm.method, "duration_ms": duration}))

    async def inbox(self, ws: Workspace, caller: str | None, norm: Normalized) -> int:
        """Poll mode: the message waits in the agent's inbox (its activity), committed before this returns.
        Whole: the caller is told it was delivered (its size is bounded by the proxy's body limit)."""
        row_id = await self._store.write(activity_rows.insert(
            workspace_id=ws.id, activity_type="a2a_receive", source_id=caller, target_id=ws.id,
            method=norm.method, summary=summarize(norm.method, ws.name), request_body=norm.body, status="queued",
            inbox="open", body_limit=None))
        self._bus.publish(self._event(ws, caller, norm.method, "queued", 0))
        expires = None if self._inbox_ttl is None else self._now() + self._inbox_ttl * inbox_rows.DAY
        self._bus.publish(self._bus.make(inbox_rows.EVENT, ws.id, inbox_rows.event_payload(
            ws.id, row_id, "queued", caller, expires_at=expires)))
        return row_id

    async def run(self) -> None:
        """Flushes the buffered rows, one op per ACTIVITY_FLUSH_EVERY; at the end what is left is submitted
        (the writer commits it on its way out)."""
        try:
            while True:
                await self._wake.wait()
                await trio.sleep(ACTIVITY_FLUSH_EVERY)
                await self._flush()
        finally:
            rows, _ = self._take()
            if rows:
                self._store.submit(activity_rows.insert_each(rows))

    def _take(self) -> tuple[list[Callable[[sqlite_utils.Database], int]], list[Event]]:
        rows, events, self._rows, self._events = self._rows, self._events, [], []
        self._wake = trio.Event()
        outbound, self._outbound = self._outbound, {}
        for caller, at in outbound.items():  # callers' last_outbound_at, owned by their actors
            self._supervisor.tell(caller, c.Outbound(at=at))
        return rows, events

    async def _flush(self) -> None:
        rows, events = self._take()
        if not rows:
            return
        try:
            await self._store.write(activity_rows.insert_each(rows))
        except StoreError as exc:  # rows that were not written announce nothing; the proxy goes on
            log.warning("%d activity rows were not written: %s", len(rows), exc)
            return
        except Exception:  # a bug in an op: the rows are lost, the proxy goes on
            log.exception("writing %d activity rows failed", len(rows))
            return
        for event in events:
            self._bus.publish(event)

    def _event(self, ws: Workspace, caller: str | None, method: str, status: str, duration: int) -> Event:
        return self._bus.make("ACTIVITY_LOGGED", ws.id, {
            "activity_type": "a2a_receive", "method": method, "summary": summarize(method, ws.name),
            "status": status, "source_id": caller, "target_id": ws.id, "duration_ms": duration})


def json_or_text(body: bytes) -> Any:
    """An agent's reply as JSON for the events and delegation results, or as text when it is not strict JSON."""
    try:
        return strictjson.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")

