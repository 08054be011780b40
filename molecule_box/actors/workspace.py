"""The workspace actor: the only code that changes one workspace's state.

One trio task per workspace reads its mailbox, applies the state machine
(:mod:`.transitions`), commits the result, then publishes events and replies.
Its heartbeat and provisioning deadlines are the deadline of the wait on the
mailbox itself, so no sweep polls 10,000 rows: trio wakes the actor exactly
when its deadline passes. Backend operations (start, stop, destroy) run as
child tasks in the actor's own nursery and report back through the mailbox,
so a slow image pull never keeps the actor from answering heartbeats or a
delete; a new lifecycle command cancels the operation in flight. A steady
heartbeat (the status stays) is decided by the actor's own code in the asker's
task while the actor is parked, committed in its name (:meth:`WorkspaceActor.lend`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import trio

from .. import templates
from ..backends import archive as ar
from ..backends.base import (
    Backend,
    BackendError,
    BackendEvent,
    ConfigFiles,
    FilesNotSupported,
    Handle,
    Workload,
    WorkloadSpec,
    WorkloadState,
)
from ..bus import REMOVED, REVOKED
from ..errors import Conflict, MoleculeBoxError
from ..models import BROADCAST_ONLY, Workspace, WorkspaceStatus
from ..security import tokens as tk
from ..store import Write
from ..store import events as event_rows
from ..store import secrets as secret_rows
from ..store import tokens as token_rows
from ..store import workspaces as workspace_rows
from . import commands as c
from . import transitions as t
from .deps import ActorDeps
from .restart_policy import RestartPolicy, failure_reason

log = logging.getLogger(__name__)
S = WorkspaceStatus

#: After this many consecutive crashes the actor stops resuming work and marks the workspace failed, so a
#: crash loop (a backend bug, say) ends in a visible state that still accepts delete and restart.
CRASH_LIMIT = 5

#: Longest a destroy or stop may take before it is retried (a failed cleanup is retried, never dropped).
CLEANUP_DEADLINE = 60.0

#: Longest adoption of a workload after a box restart may take (an engine that does not answer keeps the status).
ADOPT_DEADLINE = 60.0
#: Longest the actor waits for an ``inspect`` or a log tail while reacting to a backend event.
OBSERVE_DEADLINE = 10.0
#: A file operation must finish within this many seconds (below the API's wait for an actor's answer); the actor
#: answers nothing else meanwhile.
FILES_DEADLINE = 25.0
#: States in which a workload the box started is expected to run, so its death is a crash.
RUNNING_STATES = frozenset({S.ONLINE, S.DEGRADED, S.OFFLINE, S.PROVISIONING})
#: What an accepted heartbeat is answered.
HEARTBEAT_ANSWER = {"status": "ok"}
#: After a move, the old workload is removed this many seconds after the switch: calls forwarded to it finish.
MIGRATE_DRAIN = 2.0


class ActorExit(Exception):
    """Raised inside the actor to finish it normally (its workspace is removed and cleaned up)."""


@dataclasses.dataclass
class _Op:
    id: int
    kind: str
    scope: trio.CancelScope


@dataclasses.dataclass
class _Migration:
    to: str
    token_id: str
    old_url: str | None
    old_backend: str
    old_handle: Handle
    #: Set by the first register with the move's token: the new agent (the old one holds only the old tokens).
    registered: trio.Event = dataclasses.field(default_factory=trio.Event)


class WorkspaceActor:
    def __init__(self, deps: ActorDeps, record: Workspace, inbox: trio.MemoryReceiveChannel[c.Message],
                 outbox: trio.MemorySendChannel[c.Message], *, crashes: int = 0, last_error: str = "") -> None:
        self.deps = deps
        #: Consecutive crashes before this incarnation; past CRASH_LIMIT it parks the workspace as failed.
        self.crashes = crashes
        self.last_error = last_error
        self.record = record
        self._inbox = inbox
        self._outbox = outbox
        self._op: _Op | None = None
        self._op_seq = 0
        #: Open only while the actor has children (see :meth:`run`); ``_spawns`` wait for it to open.
        self._nursery: trio.Nursery | None = None
        self._spawns: list[Callable[[], Awaitable[None]]] = []
        self.current: c.Message | None = None
        self._cleanup_attempts = 0
        #: Unexpected exits of the workload, for the restart policy (unit-tested in restart_policy).
        self._restarts = RestartPolicy.from_settings(deps.settings)
        #: The backend reported an OOM kill since the workload last started (Docker reports it before the exit).
        self._oom = False
        #: An exit reported while a start or adoption was in flight: checked once it finishes.
        self._exit_pending: BackendEvent | None = None
        #: A move to another backend in progress (``Migrate``).
        self._migration: _Migration | None = None
        #: The wait on the mailbox while the actor is parked there, between messages (see :meth:`lend`).
        self._parked: trio.CancelScope | None = None
        #: A heartbeat committed in this actor's name by its asker and not yet settled (see :meth:`lend`).
        self._lent: Write[list[Any]] | None = None

    # -- the loop -----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Resume from the record, then serve the mailbox until the workspace is removed and cleaned up.

        The actor's nursery is open only while it has background work (a backend operation, a retirement):
        most actors (every remote agent's, every settled workload's) have none for their whole life, and a
        nursery per actor was 7-10 us of its 23-27 us first step (bare trio, measured) when a box restores 50,000. Work
        started meanwhile waits in ``_spawns`` until the message that started it is handled, and the nursery
        opens for it; it closes once its last child is done, so no child outlives its actor."""
        task_status.started()
        try:
            await self._resume_after_restart()
            while True:
                if not self._spawns:
                    await self._serve()
                    continue
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    try:
                        self._start_spawns()
                        await self._serve(nursery)
                    except ActorExit:
                        nursery.cancel_scope.cancel()  # the workspace is gone: its background work goes too
                        raise
                    finally:
                        self._nursery = None
        except* ActorExit:
            pass

    async def _serve(self, nursery: trio.Nursery | None = None) -> None:
        """Handle messages and deadlines; return when the actor's nursery should change: without one, when
        work waits to be started; in ``nursery``, once it has no child left."""
        while True:
            message: c.Message | None = None
            try:
                with trio.move_on_at(self._next_deadline()) as self._parked:
                    message = await self._inbox.receive()
            finally:
                self._parked = None
            if self._lent is not None:
                await self._settle_lent()
            if message is None:
                await self._fire_deadlines()
            else:
                self.current = message
                await self._dispatch(message)
                self.current = None
            # In the nursery, _spawn starts work at once: only its end can change anything here.
            if (nursery is None and self._spawns) or (nursery is not None and not nursery.child_tasks):
                return

    def _spawn(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Start ``fn`` as a child of this actor: now if its nursery is open, else once the current message
        is handled (:meth:`run` opens the nursery for it)."""
        self._spawns.append(fn)
        if self._nursery is not None:
            self._start_spawns()

    def _start_spawns(self) -> None:
        assert self._nursery is not None
        spawns, self._spawns = self._spawns, []
        for fn in spawns:
            self._nursery.start_soon(fn)

    def lend(self, command: c.Command) -> Write[list[Any]] | None:
        """Take a steady heartbeat without waking the actor: its asker commits it in the actor's name.

        A heartbeat that changes nothing but the snapshot (the status stays) is most of the traffic, and
        waking the actor for it costs a scheduling round between the asker and the store, which under load
        is the longest part of a heartbeat's wait. While the actor is parked on its empty mailbox its state is
        exactly its committed record, so this method (the actor's own code, run in the asker's task) makes
        the decision the actor would make from it, submits the same op, and leaves the rest to the write's
        continuation: the record, the events, the reply and the parked wait's new deadline, set the moment
        the commit is durable. The actor never sees a message meanwhile: when anything wakes it, it first
        waits for the lent write (:meth:`_settle_lent`), so it decides from the record that write leaves.

        None when the actor must decide itself: it is not parked, another lent write is in flight, or the
        heartbeat changes the status (every change of status goes through the actor's mailbox). The
        returned write is done once the reply is set, or failed (its ``error``, the reply unset)."""
        if (not isinstance(command, c.Heartbeat) or self._parked is None or self._lent is not None
                or self._inbox.statistics().tasks_waiting_receive == 0):
            return None
        ws = self.record
        if ws.status is S.REMOVED:
            return None
        outcome = t.heartbeat(ws, command.body, self._now())
        if outcome.workspace.status is not ws.status:
            return None

        def answered() -> None:
            self._lent = None  # settled: the record is the commit's
            self._answer_heartbeat(command)
            if self._parked is not None:  # still parked: its wait ends at the new deadline, not the old one
                self._parked.deadline = self._next_deadline()

        self._lent = self._submit(outcome, then=answered)
        return self._lent

    async def _settle_lent(self) -> None:
        """Wait for the lent heartbeat's commit before deciding anything: its continuation sets the record.

        Its failure is its asker's to report; the record is then unchanged, as the store is."""
        lent, self._lent = self._lent, None
        assert lent is not None
        with contextlib.suppress(Exception):
            await lent.wait()

    def _trio_time(self, wall: float) -> float:
        return trio.current_time() + (wall - self.deps.now())

    def _remote(self) -> bool:
        """A remote agent's workspace (its backend runs nothing): the heartbeat deadline is the remote one."""
        return self.deps.backends.is_remote(self.record.backend)

    def _next_deadline(self) -> float:
        ws = self.record
        settings = self.deps.settings
        wall = min(
            (d for d in (
                t.liveness_deadline(ws, settings.liveness_deadline_for(remote=self._remote())),
                t.provision_deadline(ws, settings.provision_timeout_seconds),
            ) if d is not None),
            default=None,
        )
        return math.inf if wall is None else self._trio_time(wall)

    async def _fire_deadlines(self) -> None:
        now = self.deps.now()
        ws = self.record
        settings = self.deps.settings
        live = t.liveness_deadline(ws, settings.liveness_deadline_for(remote=self._remote()))
        if live is not None and now >= live:
            self.deps.metrics.offline_lateness.observe(max(0.0, now - live))
            log.info("workspace %s missed its heartbeat deadline: offline", ws.id)
            await self._commit(t.went_offline(ws, now))
            return
        prov = t.provision_deadline(ws, settings.provision_timeout_seconds)
        if prov is not None and now >= prov:
            log.warning("workspace %s provisioning timed out", ws.id)
            self._cancel_op()
            await self._commit(t.provision_timed_out(ws, now, settings.provision_timeout_seconds))

    async def _dispatch(self, message: c.Message) -> None:
        if isinstance(message, c.OpDone):
            await self._op_done(message)
            return
        if isinstance(message, c.Observed):
            await self._observed(message)
            return
        handler: Callable[[Any], Awaitable[Any]] = getattr(self, "_on_" + type(message).__name__)
        try:
            message.reply.set(await handler(message))
        except MoleculeBoxError as exc:
            message.reply.fail(exc)

    # -- committing ---------------------------------------------------------------------------

    async def _commit(self, outcome: t.Outcome, *extra: Callable[[Any], Any],
                      then: Callable[[], None] | None = None) -> list[Any]:
        """Persist the new record, its lifecycle events and ``extra`` ops in one transaction, then publish.

        What follows the commit (the record, the events, then ``then``) runs as the write's continuation
        (store.db.Write), the moment the commit is durable and while this task still waits on it, so nothing
        else changes the actor meanwhile. ``then`` is for a reply that needs nothing more from the actor: a
        heartbeat is answered without waiting for the actor to be scheduled once more."""
        return await self._submit(outcome, *extra, then=then).wait()

    def _submit(self, outcome: t.Outcome, *extra: Callable[[Any], Any],
                then: Callable[[], None] | None = None) -> Write[list[Any]]:
        """:meth:`_commit`'s op and continuation, submitted; the caller waits for it."""
        ws = outcome.workspace
        events = [self.deps.bus.make(kind, ws.id, payload) for kind, payload in outcome.events]
        persisted = [event_rows.insert(e) for e in events if e.type not in BROADCAST_ONLY]
        save = workspace_rows.save(ws)

        def op(db: Any) -> list[Any]:
            save(db)
            for insert in persisted:
                insert(db)
            return [fn(db) for fn in extra]

        def committed(_: list[Any]) -> None:
            before = self.record.status
            self.record = ws
            if ws.status is not before:
                self.deps.metrics.transitions.labels(ws.status.value).inc()
            for event in events:
                self.deps.bus.publish(event)
            if then is not None:
                then()

        return self.deps.store.submit(op, on_commit=committed)

    def _now(self) -> float:
        return self.deps.now()

    async def _backend(self) -> Backend:
        return await self.deps.backends.get(self.record.backend)

    def _handle(self) -> Handle:
        """The workload's handle; without a stored one (the box died before its start op reported), the
        backend finds the workload by the workspace id."""
        return self.record.backend_state or {"workspace_id": self.record.id}

    async def _lifecycle(self) -> Backend | None:
        """The workspace's backend if the box drives its lifecycle, else None (remote agents)."""
        backend = await self._backend()
        return backend if backend.capabilities().lifecycle else None

    # -- background backend operations ---------------------------------------------------------

    def _cancel_op(self) -> None:
        if self._op is not None:
            self._op.scope.cancel()
            self._op = None
        if self._migration is not None:  # superseded (pause, delete, ...): the half-made workload goes
            migration, self._migration = self._migration, None
            self._retire(migration.to, {"workspace_id": self.record.id})

    def _start_op(self, kind: str, fn: Callable[[], Awaitable[Workload | None]], *,
                  deadline: float | None = None) -> None:
        self._cancel_op()
        self._op_seq += 1
        op = _Op(self._op_seq, kind, trio.CancelScope(deadline=deadline if deadline is not None else math.inf))
        self._op = op
        self._spawn(functools.partial(self._run_op, op, fn))

    async def _run_op(self, op: _Op, fn: Callable[[], Awaitable[Workload | None]]) -> None:
        result: Workload | None = None
        error: BackendError | None = None
        with op.scope:
            try:
                result = await fn()
            except BackendError as exc:
                if exc.detail:
                    log.warning("workspace %s: %s failed: %s (%s)", self.record.id, op.kind, exc.reason, exc.detail)
                error = exc
        if op.scope.cancelled_caught:
            if self._op is not op:
                return  # superseded by a newer command
            error = BackendError(f"{op.kind} did not finish in time")
        self._outbox.send_nowait(c.OpDone(op.id, op.kind, result, error))

    async def _op_done(self, done: c.OpDone) -> None:
        if self._op is None or self._op.id != done.op_id:
            return
        self._op = None
        ws = self.record
        now = self._now()
        if done.kind == "start":
            # The agent may register (→ online) before its start op reports back; the workload is still the
            # current one (a superseded op never gets here), so its handle must be kept all the same.
            if ws.status not in RUNNING_STATES or (ws.status is not S.PROVISIONING and done.error is not None):
                return
            if done.error is not None:
                await self._commit(t.failed(ws, now, f"workspace start failed: {done.error.reason}"))
                return
            assert done.result is not None
            changes: dict[str, Any] = {"backend_state": done.result.handle, "updated_at": now}
            if done.result.url:
                changes.update(url=done.result.url, url_from_backend=True)
            await self._commit(t.Outcome(dataclasses.replace(ws, **changes)))
            await self._recheck_pending_exit()
        elif done.kind == "adopt":
            await self._adopted(done)
        elif done.kind == "migrate":
            await self._migrated(done)
        elif done.kind == "hibernate":
            if ws.status is not S.HIBERNATING:
                return
            if done.error is not None:
                await self._commit(t.failed(ws, now, f"hibernation failed: {done.error.reason}"))
                return
            await self._commit(t.hibernated(ws, now))
        elif done.kind == "stop":
            if done.error is not None:
                log.warning("workspace %s: stop failed: %s", ws.id, done.error.reason)
        elif done.kind == "destroy":
            if done.error is None:
                raise ActorExit
            self._cleanup_attempts += 1
            delay = min(60.0, 2.0 ** self._cleanup_attempts)
            log.warning("workspace %s: cleanup failed (%s), retrying in %.0fs", ws.id, done.error.reason, delay)
            self._start_op("destroy", self._destroy_after(delay))

    def _destroy_after(self, delay: float) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            await trio.sleep(delay)
            backend = await self._backend()
            with trio.fail_after(CLEANUP_DEADLINE):
                await backend.destroy(self._handle())
        return run

    # -- what the backend observed (Docker's events stream, reconciliation) -----------------------

    async def _observed(self, observed: c.Observed) -> None:
        """React to a backend event. Events are only triggers (streams lose and reorder them): an exit is
        confirmed with ``inspect`` before anything restarts, and nothing reacts while the box itself is
        stopping the workload (pause, hibernate, delete) or the workspace is failed."""
        event = observed.event
        ws = self.record
        if event.kind == "progress":  # image pull progress: shown live, not kept
            self.deps.bus.publish(
                self.deps.bus.make("WORKSPACE_PROVISION_PROGRESS", ws.id, {"detail": event.detail or ""}))
            return
        log.debug("workspace %s: backend reported %s", ws.id, event)
        if ws.status not in RUNNING_STATES:
            return
        backend = await self._lifecycle()
        if backend is None:
            return
        if event.kind == "health":
            outcome = t.health_changed(ws, event.health, self._now())
            if outcome is not None:
                log.info("workspace %s: health check %s: %s", ws.id, event.health, outcome.workspace.status.value)
                await self._commit(outcome)
        elif event.kind == "oom":
            self._oom = True
        elif event.kind in ("exited", "removed"):
            if self._op is not None and self._op.kind in ("start", "adopt"):
                self._exit_pending = event  # about the old workload, or too early to tell: check after the op
                return
            await self._workload_stopped(backend, event)

    async def _recheck_pending_exit(self) -> None:
        event, self._exit_pending = self._exit_pending, None
        if event is not None and self.record.status in RUNNING_STATES:
            backend = await self._lifecycle()
            if backend is not None:
                await self._workload_stopped(backend, event)

    async def _workload_stopped(self, backend: Backend, event: BackendEvent) -> None:
        """The backend says the workload stopped: if ``inspect`` agrees, apply the restart policy."""
        ws = self.record
        if ws.backend_state is None:
            return
        status = None
        with trio.move_on_after(OBSERVE_DEADLINE):
            status = await backend.inspect(ws.backend_state)
        # RUNNING/STARTING: a stale event (the workload was replaced); UNKNOWN (or no answer): the engine cannot
        # tell, and reconciliation reports again once it can. Neither is a reason to act.
        if status is None or status.state not in (WorkloadState.STOPPED, WorkloadState.MISSING):
            return
        exit_code = status.exit_code if status.exit_code is not None else event.exit_code
        await self._restart_or_fail(backend, exit_code=exit_code, oom_killed=status.oom_killed or self._oom,
                                    what=event.detail or event.kind)

    async def _restart_or_fail(self, backend: Backend, *, exit_code: int | None, oom_killed: bool, what: str) -> None:
        """An unexpected stop: start the workload again after the policy's backoff, or give up as failed
        with the exit code, the OOM flag and the workload's last output, so an operator sees why without
        reading the engine's logs."""
        ws = self.record
        now = self._now()
        decision = self._restarts.on_exit(trio.current_time())
        self._oom = False
        if not decision.restart:
            output = ""
            with trio.move_on_after(OBSERVE_DEADLINE):
                output = await backend.logs(self._handle(), tail=50)
            reason = failure_reason(exits=decision.exits, window=self._restarts.window, exit_code=exit_code,
                                    oom_killed=oom_killed, log_tail=output)
            log.warning("workspace %s: %s", ws.id, reason.splitlines()[0])
            await self._commit(t.failed(ws, now, reason, exit_code=exit_code, oom_killed=oom_killed,
                                        restarts=decision.exits - 1, source="restart_policy"))
            return
        log.warning("workspace %s: workload stopped unexpectedly (%s, exit code %s%s); restart %d in %.1fs",
                    ws.id, what, exit_code, ", OOM-killed" if oom_killed else "", decision.exits, decision.delay)
        await self._commit(t.restarting(ws, now, exit_code=exit_code, oom_killed=oom_killed,
                                        attempt=decision.exits, delay=decision.delay))
        await self._provision(self.record, delay=decision.delay, automatic=True)

    def _adopt(self, backend: Backend, handle: Handle) -> Callable[[], Awaitable[Workload | None]]:
        """After a box restart: reattach to the workload (never restarting a healthy one). Returns it when
        running (or when the backend cannot tell), None when gone; raises _NotRunning when it stopped."""
        async def run() -> Workload | None:
            adopted = await backend.adopt(handle)
            if adopted is None:
                return None
            status = await backend.inspect(adopted)
            if status.state is WorkloadState.STOPPED:
                raise _NotRunning(status.exit_code, status.oom_killed)
            if status.state is WorkloadState.MISSING:
                return None
            return Workload(handle=adopted)
        return run

    async def _adopted(self, done: c.OpDone) -> None:
        ws = self.record
        if ws.status not in RUNNING_STATES:
            return
        if done.result is not None:
            if done.result.handle != ws.backend_state:
                await self._commit(t.Outcome(dataclasses.replace(ws, backend_state=done.result.handle)))
            log.info("workspace %s: adopted its running workload", ws.id)
            await self._recheck_pending_exit()
            return
        if done.error is not None and not isinstance(done.error, _NotRunning):
            log.warning("workspace %s: adoption failed (%s); keeping the status until the backend answers",
                        ws.id, done.error.reason)
            return
        backend = await self._lifecycle()
        if backend is None:
            return
        self._exit_pending = None
        if isinstance(done.error, _NotRunning):
            await self._restart_or_fail(backend, exit_code=done.error.exit_code, oom_killed=done.error.oom_killed,
                                        what="stopped while the box was down")
        else:
            await self._restart_or_fail(backend, exit_code=None, oom_killed=False, what="gone after the box restarted")

    async def _provision(self, ws: Workspace, *, stop_first: dict[str, Any] | None = None, delay: float = 0.0,
                         automatic: bool = False) -> None:
        """Start the workload of a workspace that is now ``provisioning`` (stopping the old one first).

        ``automatic``: a restart by the restart policy (after ``delay``); any other start (create, resume,
        restart by the operator) begins a fresh restart window."""
        if not automatic:
            self._restarts.reset()
        backend = await self._backend()
        # Rotate: the new workload gets a fresh token; the old ones die with the old workload. Every box-run
        # workload gets one from the box, so none waits for a bearer-less register anyone could win (#10).
        token = tk.mint()
        mint = token_rows.insert(ws.id, token.digest, token.prefix)
        await self.deps.store.write(lambda db: [token_rows.revoke_all([ws.id])(db), mint(db)])
        self.deps.bus.end_streams(REVOKED, workspace_id=ws.id)
        try:
            spec = await self._workload_spec(ws, backend, token.plaintext, previous=ws.backend_state)
        except MoleculeBoxError as exc:  # a secret that cannot be decrypted, a template gone bad since create
            await self._commit(t.failed(self.record, self._now(), str(exc)))
            return

        async def start() -> Workload:
            if delay > 0:
                await trio.sleep(delay)
            if stop_first is not None:
                with trio.move_on_after(CLEANUP_DEADLINE):
                    await backend.stop(stop_first)
            return await backend.start(spec)

        self._start_op("start", start)

    async def _workload_spec(self, ws: Workspace, backend: Backend, token: str, *,
                             previous: Handle | None) -> WorkloadSpec:
        """What ``backend`` starts for the workspace, with ``token``; raises MoleculeBoxError."""
        env = self.deps.vault.workload_env(ws, self.deps.settings.platform_url)
        config = ws.config if isinstance(ws.config, dict) else {}
        seed = None
        if backend.capabilities().files:
            make = functools.partial(templates.seed, self.deps.settings.templates_root, config.get("template"),
                                     name=ws.name, role=ws.role, tier=ws.tier, runtime=ws.runtime,
                                     model=config.get("model"))
            seed = await trio.to_thread.run_sync(make)  # a template may be megabytes: read off the event loop
        return WorkloadSpec(
            workspace_id=ws.id, name=ws.name, runtime=ws.runtime, tier=ws.tier, env=env,
            platform_url=self.deps.settings.platform_url, auth_token=token,
            config=config, previous=previous, seed_files=seed,
            metadata=dict(config.get("metadata") or {}),
        )

    # -- moving to another backend -------------------------------------------------------------

    async def _on_Migrate(self, cmd: c.Migrate) -> dict[str, Any]:
        """Start the workload on backend ``cmd.to`` beside the running one, with a token of its own (the old
        one stays valid meanwhile); once the new agent registered (the A2A URL is its own from then on) the
        workspace's backend and handle switch, the old tokens are revoked and the old workload is removed.
        The supervisor checked the target (installed, runs workloads, takes the tier)."""
        ws = self.record
        if ws.backend == cmd.to:
            return {"status": ws.status.value, "backend": ws.backend, "migrating": False}
        if ws.status not in (S.ONLINE, S.DEGRADED):
            raise Conflict(f"only an online workspace is moved (it is {ws.status.value})")
        if self._op is not None or self._migration is not None:
            raise Conflict("the workspace is busy (a start, stop or move is in progress); retry shortly")
        if await self._lifecycle() is None:
            raise Conflict("a remote agent runs elsewhere and is not moved")
        target = await self.deps.backends.get(cmd.to)
        token = tk.mint()
        [token_id] = await self.deps.store.write(lambda db: [token_rows.insert(ws.id, token.digest, token.prefix)(db)])
        spec = await self._workload_spec(ws, target, token.plaintext, previous=None)
        carried = await self._files_to_carry() if spec.seed_files is not None else None
        if carried is not None:  # the files the workspace has now, not its template's first ones
            spec = dataclasses.replace(spec, seed_files=carried)
        migration = _Migration(cmd.to, str(token_id), ws.url, ws.backend, self._handle())

        async def move() -> Workload:
            workload = await target.start(spec)
            await migration.registered.wait()
            return workload

        self._start_op("migrate", move,
                       deadline=trio.current_time() + self.deps.settings.provision_timeout_seconds)
        self._migration = migration  # after _start_op, which would take it for a superseded one
        log.info("workspace %s: moving from %s to %s", ws.id, ws.backend, cmd.to)
        await self._commit(t.migrating(ws, cmd.to))
        return {"status": ws.status.value, "backend": ws.backend, "migrating": True, "to": cmd.to}

    async def _migrated(self, done: c.OpDone) -> None:
        migration, self._migration = self._migration, None
        if migration is None:
            return
        ws = self.record
        if done.error is not None or done.result is None or ws.status is S.REMOVED:
            reason = done.error.reason if done.error is not None else "removed meanwhile"
            log.warning("workspace %s: the move to %s failed: %s", ws.id, migration.to, reason)
            await self._commit(t.migration_failed(ws, self._now(), migration.to, reason, migration.old_url),
                               token_rows.revoke(ws.id, migration.token_id))
            self._retire(migration.to, {"workspace_id": ws.id})
            return
        await self._commit(t.migrated(ws, self._now(), migration.to, done.result.handle, done.result.url),
                           token_rows.revoke_others(ws.id, migration.token_id))
        log.info("workspace %s: moved from %s to %s", ws.id, migration.old_backend, migration.to)
        self._retire(migration.old_backend, migration.old_handle, drain=MIGRATE_DRAIN)

    async def _files_to_carry(self) -> bytes | None:
        """The current workload's ``/configs`` (its files and directories; not the token, which the new
        workload gets its own of, nor links, which no backend takes in); None when the current backend has no
        file operations (the new workload then starts from the template's)."""
        try:
            backend = await self._file_ops()
        except FilesNotSupported:
            return None
        with _files_deadline("reading"):
            tree = await backend.read_config_files(self._handle())
        kept = [ar.Entry(m.name, m.data, m.mode) for m in ar.members(tree)
                if m.kind in ("file", "dir") and m.name != ar.TOKEN_FILE]
        return ar.pack(kept)

    def _retire(self, backend_name: str, handle: Handle, *, drain: float = 0.0) -> None:
        """Remove a workload that is no longer the workspace's, in the background (a new command does not
        cancel it, as it would an op)."""
        async def run() -> None:
            await trio.sleep(drain)  # calls already forwarded to the old workload finish
            backend = await self.deps.backends.get(backend_name)
            with trio.move_on_after(CLEANUP_DEADLINE):
                try:
                    await backend.destroy(handle)
                except BackendError as exc:
                    log.warning("workspace %s: removing its %s workload failed: %s", self.record.id,
                                backend_name, exc.reason)

        self._spawn(run)

    # -- startup after a box or actor restart --------------------------------------------------

    async def _resume_after_restart(self) -> None:
        """Re-arm from the record: deadlines come from stored timestamps; a transient state left by a crash
        is finished (hibernating → stop again; provisioning → start again unless the workload survived)."""
        ws = self.record
        if self.crashes >= CRASH_LIMIT and ws.status not in (S.REMOVED, S.FAILED):
            reason = f"workspace actor crashed {self.crashes} times in a row (last: {self.last_error})"
            log.error("workspace %s: %s; marking it failed", ws.id, reason)
            await self._commit(t.failed(ws, self._now(), reason, source="supervisor"))
            return
        if ws.status not in (S.REMOVED, S.FAILED) and not self.deps.backends.is_installed(ws.backend):
            reason = f"backend {ws.backend!r} is not installed: install its plugin, restart the box, then the workspace"
            log.warning("workspace %s: %s; marking it failed", ws.id, reason)
            await self._commit(t.failed(ws, self._now(), reason, source="backend"))
            return
        if ws.status is S.REMOVED:
            self._start_op("destroy", self._destroy_after(0))
        elif ws.status is S.HIBERNATING:
            backend = await self._lifecycle()
            if backend is None:
                await self._commit(t.hibernated(ws, self._now()))
            else:
                self._stop_op(backend, "hibernate")
        elif ws.status is S.PROVISIONING and ws.backend_state is None:
            backend = await self._lifecycle()
            if backend is not None:
                await self._provision(ws)
        elif ws.status in RUNNING_STATES:
            # The workload may have kept running while the box was down: adopt it, never start a second one.
            # (No stored handle: the box died between the agent's register and its start op's report; the
            # backend finds the workload by the workspace id.)
            backend = await self._lifecycle()
            if backend is not None:
                self._start_op("adopt", self._adopt(backend, self._handle()),
                               deadline=trio.current_time() + ADOPT_DEADLINE)

    # -- commands -----------------------------------------------------------------------------

    def _require_not_removed(self) -> Workspace:
        return t.require_not_removed(self.record)

    async def _on_Register(self, cmd: c.Register) -> dict[str, Any]:
        ws = self._require_not_removed()
        now = self._now()
        outcome = t.register(ws, cmd.url, cmd.agent_card, now)
        extra: list[Callable[[Any], Any]] = []
        token = None
        if cmd.bootstrap_from is not None:
            # Claimed in the register's own transaction: a second bearer-less register finds it closed.
            extra.append(token_rows.claim_bootstrap(ws.id, now))
            outcome = t.Outcome(outcome.workspace, [("WORKSPACE_BOOTSTRAPPED", {"remote_addr": cmd.bootstrap_from}),
                                                    *outcome.events])
        if cmd.mint_token or cmd.bootstrap_from is not None:
            token = tk.mint()
            extra.append(token_rows.insert(ws.id, token.digest, token.prefix))
        await self._commit(outcome, *extra)
        if self._migration is not None and cmd.token_id == self._migration.token_id and cmd.url:
            self._migration.registered.set()  # the new workload's agent: only it holds the move's token
        if cmd.bootstrap_from is not None:
            log.info("workspace %s: bootstrap register from %s minted its first token", ws.id, cmd.bootstrap_from)
        self.deps.metrics.registrations.inc()
        body: dict[str, Any] = {"status": "registered"}
        if token is not None:
            body["auth_token"] = token.plaintext
        return body

    async def _on_Heartbeat(self, cmd: c.Heartbeat) -> dict[str, str]:
        """A heartbeat the actor decides itself; :meth:`lend` takes the same decision for a steady one."""
        self._require_not_removed()
        await self._commit(t.heartbeat(self.record, cmd.body, self._now()), then=lambda: self._answer_heartbeat(cmd))
        return dict(HEARTBEAT_ANSWER)

    def _answer_heartbeat(self, cmd: c.Heartbeat) -> None:
        """Counted and answered from the commit's continuation, by the actor or by its lent turn alike."""
        self.deps.metrics.heartbeats.inc()
        cmd.reply.set(dict(HEARTBEAT_ANSWER))

    async def _on_UpdateCard(self, cmd: c.UpdateCard) -> dict[str, str]:
        self._require_not_removed()
        await self._commit(t.update_card(self.record, cmd.agent_card, self._now()))
        return {"status": "updated"}

    async def _on_Seen(self, cmd: c.Seen) -> None:
        ws = self.record
        outcome = t.seen(ws, cmd.at, self.deps.settings.liveness_deadline_for(remote=self._remote()))
        if outcome is not None:
            await self._commit(outcome)

    async def _on_Outbound(self, cmd: c.Outbound) -> None:
        if self.record.status is S.REMOVED:
            return
        outcome = t.outbound(self.record, cmd.at)
        if outcome is not None:
            await self._commit(outcome)

    async def _on_Patch(self, cmd: c.Patch) -> dict[str, Any]:
        ws = self._require_not_removed()
        changes = dict(cmd.changes)
        needs_restart = "workspace_dir" in changes or "tier" in changes or "runtime" in changes
        await self._commit(t.Outcome(dataclasses.replace(ws, updated_at=self._now(), **changes)))
        body: dict[str, Any] = {"status": "updated"}
        if needs_restart and self.deps.backends.capabilities(ws.backend).lifecycle:
            body["needs_restart"] = True
        return body

    def _stop_op(self, backend: Backend | None, kind: str) -> None:
        """Stop the workload in the background (pause, hibernate); without a lifecycle backend there is
        none, and whatever was in flight is cancelled."""
        if backend is None:
            self._cancel_op()
            return
        handle = self._handle()
        self._start_op(kind, lambda: _stopped(backend.stop(handle)))

    async def _on_Pause(self, cmd: c.Pause) -> dict[str, Any]:
        backend = await self._lifecycle()
        await self._commit(t.pause(self.record, self._now()))
        self._stop_op(backend, "stop")
        return {"status": "paused"}

    async def _on_Resume(self, cmd: c.Resume) -> dict[str, Any]:
        backend = await self._lifecycle()
        return await self._bring_up(t.resume(self.record, self._now(), lifecycle=backend is not None))

    async def _on_Wake(self, cmd: c.Wake) -> dict[str, Any]:
        backend = await self._lifecycle()
        return await self._bring_up(t.wake(self.record, self._now(), lifecycle=backend is not None))

    async def _bring_up(self, outcome: t.Outcome, *, stop_first: Handle | None = None) -> dict[str, Any]:
        """Commit a transition that (re)starts the workspace, and start its workload when the box runs it."""
        await self._commit(outcome)
        if self.record.status is S.PROVISIONING:
            await self._provision(self.record, stop_first=stop_first)
        return {"status": self.record.status.value}

    async def _on_Hibernate(self, cmd: c.Hibernate) -> dict[str, Any]:
        backend = await self._lifecycle()
        await self._commit(t.hibernate(self.record, self._now(), lifecycle=backend is not None, force=cmd.force))
        if backend is not None:
            self._stop_op(backend, "hibernate")
        return {"status": self.record.status.value}

    async def _on_Restart(self, cmd: c.Restart) -> dict[str, Any]:
        backend = await self._lifecycle()
        handle = self.record.backend_state
        await self._bring_up(t.restart(self.record, self._now(), lifecycle=backend is not None), stop_first=handle)
        return {"status": "provisioning", "config_dir": "existing-volume", "reset_session": False}

    async def _on_SecretsChanged(self, cmd: c.SecretsChanged) -> dict[str, Any]:
        ws = self.record
        if ws.status in (S.REMOVED, S.PAUSED, S.HIBERNATED, S.HIBERNATING) or await self._lifecycle() is None:
            return {"restarted": False}
        await self._on_Restart(c.Restart())
        return {"restarted": True}

    async def _on_Delete(self, cmd: c.Delete) -> dict[str, Any]:
        ws = self.record
        outcome = t.delete(ws, self._now(), cmd.payload)
        if outcome is None:
            return {"status": "removed"}
        self._cancel_op()
        await self._commit(
            outcome,
            token_rows.revoke_all([ws.id]),
            secret_rows.delete_workspace([ws.id]),
        )
        self.deps.bus.end_streams(REMOVED, workspace_id=ws.id)
        self._start_op("destroy", self._destroy_after(0))
        return {"status": "removed"}

    async def _file_ops(self) -> ConfigFiles:
        """The backend's file operations, called here because this actor owns the workload's handle (the API
        never holds one, and the row may lag the actor's record)."""
        self._require_not_removed()
        backend = await self._backend()
        if not backend.capabilities().files or not isinstance(backend, ConfigFiles):
            raise FilesNotSupported(backend.name)
        return backend

    async def _on_ReadFiles(self, cmd: c.ReadFiles) -> bytes:
        backend = await self._file_ops()
        with _files_deadline("reading"):
            return await backend.read_config_files(self._handle())

    async def _on_WriteFiles(self, cmd: c.WriteFiles) -> None:
        backend = await self._file_ops()
        with _files_deadline("writing"):
            await backend.write_config_files(self._handle(), cmd.archive, replace=cmd.replace)

    async def _on_DeleteFiles(self, cmd: c.DeleteFiles) -> None:
        backend = await self._file_ops()
        with _files_deadline("deleting"):
            await backend.delete_config_files(self._handle(), cmd.paths)

    async def _on_BootstrapFailed(self, cmd: c.BootstrapFailed) -> dict[str, Any]:
        """Only a workspace still provisioning fails (the platform's rule): a later report is stale (the
        workspace came up, was restarted or is already failed) and changes nothing."""
        if self.record.status is not S.PROVISIONING:
            return {"ok": True, "no_change": True}
        self._cancel_op()
        log.warning("workspace %s: its platform reports the bootstrap failed", self.record.id)
        await self._commit(t.failed(self.record, self._now(), cmd.reason, source="bootstrap_watcher"))
        return {"ok": True}

    async def _on_Crash(self, cmd: c.Crash) -> None:
        raise RuntimeError("injected actor fault")


@contextlib.contextmanager
def _files_deadline(doing: str) -> Iterator[None]:
    try:
        with trio.fail_after(FILES_DEADLINE):
            yield
    except trio.TooSlowError:
        raise BackendError(f"{doing} the workspace's files did not finish within {FILES_DEADLINE:g}s") from None


class _NotRunning(BackendError):
    """Adoption found the workload stopped (it died while the box was down)."""

    def __init__(self, exit_code: int | None, oom_killed: bool) -> None:
        super().__init__("the workload stopped while the box was down")
        self.exit_code = exit_code
        self.oom_killed = oom_killed


async def _stopped(awaitable: Awaitable[None]) -> None:
    with trio.fail_after(CLEANUP_DEADLINE):
        await awaitable

