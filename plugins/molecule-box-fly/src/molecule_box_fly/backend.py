"""The ``flyio`` backend: each workspace is one Fly Machine in ``FLY_WORKSPACE_APP``.

A Machine is labelled before it exists (its ``metadata`` carries the box id and the workspace id, so the list
filter finds every one this box made, even one whose create answer was lost), gets the workspace's token as a
file at create (``config.files``), and is waited for with Fly's own ``/wait`` long-poll. The handle stores the
machine id and instance id; later calls address the machine by id, never by name.
"""

from __future__ import annotations

import base64
import datetime
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, TypeVar

import trio

from molecule_box.backends.base import (
    BackendContext,
    BackendError,
    BackendEvent,
    BaseBackend,
    Capabilities,
    Handle,
    Workload,
    WorkloadSpec,
    WorkloadState,
    WorkloadStatus,
)

from .client import FlyFailure, MachinesClient, NotFound, Refused, Unavailable
from .settings import FlySettings

log = logging.getLogger("molecule_box_fly")

T = TypeVar("T")

#: Guest sizes per tier (Fly's ``guest``): T2 1 shared CPU / 512 MB, T3 2 / 2048, T4 4 / 4096.
GUESTS = {2: (1, 512), 3: (2, 2048), 4: (4, 4096)}
#: The port the agent serves inside its Machine.
AGENT_PORT = 8000
TOKEN_PATH = "/configs/.auth_token"
GONE = frozenset({"destroying", "destroyed", "replaced", "migrated"})
RUNNING = frozenset({"started"})
STARTING = frozenset({"created", "creating", "starting", "restarting", "updating", "replacing"})
#: Seconds of one ``/wait`` long-poll: between polls the machine is looked at, so a failed launch is seen.
POLL = 5
#: Longest pause between retries while the API is unavailable.
BACKOFF_MAX = 5.0
#: Fly's header carrying a held lease's nonce on a change of the machine.
LEASE_HEADER = "fly-machine-lease-nonce"
#: Seconds a lease lives: it outlasts one update; one left by a box that died ends on its own.
LEASE_TTL = 30


def machine_name(workspace_id: str) -> str:
    return f"ws-{workspace_id[:12]}"


def workload_state(state: str) -> WorkloadState:
    if state in RUNNING:
        return WorkloadState.RUNNING
    if state in STARTING:
        return WorkloadState.STARTING
    if state in GONE:
        return WorkloadState.MISSING
    return WorkloadState.STOPPED  # stopping, stopped, suspending, suspended, failed, launch_failed


def created_at(machine: dict[str, Any]) -> float:
    """The machine's creation as a unix time (the orphan sweep spares young ones); now when Fly did not say."""
    try:
        return datetime.datetime.fromisoformat(str(machine["created_at"])).timestamp()
    except (KeyError, ValueError):
        return time.time()


def last_event(machine: dict[str, Any], kind: str, status: str | None = None) -> dict[str, Any] | None:
    events = [e for e in machine.get("events") or [] if isinstance(e, dict) and e.get("type") == kind
              and status in (None, e.get("status"))]
    return max(events, key=lambda e: e.get("timestamp") or 0) if events else None


async def retrying(what: str, call: Callable[[], Awaitable[T]]) -> T:
    """``call()`` until the API answers (a :class:`Unavailable` is retried with backoff); the caller's deadline
    bounds it. Fly's answer, good or bad, is returned or raised."""
    pause = 0.25
    while True:
        try:
            return await call()
        except Unavailable as exc:
            log.warning("flyio: %s: %s; retrying in %.1fs", what, exc.message, pause)
        await trio.sleep(pause)
        pause = min(pause * 2, BACKOFF_MAX)


class FlyBackend(BaseBackend):
    """Workspaces as Fly Machines (``CONTAINER_BACKEND=flyio``)."""

    name = "flyio"
    version = "0.1.0"
    settings_type: ClassVar[type[FlySettings]] = FlySettings

    def __init__(self, context: BackendContext[FlySettings]) -> None:
        super().__init__(context)
        self.settings: FlySettings = context.settings
        self._client: MachinesClient | None = None
        #: Machines this box started or adopted, by workspace: the watch reports the ones that stop on their own.
        self._watched: dict[str, Handle] = {}

    def capabilities(self) -> Capabilities:
        return Capabilities(lifecycle=True, tiers=frozenset(GUESTS), prewrites_token=True)

    def admit(self, *, runtime: str, tier: int) -> None:
        missing = self.settings.missing()
        if missing:
            raise BackendError(f"the flyio backend needs {' and '.join(missing)}")

    @property
    def client(self) -> MachinesClient:
        if self._client is None:
            self.admit(runtime="", tier=0)
            s = self.settings
            self._client = MachinesClient(s.api_base_url, s.app, s.api_token, s.request_timeout)
        return self._client

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            while True:
                await trio.sleep(self.settings.watch_interval)
                if self._watched:
                    await self._watch_once()
        finally:
            if self._client is not None:
                await self._client.aclose()

    async def _watch_once(self) -> None:
        """One list of this box's machines: a watched one that is stopped, failed or gone without the box
        asking (Fly's ``on-failure`` policy gave up after its retries) is reported as ``exited``; the actor
        confirms with inspect and applies the box's restart policy. An outage skips the round."""
        try:
            listed = await self.client.call("GET", params={"metadata.molecule_box": self.context.box_id})
        except FlyFailure as exc:
            log.info("flyio: watch skipped: %s", exc.message)
            return
        machines = {m.get("id"): m for m in listed or [] if isinstance(m, dict)}
        for workspace_id, handle in list(self._watched.items()):
            machine = machines.get(handle.get("machine_id"))
            state = str(machine.get("state")) if machine else "destroyed"
            if workload_state(state) not in (WorkloadState.STOPPED, WorkloadState.MISSING) or state == "stopping":
                continue
            del self._watched[workspace_id]
            exit_info = ((last_event(machine, "exit") or {}).get("request") or {}).get("exit_event") or {} \
                if machine else {}
            code = exit_info.get("exit_code")
            self.context.report(BackendEvent(workspace_id=workspace_id, kind="exited",
                                             exit_code=code if isinstance(code, int) else None,
                                             detail=f"Fly machine {handle.get('machine_id')} is {state}"))

    # -- the machine's config ------------------------------------------------------------------------

    def machine_config(self, spec: WorkloadSpec) -> dict[str, Any]:
        if spec.tier not in GUESTS:
            raise BackendError(f"tier {spec.tier} is not supported by backend flyio (supported: 2, 3, 4)")
        cpus, memory = GUESTS[spec.tier]
        files = []
        if spec.auth_token:
            files.append({"guest_path": TOKEN_PATH, "mode": 0o600,
                          "raw_value": base64.b64encode(spec.auth_token.encode()).decode()})
        return {
            "image": f"{self.settings.image_prefix}{spec.runtime}:latest",
            "env": {**spec.env, "PORT": str(AGENT_PORT)},
            "guest": {"cpu_kind": "shared", "cpus": cpus, "memory_mb": memory},
            "restart": {"policy": "on-failure"},
            "metadata": {"molecule_box": self.context.box_id, "workspace_id": spec.workspace_id,
                         "tier": str(spec.tier)},
            "files": files,
            "services": [{"internal_port": AGENT_PORT, "protocol": "tcp",
                          "ports": [{"port": 443, "handlers": ["tls", "http"]}]}],
        }

    def handle_of(self, machine: dict[str, Any], workspace_id: str) -> Handle:
        return {"workspace_id": workspace_id, "machine_id": machine["id"], "instance_id": machine.get("instance_id"),
                "app": self.settings.app, "region": machine.get("region"), "created": created_at(machine)}

    # -- lifecycle -----------------------------------------------------------------------------------

    async def start(self, spec: WorkloadSpec) -> Workload:
        self._watched.pop(spec.workspace_id, None)
        config = self.machine_config(spec)
        region = str(spec.metadata.get("region") or self.settings.region)
        mine = await self._machines({"metadata.workspace_id": spec.workspace_id})
        previous = (spec.previous or {}).get("machine_id")
        mine.sort(key=lambda m: m.get("id") != previous)  # reuse the previous machine when it is still there
        try:
            if mine:
                keep, extra = mine[0], mine[1:]
                for machine in extra:  # e.g. a create whose answer was lost, then retried
                    await self.destroy({"workspace_id": spec.workspace_id, "machine_id": machine["id"]})
                machine = await self._update(keep["id"], {"config": config, "region": region})
            else:
                machine = await retrying("create", lambda: self.client.call(
                    "POST", json={"name": machine_name(spec.workspace_id), "region": region, "config": config}))
        except FlyFailure as exc:
            raise BackendError(f"Fly refused the machine: {exc.message}", detail=f"HTTP {exc.status}") from None
        handle = self.handle_of(machine, spec.workspace_id)
        await self._wait(handle, "started")
        self._watched[spec.workspace_id] = handle
        return Workload(handle=handle)

    async def _update(self, machine_id: str, body: dict[str, Any]) -> Any:
        """Update a machine under a lease of its own (what Fly's docs advise around an update when more than
        one client may touch the app): taken first (a lease held by another client is waited out, under the
        caller's deadline), its nonce sent with the update, released after, whatever happened."""
        nonce = await self._lease(machine_id)
        try:
            return await retrying("update", lambda: self.client.call(
                "POST", f"/{machine_id}", json=body, headers={LEASE_HEADER: nonce}))
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(self.settings.request_timeout):
                try:
                    await self.client.call("DELETE", f"/{machine_id}/lease", headers={LEASE_HEADER: nonce})
                except FlyFailure as exc:  # it expires after LEASE_TTL anyway
                    log.info("flyio: releasing the lease of machine %s: %s", machine_id, exc.message)

    async def _lease(self, machine_id: str) -> str:
        pause = 0.25
        body = {"ttl": LEASE_TTL, "description": f"molecule-box {self.context.box_id}"}
        while True:
            try:
                answer = await retrying("lease", lambda: self.client.call("POST", f"/{machine_id}/lease", json=body))
            except Refused as exc:
                if exc.status != 409:
                    raise
                log.info("flyio: machine %s is leased by another client; waiting %.1fs", machine_id, pause)
            else:
                nonce = ((answer or {}).get("data") or {}).get("nonce") if isinstance(answer, dict) else None
                if not isinstance(nonce, str) or not nonce:
                    raise BackendError(f"Fly leased machine {machine_id} without a nonce")
                return nonce
            await trio.sleep(pause)
            pause = min(pause * 2, BACKOFF_MAX)

    async def _machines(self, metadata: dict[str, str], *, retry: bool = True) -> list[dict[str, Any]]:
        """This box's live machines matching ``metadata``; ``retry``: wait out an outage (else it is an error, so
        the orphan sweep skips a round instead of hanging)."""
        params = {"metadata.molecule_box": self.context.box_id, **metadata}

        async def call() -> Any:
            return await self.client.call("GET", params=params)

        try:
            found = await (retrying("list", call) if retry else call())
        except FlyFailure as exc:
            raise BackendError(f"cannot list Fly machines: {exc.message}") from None
        return [m for m in found or [] if isinstance(m, dict) and m.get("state") not in GONE]

    async def _wait(self, handle: Handle, state: str) -> None:
        """Fly's ``/wait`` until the machine is in ``state``, re-issued after each 408; between polls a look at
        the machine turns a failed launch into an error with its reason instead of a wait until the deadline."""
        machine_id = handle["machine_id"]
        instance = handle.get("instance_id") if state in ("started", "stopped") else None
        while True:
            try:
                if await retrying(f"wait {state}", lambda: self.client.wait(machine_id, state, instance_id=instance,
                                                                            timeout=POLL)):
                    return
                machine = await retrying("get", lambda: self.client.call("GET", f"/{machine_id}"))
            except NotFound:
                if state == "destroyed":
                    return
                raise BackendError(f"Fly machine {machine_id} disappeared while waiting for {state}") from None
            except Refused as exc:
                raise BackendError(f"Fly refused to wait for {state}: {exc.message}") from None
            current = machine.get("state")
            if state == "started" and current in ("failed", "launch_failed", "destroyed", "stopped"):
                exit_event = last_event(machine, "exit") or {}
                raise BackendError(f"Fly machine {machine_id} did not start: it is {current}"
                                   + (f" ({exit_event['status']})" if exit_event.get("status") else ""))

    async def stop(self, handle: Handle, *, grace: float = 10.0) -> None:
        self._watched.pop(handle["workspace_id"], None)
        machine_id = handle.get("machine_id")
        if not machine_id:
            return
        body = {"timeout": f"{max(1, round(grace))}s"}
        try:
            await retrying("stop", lambda: self.client.call("POST", f"/{machine_id}/stop", json=body))
        except NotFound:
            return
        except Refused as exc:  # e.g. already stopped: the state decides
            if (await self.inspect(handle)).state in (WorkloadState.STOPPED, WorkloadState.MISSING):
                return
            raise BackendError(f"Fly refused to stop machine {machine_id}: {exc.message}") from None
        await self._wait(handle, "stopped")

    async def destroy(self, handle: Handle) -> None:
        self._watched.pop(handle["workspace_id"], None)
        machine_id = handle.get("machine_id")
        if not machine_id:
            return
        try:
            await retrying("destroy", lambda: self.client.call("DELETE", f"/{machine_id}", params={"force": "true"}))
        except NotFound:
            return
        except Refused as exc:
            if (await self.inspect(handle)).state is WorkloadState.MISSING:
                return
            raise BackendError(f"Fly refused to destroy machine {machine_id}: {exc.message}") from None
        await self._wait(handle, "destroyed")

    async def _machine(self, handle: Handle) -> dict[str, Any] | None:
        """The handle's machine, None when there is none; raises :class:`FlyFailure` when the API cannot tell."""
        machine_id = handle.get("machine_id")
        if not machine_id:
            return None
        try:
            machine: dict[str, Any] = await self.client.call("GET", f"/{machine_id}")
        except NotFound:
            return None
        return machine

    async def inspect(self, handle: Handle) -> WorkloadStatus:
        try:
            machine = await self._machine(handle)
        except FlyFailure as exc:  # an outage or a refusal: cannot tell, so nobody acts destructively
            return WorkloadStatus(WorkloadState.UNKNOWN, detail=exc.message)
        if machine is None:
            return WorkloadStatus(WorkloadState.MISSING)
        state = workload_state(str(machine.get("state")))
        started = last_event(machine, "start", "started") or {}
        exited = last_event(machine, "exit") or {}
        exit_info = (exited.get("request") or {}).get("exit_event") or {}
        return WorkloadStatus(
            state, exit_code=exit_info.get("exit_code") if state is WorkloadState.STOPPED else None,
            oom_killed=bool(exit_info.get("oom_killed")), detail=str(machine.get("state")),
            started_at=(started["timestamp"] / 1000) if started.get("timestamp") else None)

    async def adopt(self, handle: Handle) -> Handle | None:
        try:
            machine = await self._machine(handle)
        except FlyFailure:
            return handle  # cannot tell now: keep it; inspect and the actor decide later
        if machine is None or machine.get("state") in GONE:
            return None
        adopted = {**handle, "instance_id": machine.get("instance_id"), "region": machine.get("region")}
        self._watched[handle["workspace_id"]] = adopted
        return adopted

    async def list_managed(self) -> list[Handle]:
        return [self.handle_of(m, str((m.get("config") or {}).get("metadata", {}).get("workspace_id")
                                      or (m.get("metadata") or {}).get("workspace_id")))
                for m in await self._machines({}, retry=False)]
