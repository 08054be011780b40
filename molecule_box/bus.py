"""In-process pub/sub of workspace events (trio memory channels), and the event streams clients hold open.

Feeds ``GET /ws``, the SSE streams, and anything else that waits on a
workspace (the A2A idle timer). Publishing never waits: an actor must never
block on a slow browser. Each subscriber has a bounded queue; one whose queue
is full has fallen too far behind and is dropped (its stream ends with a hint
to reconnect) instead of silently missing events or slowing anyone else.

Client streams (:class:`Stream`) are capped per holder and in total (one agent
opening thousands of them made every heartbeat wait), and remember the token
that opened them, so a revoked token or a removed workspace ends them at once.
What a workspace's own stream may carry of other workspaces is
:func:`workspace_view`.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import trio

from .access import Lookup, can_communicate
from .errors import TooManyRequests
from .models import Event

View = Callable[[Event], Event | None]

#: Why a stream ended (its ``reason``).
FELL_BEHIND = "fell behind"
REVOKED = "token revoked"
REMOVED = "workspace removed"

#: Seconds a refused stream is told to wait before trying again.
RETRY_AFTER = 5

#: Status changes and card updates of its peers a workspace's stream carries, with only :data:`PEER_FIELDS`.
PEER_LIFECYCLE = frozenset({
    "WORKSPACE_PROVISIONING", "WORKSPACE_ONLINE", "WORKSPACE_AWAITING_AGENT", "WORKSPACE_OFFLINE",
    "WORKSPACE_DEGRADED", "WORKSPACE_PROVISION_FAILED", "WORKSPACE_PAUSED", "WORKSPACE_HIBERNATED",
    "WORKSPACE_REMOVED", "AGENT_CARD_UPDATED",
})
#: What a peer may learn of another's lifecycle (what discovery shows anyway); errors and details stay out.
PEER_FIELDS = ("name", "url", "agent_card")
#: Conversation events, carried in full to a workspace that is their source or target.
CONVERSATION = frozenset({
    "ACTIVITY_LOGGED", "A2A_RESPONSE", "AGENT_MESSAGE", "DELEGATION_SENT", "DELEGATION_COMPLETE",
    "DELEGATION_FAILED", "INBOX_MESSAGE",
})


def workspace_view(lookup: Lookup, subscriber: str) -> View:
    """What a workspace's stream shows of each event: all of its own; of a workspace it may talk to, the
    lifecycle (status, name, URL, card) and the conversations it is a party to; of anything else, nothing.

    Any other type (heartbeats, task updates, provisioning progress, types added later) stays with its
    workspace: peers learned the others' task texts, replies and delegations from it."""

    def view(event: Event) -> Event | None:
        if event.workspace_id == subscriber:
            return event
        lifecycle = event.type in PEER_LIFECYCLE
        party = event.type in CONVERSATION and subscriber in (event.payload.get("source_id"),
                                                              event.payload.get("target_id"))
        # The type first: most events (heartbeats) stop here, before the hierarchy walk.
        if not (lifecycle or party) or event.workspace_id is None or not can_communicate(
                lookup, subscriber, event.workspace_id):
            return None
        if lifecycle:
            return dataclasses.replace(event, payload={k: event.payload[k] for k in PEER_FIELDS if k in event.payload})
        return event

    return view


@dataclasses.dataclass(eq=False)
class _Subscriber:
    send: trio.MemorySendChannel[Event]
    view: View | None
    stream: Stream | None = None


class Stream:
    """One client's open stream: holds its place under the caps until :meth:`close`, and is ended by the
    bus (``reason`` set, no more events) when it falls behind or the token that opened it stops being valid.

    The bus ends a stream by setting ``reason`` and closing its channel, not by cancelling its consumer:
    the consumer stops between two frames and can still send a last one saying why."""

    def __init__(self, bus: EventBus, key: int, holder: str, token_id: str | None, workspace_id: str | None,
                 receive: trio.MemoryReceiveChannel[Event]) -> None:
        self._bus = bus
        self._key = key
        self._receive = receive
        self.holder = holder
        self.token_id = token_id
        self.workspace_id = workspace_id
        self.reason: str | None = None

    async def next(self) -> Event | None:
        """The next event; None once the stream has ended (``reason`` says why)."""
        try:
            event = await self._receive.receive()
        except trio.EndOfChannel:
            return None
        return event if self.reason is None else None

    def queued(self, limit: int) -> list[Event]:
        """Up to ``limit`` events already waiting, without waiting for more (nothing once ended)."""
        events: list[Event] = []
        while len(events) < limit:
            try:
                events.append(self._receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        return events if self.reason is None else []

    def close(self) -> None:
        """Give the stream's place back; idempotent (the body's close and its finalizer may both call it)."""
        self._bus._close_stream(self._key)


class EventBus:
    """Fan-out of committed events to listeners, in-process subscribers and client streams (capped)."""

    def __init__(self, *, streams_per_holder: int = 16, streams_total: int = 1000, stream_buffer: int = 256) -> None:
        self._subscribers: dict[int, _Subscriber] = {}
        self._streams: dict[int, Stream] = {}
        self._held: Counter[str] = Counter()
        self._next = 0
        self.streams_per_holder = streams_per_holder
        self.streams_total = streams_total
        self.stream_buffer = stream_buffer
        self.dropped = 0
        self.published = 0
        self.fell_behind = 0
        self.refused = 0
        self._listeners: list[Callable[[Event], None]] = []

    def add_listener(self, listener: Callable[[Event], None]) -> None:
        """A synchronous callback for every event (e.g. the A2A idle timers); it must be cheap and not raise."""
        self._listeners.append(listener)

    @staticmethod
    def make(type: str, workspace_id: str | None, payload: dict[str, Any] | None = None) -> Event:
        return Event(type, workspace_id, payload or {}, time.time())

    def publish(self, event: Event) -> None:
        """Deliver to every matching subscriber without waiting; call only after the event is committed."""
        self.published += 1
        for listener in self._listeners:
            listener(event)
        for key, sub in list(self._subscribers.items()):
            shown = event if sub.view is None else sub.view(event)
            if shown is None:
                continue
            try:
                sub.send.send_nowait(shown)
            except trio.WouldBlock:
                self.dropped += 1
                self.fell_behind += 1
                self._end(key, FELL_BEHIND)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                pass

    def _add(self, view: View | None, buffer: int) -> tuple[int, trio.MemoryReceiveChannel[Event]]:
        send, receive = trio.open_memory_channel[Event](buffer)
        key = self._next
        self._next += 1
        self._subscribers[key] = _Subscriber(send, view)
        return key, receive

    def _end(self, key: int, reason: str) -> bool:
        """Stop delivering to a subscriber: what it has queued it may still read, then its channel ends."""
        sub = self._subscribers.pop(key, None)
        if sub is None:
            return False
        if sub.stream is not None:
            sub.stream.reason = reason
        sub.send.close()
        return True

    @contextmanager
    def subscribe(
        self, wanted: Callable[[Event], bool] | None = None, *, buffer: int = 256
    ) -> Iterator[trio.MemoryReceiveChannel[Event]]:
        """An in-process subscription (no cap): its channel ends if it falls ``buffer`` events behind."""
        key, receive = self._add(None if wanted is None else (lambda e: e if wanted(e) else None), buffer)
        try:
            yield receive
        finally:
            self._end(key, "unsubscribed")
            receive.close()

    def open_stream(self, holder: str, *, token_id: str | None = None, workspace_id: str | None = None,
                    view: View | None = None) -> Stream:
        """A client stream for ``holder`` (who the caps count: the admin, or a workspace), or 429.

        ``token_id``/``workspace_id`` name the workspace token that opened it, for :meth:`end_streams`."""
        if len(self._streams) >= self.streams_total or self._held[holder] >= self.streams_per_holder:
            self.refused += 1
            mine = self._held[holder] >= self.streams_per_holder
            raise TooManyRequests(
                f"{self.streams_per_holder} event streams of this token are already open; close one first"
                if mine else f"the box already serves {self.streams_total} event streams; retry later",
                headers={"Retry-After": str(RETRY_AFTER)}, retry_after=RETRY_AFTER)
        key, receive = self._add(view, self.stream_buffer)
        stream = Stream(self, key, holder, token_id, workspace_id, receive)
        self._subscribers[key].stream = stream
        self._streams[key] = stream
        self._held[holder] += 1
        return stream

    def _close_stream(self, key: int) -> None:
        stream = self._streams.pop(key, None)
        if stream is None:
            return
        self._end(key, "closed")
        stream._receive.close()
        self._held[stream.holder] -= 1
        if not self._held[stream.holder]:
            del self._held[stream.holder]

    def end_streams(self, reason: str, *, token_id: str | None = None, workspace_id: str | None = None) -> int:
        """End every stream opened with that token, or with any token of that workspace; how many ended."""
        ended = 0
        for key, stream in list(self._streams.items()):
            if (token_id is not None and stream.token_id == token_id) or (
                workspace_id is not None and stream.workspace_id == workspace_id
            ):
                ended += self._end(key, reason)
        return ended

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    @property
    def stream_count(self) -> int:
        return len(self._streams)
