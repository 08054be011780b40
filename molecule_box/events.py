"""In-process pub/sub of workspace events (trio memory channels).

Feeds ``GET /ws``, the per-workspace SSE streams, and anything else that
waits on a workspace (the A2A idle timer). A subscriber that falls behind
loses events (counted in ``molecule_box_events_dropped_total``) instead of
slowing the publisher: an actor must never block on a slow browser.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import trio

from .models import Event


class EventBus:
    def __init__(self) -> None:
        self._subscribers: dict[int, tuple[trio.MemorySendChannel[Event], Callable[[Event], bool] | None]] = {}
        self._next = 0
        self.dropped = 0
        self.published = 0
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
        for send, wanted in list(self._subscribers.values()):
            if wanted is not None and not wanted(event):
                continue
            try:
                send.send_nowait(event)
            except trio.WouldBlock:
                self.dropped += 1
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                pass

    @contextmanager
    def subscribe(
        self, wanted: Callable[[Event], bool] | None = None, *, buffer: int = 256
    ) -> Iterator[trio.MemoryReceiveChannel[Event]]:
        send, receive = trio.open_memory_channel[Event](buffer)
        key = self._next
        self._next += 1
        self._subscribers[key] = (send, wanted)
        try:
            yield receive
        finally:
            self._subscribers.pop(key, None)
            send.close()
            receive.close()

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)
