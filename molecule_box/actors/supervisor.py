"""The supervisor: owns one actor per workspace and restarts an actor that raises.

One-for-one, as OTP's ``simple_one_for_one``: a crash restarts only that
workspace's actor, after a capped exponential backoff with jitter, reloading
its record from the store; the error is logged, counted and stored in
``actor_failures`` (``GET /workspaces/:id/failures``). The command that was
in flight gets a 503 so its caller retries; queued commands wait in the
mailbox, which outlives the crash. Nothing escapes to the box's nursery.

It also holds the rules between workspaces, so every path that pauses,
resumes, restarts or wakes a workspace (the API, the proxy's wake, a secret
change) passes the same ones: a pause or resume cascades to the descendants,
and a paused ancestor blocks resume, restart and wake. The hierarchy comes
from the store (``parent_id``, committed by the actors), each workspace's
status from its actor's record. Creation (the row and its actor) and purge
(once the family's last actor has exited) happen here too.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import logging
import math
import random
import traceback
import uuid
from collections.abc import Callable
from typing import Any

import trio

from .. import templates
from ..backends.base import BackendError
from ..errors import BadRequest, Conflict, NotFound, ServiceUnavailable
from ..models import Workspace, WorkspaceStatus
from ..schemas import CreateWorkspace
from ..security import tokens as tk
from ..security.ssrf import check_agent_url
from ..store import events as event_rows
from ..store import tokens as token_rows
from ..store import workspaces as workspace_rows
from . import commands as c
from . import transitions as t
from .deps import ActorDeps
from .workspace import WorkspaceActor

log = logging.getLogger(__name__)

BACKOFF_FIRST = 0.1
BACKOFF_MAX = 30.0
#: An actor that ran this long before crashing starts its backoff from the beginning again.
STABLE_AFTER = 60.0
#: Longest an API handler waits for an actor's answer.
ASK_TIMEOUT = 30.0
#: Proof of life (``seen``) is told to an actor at most this often, and at most six times per deadline.
SEEN_EVERY = 5.0
#: Longest a purge waits for the family's actors to finish cleaning up their workloads.
PURGE_WAIT = 30.0
#: How long a bootstrap opened at create (``"bootstrap": "open"``) waits for its agent's first register, seconds.
BOOTSTRAP_EXPIRES_IN = 3600

S = WorkspaceStatus


@dataclasses.dataclass(frozen=True)
class Created:
    """A new workspace, and what its creator is shown once: a remote agent's token or its open bootstrap."""

    workspace: Workspace
    token: str | None = None
    bootstrap_expires_at: float | None = None


class _Purge:
    """A family to hard-delete once none of its actors runs any more."""

    def __init__(self, family: list[str]) -> None:
        self.family = family
        self.done = trio.Event()
        self.error: BaseException | None = None


class ActorSlot:
    """A workspace's mailbox and current actor; the mailbox survives actor restarts."""

    __slots__ = ("actor", "receive", "seen_told", "send", "workspace_id")

    def __init__(self, workspace_id: str) -> None:
        self.workspace_id = workspace_id
        self.send, self.receive = trio.open_memory_channel[c.Message](math.inf)
        self.actor: WorkspaceActor | None = None
        self.seen_told = -math.inf  # trio time the actor was last told of authenticated traffic


class Supervisor:
    def __init__(self, deps: ActorDeps) -> None:
        self.deps = deps
        self.slots: dict[str, ActorSlot] = {}
        self._purges: list[_Purge] = []
        settings = deps.settings
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
            for ws in workspace_rows.all_live(self.deps.store.db):
                self.spawn(ws)
                restored += 1
            # Restored means every actor has taken its first step (its resumption), not only been spawned. The
            # spawned actors run in the next scheduling batch, and started() wakes the caller in the batch after
            # the one it is called in: called right here, the caller would share the actors' batch, which trio
            # runs forwards or backwards at random, and see the restore end before their first steps half the
            # time. After this checkpoint it is called in the actors' batch or later. The box says ready once
            # its actors are live, and the restore's time counts all of it.
            await trio.lowlevel.checkpoint()
            task_status.started(restored)
            await trio.sleep_forever()

    def spawn(self, ws: Workspace) -> ActorSlot:
        """Start supervising ``ws`` (its mailbox accepts commands at once)."""
        assert self._nursery is not None, "supervisor is not running"
        slot = self.slots.get(ws.id)
        if slot is None:
            slot = self.slots[ws.id] = ActorSlot(ws.id)
            assert self._context is not None
            self._context.run(functools.partial(self._nursery.start_soon, self._supervise, slot, ws,
                                                name=f"actor:{ws.id}"))
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
        slot.send.send_nowait(c.Seen(at=self.deps.now()))

    async def ask(self, workspace_id: str, command: c.Command, *, timeout: float = ASK_TIMEOUT) -> Any:
        """Send ``command`` to the workspace's actor and wait (bounded) for its answer."""
        slot = self.slots.get(workspace_id)
        if slot is None:
            raise NotFound("workspace not found")
        lent = slot.actor.lend(command) if slot.actor is not None else None
        if lent is None:
            slot.send.send_nowait(command)
        # A lent write (committed in the parked actor's name) is done once its reply is set, or has failed.
        done = command.reply.done if lent is None else lent.done
        with trio.move_on_after(timeout):
            await done.wait()
        if not done.is_set():
            raise ServiceUnavailable("workspace is busy; retry shortly", retry_after=2)
        if lent is not None and lent.error is not None:
            raise lent.error
        return command.reply.unwrap()

    async def _supervise(self, slot: ActorSlot, ws: Workspace) -> None:
        failures = 0
        last_error = ""
        record: Workspace | None = ws
        del ws
        try:
            while record is not None:
                actor = WorkspaceActor(self.deps, record, slot.receive, slot.send, crashes=failures,
                                       last_error=last_error)
                record = None  # the actor owns the record now; keeping it here would hold a stale copy
                slot.actor = actor
                started = trio.current_time()
                try:
                    await actor.run()
                    return  # finished normally: the workspace is removed and cleaned up
                except Exception as exc:
                    failures = 0 if trio.current_time() - started > STABLE_AFTER else failures + 1
                    last_error = await self._record_crash(slot, actor, exc)
                delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (failures - 1)) * random.uniform(0.8, 1.2)
                await trio.sleep(delay)
                record = workspace_rows.get(self.deps.store.db, slot.workspace_id)
                if record is not None and record.status is WorkspaceStatus.REMOVED and record.backend_state is None:
                    record = None
        finally:
            self.slots.pop(slot.workspace_id, None)
            slot.send.close()
            self._fail_pending(slot)
            self._start_due_purges()

    async def _record_crash(self, slot: ActorSlot, actor: WorkspaceActor, exc: Exception) -> str:
        while isinstance(exc, ExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]  # the actor's nursery wraps what its body raised
        text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        log.error("workspace %s: actor crashed (%s); restarting", slot.workspace_id, text,
                  exc_info=(type(exc), exc, exc.__traceback__))
        self.deps.metrics.actor_restarts.inc()
        message = actor.current
        if isinstance(message, c.Command):
            message.reply.fail(ServiceUnavailable(
                "workspace actor restarted after an internal error; retry", retry_after=1))
        try:
            await self.deps.store.write(event_rows.record_actor_failure(slot.workspace_id, text))
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

    # -- creation --------------------------------------------------------------------------------

    def backend_for(self, *, runtime: str, external: bool, requested: str | None) -> str:
        """Which backend a new workspace uses: its own choice, external for remote agents, else the default."""
        if requested:
            name = requested
        elif external or runtime == "external":
            name = "external"
        else:
            name = self.deps.settings.default_backend
        self.deps.backends.check_installed(name)
        return name

    async def create(self, body: CreateWorkspace) -> Created:
        """Check a create request against its backend, commit the row (with its secrets, its token or open
        bootstrap and its first event) and start its actor."""
        external = body.external or body.runtime == "external"
        model = body.model
        prefilled = None
        if body.template and not external:  # 400 "invalid template" (with a body) before anything is stored
            prefilled = templates.prefill(self.deps.settings.templates_root, body.template)
            model = model or prefilled.model
        template_runtime = prefilled.runtime if prefilled is not None else None
        runtime = "external" if external else (body.runtime or template_runtime or "langgraph")
        backend_name = self.backend_for(runtime=runtime, external=external, requested=body.backend)
        backend = await self.deps.backends.get(backend_name)
        caps = backend.capabilities()
        tier = body.tier or 3
        if tier not in caps.tiers:
            raise BadRequest(f"tier {tier} is not supported by backend {backend_name} (supported: "
                             f"{', '.join(map(str, sorted(caps.tiers)))})")
        try:
            backend.admit(runtime=runtime, tier=tier)
        except BackendError as exc:
            raise BadRequest(exc.reason, code="workload_refused", backend=backend_name) from None
        if body.workspace_access != "none" and not body.workspace_dir:
            raise BadRequest("invalid workspace access: read_only and read_write need workspace_dir")
        if body.parent_id is not None and body.parent_id not in self.slots:
            raise BadRequest("invalid parent_id: no such workspace")
        if body.bootstrap == "open" and caps.lifecycle:
            raise BadRequest(f"bootstrap 'open' is for remote agents: {backend_name} workspaces get their token "
                             "from the box")
        if body.bootstrap_expires_in is not None and body.bootstrap != "open":
            raise BadRequest("bootstrap_expires_in needs bootstrap 'open'")
        url = None
        if external and body.url:
            url = await check_agent_url(body.url, self.deps.settings.allow_agent_networks)
        now = self.deps.now()
        wid = str(uuid.uuid4())
        config: dict[str, Any] = {}
        if model:
            config["model"] = model
        if body.template and not external:
            config["template"] = body.template
        if body.metadata:
            config["metadata"] = dict(body.metadata)
        outcome = t.created(Workspace(
            id=wid, name=body.name, role=body.role or None, tier=tier, status=S.PROVISIONING, runtime=runtime,
            backend=backend_name, url=url, parent_id=body.parent_id, budget_limit=body.budget_limit,
            max_concurrent_tasks=max(1, body.max_concurrent_tasks or 1), workspace_dir=body.workspace_dir,
            workspace_access=body.workspace_access, config=config or None,
            x=body.canvas.x if body.canvas else None, y=body.canvas.y if body.canvas else None,
            created_at=now, updated_at=now, status_changed_at=now,
        ), lifecycle=caps.lifecycle)
        ws = outcome.workspace
        ops: list[Callable[[Any], Any]] = [workspace_rows.insert(ws)]
        for key, value in (body.secrets or {}).items():
            ops.append(self.deps.vault.put(wid, key, value))
        created = Created(ws)
        # A box-run workload gets its token from the box at each start; a remote workspace, with or without a
        # URL, is never without a token nor open unless the operator asked.
        if not caps.lifecycle and body.bootstrap == "open":
            expires_at = now + (body.bootstrap_expires_in or BOOTSTRAP_EXPIRES_IN)
            created = Created(ws, bootstrap_expires_at=expires_at)
            ops.append(token_rows.open_bootstrap(wid, expires_at))
        elif not caps.lifecycle:
            token = tk.mint()
            created = Created(ws, token=token.plaintext)
            ops.append(token_rows.insert(wid, token.digest, token.prefix))
        events = [self.deps.bus.make(kind, wid, payload) for kind, payload in outcome.events]
        ops.extend(event_rows.insert(event) for event in events)
        await self.deps.store.write(lambda db: [op(db) for op in ops])
        self.spawn(ws)
        for event in events:
            self.deps.bus.publish(event)
        return created

    # -- the rules between workspaces --------------------------------------------------------------

    def paused_ancestor(self, workspace_id: str) -> Workspace | None:
        """The nearest ancestor that is paused (it blocks resume, restart and wake below it), or None."""
        for ancestor in workspace_rows.ancestors(self.deps.store.db, workspace_id):
            record = self.record(ancestor)
            if record is not None and record.status is S.PAUSED:
                return record
        return None

    def _check_ancestors(self, workspace_id: str) -> None:
        blocker = self.paused_ancestor(workspace_id)
        if blocker is not None:
            raise Conflict(f'parent workspace "{blocker.name}" is paused — resume it first')

    def _descendants(self, workspace_id: str, keep: Callable[[Workspace], bool]) -> list[str]:
        return [member for member in workspace_rows.descendants(self.deps.store.db, workspace_id)
                if (record := self.record(member)) is not None and keep(record)]

    async def _fan_out(self, ids: list[str], make: Callable[[], c.Command]) -> int:
        """Ask each of ``ids`` concurrently; how many answered (one removed meanwhile is skipped)."""
        done = 0

        async def one(member: str) -> None:
            nonlocal done
            try:
                await self.ask(member, make())
                done += 1
            except NotFound:
                pass

        async with trio.open_nursery() as nursery:
            for member in ids:
                nursery.start_soon(one, member)
        return done

    async def pause_tree(self, workspace_id: str) -> int:
        """Pause the workspace, then every descendant not paused yet; how many were paused."""
        await self.ask(workspace_id, c.Pause())
        kids = self._descendants(workspace_id, lambda ws: ws.status is not S.PAUSED)
        return 1 + await self._fan_out(kids, c.Pause)

    async def resume_tree(self, workspace_id: str) -> tuple[str, int]:
        """Resume the workspace (unless a paused ancestor blocks it), then its paused descendants; its new
        status and how many were resumed."""
        self._check_ancestors(workspace_id)
        result = await self.ask(workspace_id, c.Resume())
        kids = self._descendants(workspace_id, lambda ws: ws.status is S.PAUSED)
        return result["status"], 1 + await self._fan_out(kids, c.Resume)

    async def restart(self, workspace_id: str) -> dict[str, Any]:
        self._check_ancestors(workspace_id)
        result: dict[str, Any] = await self.ask(workspace_id, c.Restart())
        return result

    async def migrate(self, workspace_id: str, to: str) -> dict[str, Any]:
        """Move a box-run workspace's workload to backend ``to`` (the actor does the move: new workload
        registered before the old one goes). Refused before anything starts when ``to`` is not installed,
        does not run workloads here, or would not take the workspace's tier or runtime."""
        ws = self.record(workspace_id)
        if ws is None:
            raise NotFound("workspace not found")
        self.deps.backends.check_installed(to)
        target = await self.deps.backends.get(to)
        caps = target.capabilities()
        if not caps.lifecycle or caps.remote:
            raise BadRequest(f"backend {to} does not run workloads on the box's behalf; nothing to move to")
        if ws.tier not in caps.tiers:
            raise BadRequest(f"tier {ws.tier} is not supported by backend {to} (supported: "
                             f"{', '.join(map(str, sorted(caps.tiers)))})")
        try:
            target.admit(runtime=ws.runtime, tier=ws.tier)
        except BackendError as exc:
            raise BadRequest(exc.reason, code="workload_refused", backend=to) from None
        result: dict[str, Any] = await self.ask(workspace_id, c.Migrate(to))
        return result

    async def read_files(self, workspace_id: str) -> bytes:
        """A tar of the workspace's ``/configs``, from its backend through its actor (which owns the handle)."""
        found: bytes = await self.ask(workspace_id, c.ReadFiles())
        return found

    async def write_files(self, workspace_id: str, archive: bytes, *, replace: bool = False) -> None:
        """Extract a checked tar into the workspace's ``/configs`` (see ``BaseBackend.write_config_files``)."""
        await self.ask(workspace_id, c.WriteFiles(archive, replace))

    async def delete_files(self, workspace_id: str, paths: list[str]) -> None:
        await self.ask(workspace_id, c.DeleteFiles(paths))

    async def wake(self, workspace_id: str) -> dict[str, Any]:
        self._check_ancestors(workspace_id)
        result: dict[str, Any] = await self.ask(workspace_id, c.Wake())
        return result

    def wake_soon(self, workspace_id: str) -> None:
        """Wake without waiting (the proxy's call to a hibernated workspace); raises when a paused ancestor
        blocks it, so the caller learns why nobody answers."""
        self._check_ancestors(workspace_id)
        self.tell(workspace_id, c.Wake())

    async def secrets_changed(self, workspace_id: str) -> None:
        """A secret the workspace inherits changed: its actor restarts a box-run workload, unless a paused
        ancestor blocks restarts below it (the workload keeps the old value until its next start)."""
        if self.paused_ancestor(workspace_id) is not None:
            return
        try:
            await self.ask(workspace_id, c.SecretsChanged())
        except NotFound:
            pass

    async def delete_tree(self, workspace_id: str, *, purge: bool = False) -> int:
        """Remove the workspace and every descendant; how many descendants went with it. ``purge``: then
        hard-delete their rows once their actors have cleaned up (ServiceUnavailable if that takes longer
        than PURGE_WAIT; the purge can be retried)."""
        family = [workspace_id, *workspace_rows.descendants(self.deps.store.db, workspace_id)]
        cascade = len(family) - 1
        pending = _Purge(family) if purge else None
        async with trio.open_nursery() as nursery:
            for member in family:
                payload = {"cascade_deleted": cascade} if member == workspace_id else {}
                if self.record(member) is not None:
                    nursery.start_soon(self.ask, member, c.Delete(payload=payload))
        if pending is None:
            return cascade
        self._purges.append(pending)
        self._start_due_purges()
        with trio.move_on_after(PURGE_WAIT):
            await pending.done.wait()
        if not pending.done.is_set():
            self._purges.remove(pending)
            raise ServiceUnavailable("workloads are still being cleaned up; retry the purge", retry_after=10)
        if pending.error is not None:
            raise pending.error
        return cascade

    def _start_due_purges(self) -> None:
        """Run each pending purge whose family no longer has an actor (called as each actor exits)."""
        for pending in [p for p in self._purges if not any(member in self.slots for member in p.family)]:
            self._purges.remove(pending)
            assert self._nursery is not None
            self._nursery.start_soon(self._purge, pending)

    async def _purge(self, pending: _Purge) -> None:
        try:
            # A workspace's activity and events can be many rows.
            await self.deps.store.write(workspace_rows.purge(pending.family), bulk=True)
        except Exception as exc:  # handed to the request that asked for the purge
            pending.error = exc
        finally:
            pending.done.set()
