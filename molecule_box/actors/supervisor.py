"""The supervisor: owns one actor per workspace and restarts an actor that raises.

One-for-one, as OTP's ``simple_one_for_one``: a crash restarts only that
workspace's actor, after a capped exponential backoff with jitter, reloading
its record from the store; the error is logged, counted and stored in
``actor_failures`` (``GET /workspaces/:id/failures``). The command that was
in flight gets a 503 so its caller retries; queued commands wait in the
mailbox, which outlives the crash. Nothing escapes to the box's nursery.
"""

from __future__ import annotations

import contextvars
import logging
import math
import random
import traceback
from typing import TYPE_CHECKING, Any

import trio

from ..errors import NotFound, ServiceUnavailable
from ..models import Workspace, WorkspaceStatus
from ..store import events as event_rows
from ..store import workspaces as workspace_rows
from . import commands as c
from .workspace import WorkspaceActor

if TYPE_CHECKING:
    from ..box import Box

log = logging.getLogger(__name__)

BACKOFF_FIRST = 0.1
BACKOFF_MAX = 30.0
#: An actor that ran this long before crashing starts its backoff from the beginning again.
STABLE_AFTER = 60.0
#: Longest an API handler waits for an actor's answer.
ASK_TIMEOUT = 30.0
#: Proof of life (``seen``) is told to an actor at most this often, and at most six times per deadline.
SEEN_EVERY = 5.0


class ActorSlot:
    """A workspace's mailbox and current actor; the mailbox survives actor restarts."""

    __slots__ = ("workspace_id", "send", "receive", "actor", "restarts", "seen_told")

    def __init__(self, workspace_id: str) -> None:
        self.workspace_id = workspace_id
        self.send, self.receive = trio.open_memory_channel[c.Message](math.inf)
        self.actor: WorkspaceActor | None = None
        self.restarts = 0
        self.seen_told = -math.inf  # trio time the actor was last told of authenticated traffic


class Supervisor:
    def __init__(self, box: Box) -> None:
        self.box = box
        self.slots: dict[str, ActorSlot] = {}
        settings = box.settings
        self._seen_every = min(SEEN_EVERY, min(settings.remote_liveness_stale_after,
                                               settings.liveness_ttl_seconds) / 6)
        self._nursery: trio.Nursery | None = None
        self._context: contextvars.Context | None = None

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Restore an actor for every workspace in the store, then supervise until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            # Actors start in the supervisor's context, not the caller's: spawned from POST /workspaces they
            # would keep that request (quart's request context) alive for the actor's whole life.
            self._context = contextvars.copy_context()
            restored = 0
            for ws in workspace_rows.all_live(self.box.store.db):
                self.spawn(ws)
                restored += 1
            task_status.started(restored)
            await trio.sleep_forever()

    def spawn(self, ws: Workspace) -> ActorSlot:
        """Start supervising ``ws`` (its mailbox accepts commands at once)."""
        assert self._nursery is not None, "supervisor is not running"
        slot = self.slots.get(ws.id)
        if slot is None:
            slot = self.slots[ws.id] = ActorSlot(ws.id)
            assert self._context is not None
            self._context.run(self._nursery.start_soon, self._supervise, slot, ws, name=f"actor:{ws.id}")
        return slot

    def record(self, workspace_id: str) -> Workspace | None:
        """The committed record of a supervised workspace (None if not supervised: unknown or removed)."""
        slot = self.slots.get(workspace_id)
        if slot is None or slot.actor is None:
            return None
        return slot.actor.record

    def records(self) -> list[Workspace]:
        return [slot.actor.record for slot in self.slots.values() if slot.actor is not None]

    def tell(self, workspace_id: str, message: c.Message) -> bool:
        slot = self.slots.get(workspace_id)
        if slot is None:
            return False
        slot.send.send_nowait(message)
        return True

    def seen(self, workspace_id: str) -> None:
        """The workspace's agent made an authenticated request: tell its actor (proof of life), throttled.

        Called on every such request (auth.identify), so it must be cheap: one dict lookup and a clock
        read, and a message at most every SEEN_EVERY seconds (less when a deadline is shorter than 30 s)."""
        slot = self.slots.get(workspace_id)
        if slot is None:
            return
        now = trio.current_time()
        if now - slot.seen_told < self._seen_every:
            return
        slot.seen_told = now
        slot.send.send_nowait(c.Seen(at=self.box.now()))

    async def ask(self, workspace_id: str, command: c.Command, *, timeout: float = ASK_TIMEOUT) -> Any:
        """Send ``command`` to the workspace's actor and wait (bounded) for its answer."""
        slot = self.slots.get(workspace_id)
        if slot is None:
            raise NotFound("workspace not found")
        slot.send.send_nowait(command)
        with trio.move_on_after(timeout):
            await command.reply.done.wait()
        if not command.reply.done.is_set():
            raise ServiceUnavailable("workspace is busy; retry shortly", retry_after=2)
        return command.reply.unwrap()

    async def _supervise(self, slot: ActorSlot, ws: Workspace) -> None:
        failures = 0
        last_error = ""
        record: Workspace | None = ws
        del ws
        try:
            while record is not None:
                actor = WorkspaceActor(self.box, record, slot.receive, slot.send, crashes=failures,
                                       last_error=last_error)
                record = None  # the actor owns the record now; keeping it here would hold a stale copy
                slot.actor = actor
                started = trio.current_time()
                try:
                    await actor.run()
                    return  # finished normally: the workspace is removed and cleaned up
                except Exception as exc:
                    failures = 0 if trio.current_time() - started > STABLE_AFTER else failures + 1
                    slot.restarts += 1
                    last_error = await self._record_crash(slot, actor, exc)
                delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (failures - 1)) * random.uniform(0.8, 1.2)
                await trio.sleep(delay)
                record = workspace_rows.get(self.box.store.db, slot.workspace_id)
                if record is not None and record.status is WorkspaceStatus.REMOVED and record.backend_state is None:
                    record = None
        finally:
            self.slots.pop(slot.workspace_id, None)
            slot.send.close()
            self._fail_pending(slot)

    async def _record_crash(self, slot: ActorSlot, actor: WorkspaceActor, exc: Exception) -> str:
        while isinstance(exc, ExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]  # the actor's nursery wraps what its body raised
        text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        log.error("workspace %s: actor crashed (%s); restarting", slot.workspace_id, text,
                  exc_info=(type(exc), exc, exc.__traceback__))
        self.box.metrics.actor_restarts.inc()
        message = actor.current
        if isinstance(message, c.Command):
            message.reply.fail(ServiceUnavailable(
                "workspace actor restarted after an internal error; retry", retry_after=1))
        try:
            await self.box.store.write(event_rows.record_actor_failure(slot.workspace_id, text))
        except Exception:  # the store itself failing must not kill the supervisor
            log.exception("workspace %s: could not record the actor failure", slot.workspace_id)
        return text

    @staticmethod
    def _fail_pending(slot: ActorSlot) -> None:
        while True:
            try:
                message = slot.receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return
            if isinstance(message, c.Command):
                message.reply.fail(NotFound("workspace not found", deleted=True))
