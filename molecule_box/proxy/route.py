"""What becomes of an A2A call, decided before any byte goes to the agent: a pure function of the target's
record, so every branch is tested without a server.

One decision for both paths: a caller's call (``handle``) and the delivery of a queued message (the drain,
``delivery=True``: its room was counted already, and it does not wake a hibernated workspace, whose messages
wait for it to be live again).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import HTTPError, ServiceUnavailable
from ..models import LIVE_STATES, Workspace, WorkspaceStatus
from ..security.ssrf import NO_INBOUND

S = WorkspaceStatus


@dataclass(frozen=True, slots=True)
class Forward:
    """Send it to the agent's URL now."""


@dataclass(frozen=True, slots=True)
class Queue:
    """The agent is busy: keep the message durably and deliver it when it has spare capacity."""

    why: str


@dataclass(frozen=True, slots=True)
class Inbox:
    """A poll-mode agent (no inbound URL): the message waits in its inbox for its next poll."""


@dataclass(frozen=True, slots=True)
class Refuse:
    """Answer the caller ``error`` now; ``wake``: the target is hibernated, tell its actor to wake it."""

    error: HTTPError
    wake: bool = False


Decision = Forward | Queue | Inbox | Refuse
FORWARD = Forward()
INBOX = Inbox()


def decide(ws: Workspace, message_id: str | None, *, remote: bool, delivery: bool = False) -> Decision:
    """Where a call to ``ws`` (a message with ``message_id``, None when it has none) goes; ``remote``: its
    backend runs no workload (a remote agent's, which without an inbound URL polls its inbox)."""
    if ws.status in (S.HIBERNATED, S.HIBERNATING):
        if delivery:
            return Refuse(ServiceUnavailable(f"workspace is {ws.status.value}", retry_after=15))
        return Refuse(ServiceUnavailable("workspace is hibernated and is being woken", retry_after=15, waking=True),
                      wake=True)
    if ws.status is S.PAUSED:
        return Refuse(ServiceUnavailable("workspace is paused", retry_after=30, status=ws.status.value))
    if ws.url in (None, "", NO_INBOUND):
        if remote:
            return INBOX
        return Refuse(ServiceUnavailable("workspace has no URL yet", retry_after=10, status=ws.status.value))
    if ws.status not in LIVE_STATES:
        return Refuse(ServiceUnavailable(f"workspace is {ws.status.value}", retry_after=10, status=ws.status.value))
    if not delivery and ws.active_tasks > 0 and not ws.spare_capacity():
        return when_busy(ws, message_id, "agent at its max_concurrent_tasks")
    return FORWARD


def when_busy(ws: Workspace, message_id: str | None, why: str) -> Queue | Refuse:
    """A busy agent's call is queued, except to an agent that declared the ``session`` capability (a native
    session: the platform answers it 503) or a message without an id (the queue keys deliveries by it)."""
    if ws.capabilities.get("session"):
        return Refuse(ServiceUnavailable("workspace agent busy — retry after a short backoff", retry_after=30,
                                         busy=True, native_session=True))
    if message_id is None:
        return Refuse(ServiceUnavailable("workspace agent busy — retry after a short backoff", retry_after=30,
                                         busy=True))
    return Queue(why)
