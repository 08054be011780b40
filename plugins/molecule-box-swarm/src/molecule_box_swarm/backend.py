"""The ``swarm`` backend: a workspace is a replicated service with one replica (none while stopped) on a Docker
Swarm, managed through one manager's Engine API.

- **start**: the token becomes a new Docker secret (one per workspace and generation, mounted at
  ``/configs/.auth_token`` mode 0600); the workspace's service is updated to use it (or created, labelled with
  the box and the workspace), scaled to 1, and the start waits for its newest task to run. The old secrets are
  removed after the update (a secret in use cannot be). The node the task runs on is in the handle and its
  address in the workspace's URL.
- **liveness**: container events of this box's tasks from the manager's event stream (``die``/``oom``), and,
  every ``WATCH_INTERVAL``, the task states of every service, which also covers tasks on other nodes (whose
  containers the manager's stream does not show); both are triggers the actor confirms with ``inspect``.
- **restarts** are the box's: the restart condition is ``none``, so a crashed task stays ``failed``/``complete``
  until the actor starts the workspace again (a service update: a new task).
- **adopt** finds the service by id or labels and never updates it; **list_managed** is the label-filtered
  service list plus workspaces that have only leftover secrets, so the orphan sweep removes both.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import trio

import molecule_box.backends.archive as ar
import molecule_box.backends.docker.spec as docker_spec
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
from molecule_box.backends.docker.client import EngineError, EngineNotFound, EngineUnreachable, open_client
from molecule_box.backends.docker.settings import HOST_NETWORK

from . import configs as cf
from . import service as sv
from .client import SwarmClient
from .settings import SwarmSettings

log = logging.getLogger(__name__)

#: Seconds between two reads of every service's tasks (the liveness of tasks on any node).
WATCH_INTERVAL = 2.0
RECONNECT_FIRST = 0.5
RECONNECT_MAX = 10.0
#: How often a start, stop or destroy looks at the tasks while it waits for them.
POLL = 0.2
#: Longest a destroy waits for the service's tasks to go before it removes the secrets anyway.
DESTROY_WAIT = 30.0
#: Longest a start waits for the tasks of an earlier stop still on their way out (their stop grace and some).
LEAVING_WAIT = 20.0
#: Tries of a service update whose version Swarm moved meanwhile.
UPDATE_ATTEMPTS = 5
#: How long one read of all services and tasks answers "is it running" for inspect and adopt.
SNAPSHOT_TTL = 0.5
#: Container events of the box's tasks that may mean a workspace died.
ACTIONS = ("die", "oom")


@dataclasses.dataclass(frozen=True)
class _Snapshot:
    at: float
    #: workspace id → its (newest) service
    services: dict[str, dict[str, Any]]
    #: service id → its tasks
    tasks: dict[str, list[dict[str, Any]]]


class SwarmBackend(BaseBackend):
    """One-replica services on a Docker Swarm manager."""

    name = "swarm"
    version = importlib.metadata.version("molecule-box-swarm")
    settings_type = SwarmSettings

    def __init__(self, context: BackendContext[SwarmSettings]) -> None:
        super().__init__(context)
        self.settings = context.settings
        self.box_id = context.box_id
        self.host_network = self.settings.network == HOST_NETWORK
        self._client: SwarmClient | None = None
        self.connected = False
        self._ports = docker_spec.PortAllocator(*self.settings.ports,
                                                is_free=docker_spec.port_is_free if self.host_network
                                                else lambda port: True)
        self._network_id: str | None = None
        self._network_lock = trio.Lock()
        #: workspace id → the task it runs now (from start, adopt or inspect): another task's death is stale.
        self._current: dict[str, str] = {}
        #: Workspaces with a start, stop or destroy in progress: what their tasks do then is the box's doing.
        self._busy: set[str] = set()
        self._connected_event = trio.Event()
        self._last_snapshot: _Snapshot | None = None
        self._snapshot_lock = trio.Lock()
        self._nodes: dict[str, dict[str, str]] = {}

    def capabilities(self) -> Capabilities:
        return Capabilities(lifecycle=True, remote=False, tiers=sv.supported_tiers(self.settings),
                            prewrites_token=True, logs=True, files=True)

    def admit(self, *, runtime: str, tier: int) -> None:
        allowed = self.settings.allowed_runtime_names
        if runtime not in allowed:
            raise BackendError(f"runtime {runtime!r} is not allowed here (ALLOWED_RUNTIMES: "
                               f"{', '.join(sorted(allowed - {'external'}))})")
        problem = sv.refusal(self.settings, tier)
        if problem is not None:
            raise BackendError(problem)

    # -- the manager connection ---------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with open_client(self.settings.manager) as engine:
            self._client = SwarmClient(engine)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._watch)
                    task_status.started()
            finally:
                self._client = None
                self.connected = False

    async def _watch(self) -> None:
        """Check the manager, then follow its events and the task states; on failure reconnect with backoff."""
        client = self._require_client()
        delay = RECONNECT_FIRST
        while True:
            try:
                swarm = await client.swarm()
                await self._learn_ports(client)
            except EngineError as exc:
                reason = exc.message
            else:
                log.info("swarm: connected to the manager of swarm %s", str(swarm.get("ID", "?"))[:12])
                self.connected = True
                self._connected_event.set()
                delay = RECONNECT_FIRST
                reason = await self._follow(client)
            if self.connected:
                log.warning("swarm: manager unavailable (%s); reconnecting", reason)
            self.connected = False
            self._network_id = None
            if self._connected_event.is_set():
                self._connected_event = trio.Event()
            await trio.sleep(delay)
            delay = min(RECONNECT_MAX, delay * 2)

    async def _follow(self, client: SwarmClient) -> str:
        failure: list[str] = []

        def sink(raw: dict[str, Any]) -> None:
            self._on_event(raw)

        async def poll_tasks() -> None:
            while True:
                try:
                    await self.reconcile()
                except EngineError as exc:
                    failure.append(f"reading the tasks failed: {exc.message}")
                    nursery.cancel_scope.cancel()
                    return
                await trio.sleep(WATCH_INTERVAL)

        filters = {"type": ["container"], "event": list(ACTIONS),
                   "label": [f"{sv.LABEL_MANAGED}=true", f"{sv.LABEL_BOX}={self.box_id}"]}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(poll_tasks)
            try:
                await client.engine.watch_events(filters, sink)
                failure.append("the manager closed the event stream")
            except EngineError as exc:
                failure.append(exc.message)
            nursery.cancel_scope.cancel()
        return failure[0] if failure else "unknown"

    def _on_event(self, raw: dict[str, Any]) -> None:
        """A container event of one of this box's tasks on the manager's node → the workspace's actor."""
        attributes = (raw.get("Actor") or {}).get("Attributes") or {}
        wid = attributes.get(sv.LABEL_WORKSPACE)
        if attributes.get(sv.LABEL_BOX) != self.box_id or not wid or wid in self._busy:
            return
        task = attributes.get("com.docker.swarm.task.id")
        if task and self._current.get(wid) not in (None, task):
            return  # an older task's last words
        action = str(raw.get("Action") or "")
        if action == "oom":
            self.context.report(BackendEvent(wid, "oom", detail="the task hit its memory limit"))
        elif action == "die":
            self._last_snapshot = None  # the inspect that confirms this must not read a snapshot taken before it
            code = str(attributes.get("exitCode"))
            self.context.report(BackendEvent(wid, "exited", exit_code=int(code) if code.isdigit() else None,
                                             detail=f"task {str(task)[:12]} exited"))

    async def reconcile(self) -> None:
        """Report every workspace whose current task stopped running (on any node) as ``exited``."""
        client = self._require_client()
        watched = {wid: task for wid, task in self._current.items() if wid not in self._busy}
        if not watched:
            return
        tasks = await client.tasks(sv.owned_filters(self.box_id))  # the container labels: every node's tasks
        by_id = {t.get("ID"): t for t in tasks}
        down: frozenset[str] | None = None
        for wid, task_id in watched.items():
            if wid in self._busy or self._current.get(wid) != task_id:
                continue
            task = by_id.get(task_id)
            state = str(((task or {}).get("Status") or {}).get("State") or "gone")
            desired = str((task or {}).get("DesiredState") or "running")
            if state in ("running", *sv.STARTING_STATES) and desired in ("running", *sv.STARTING_STATES):
                continue
            detail = f"task {task_id[:12]} is {state}"
            if state == "running":  # Swarm is taking it down: its node is down, or someone else updated it
                if down is None:
                    down = await client.down_nodes()
                node = str((task or {}).get("NodeID") or "")
                detail += f", its node {node[:12]} is down" if node in down else f", desired state {desired}"
            self._current.pop(wid, None)
            # The inspect that confirms this must read these task states, not a snapshot taken before them: one
            # taken between the container's death and Swarm marking its task failed still shows it running,
            # and the crash, no longer watched, was never reported again (seen in CI).
            self._last_snapshot = None
            err = ((task or {}).get("Status") or {}).get("Err")
            self.context.report(BackendEvent(wid, "exited", exit_code=sv.exit_code(task),
                                             detail=detail + (f": {err}" if err else "")))

    async def _learn_ports(self, client: SwarmClient) -> None:
        for found in await client.services(sv.owned_filters(self.box_id)):
            own = (found.get("Spec") or {}).get("Labels") or {}
            port, wid = own.get(sv.LABEL_PORT, ""), own.get(sv.LABEL_WORKSPACE)
            if port.isdigit() and wid:
                self._ports.reserve(int(port), wid)

    def _require_client(self) -> SwarmClient:
        if self._client is None:
            raise BackendError("the swarm backend is not running")
        return self._client

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except EngineUnreachable as exc:
            raise BackendError("the swarm manager is unreachable", detail=f"{doing}: {exc.message}") from None
        except EngineError as exc:
            raise BackendError(f"{doing} failed: {exc.message}") from None

    @asynccontextmanager
    async def _owning(self, wid: str) -> AsyncIterator[SwarmClient]:
        """The workspace's lifecycle call in progress: its tasks' exits are not reported meanwhile, and no
        snapshot taken before it is trusted after it."""
        self._busy.add(wid)
        self._last_snapshot = None
        try:
            yield self._require_client()
        finally:
            self._busy.discard(wid)
            self._last_snapshot = None

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self, spec: WorkloadSpec) -> Workload:
        """Deliver a new token secret, create or update the service at one replica, wait for its task to run."""
        self.admit(runtime=spec.runtime, tier=spec.tier)
        wid = spec.workspace_id
        async with self._owning(wid) as client:
            with self._errors("starting the service"):
                if not self.connected:
                    with trio.move_on_after(30):
                        await self._connected_event.wait()
                network_id = None if self.host_network else await self._ensure_network(client)
                existing = await self._services_of(client, wid)
                for extra in existing[1:]:  # never more than one: a leftover of a lost answer goes
                    await client.delete_service(extra["ID"])
                found = existing[0] if existing else None
                if found is not None:
                    await self._until_leaving_tasks_end(client, wid, str(found["ID"]),
                                                        scaled_to_zero=sv.replicas(found) == 0)
                image = docker_spec.image_ref(self.settings, spec.runtime)
                user = await self._image_user(client, image)
                files = await cf.current(client, self.box_id, wid)
                if files is None and spec.seed_files is not None:  # the first start: the template's files
                    files = await cf.write(client, self.box_id, wid,
                                           [e for e in ar.read(spec.seed_files) if e.name != ar.TOKEN_FILE])
                port = self._port_for(wid, found)
                generation = sv.new_generation()
                secret_name = sv.secret_name(self.box_id, wid, generation)
                secret_id = await client.create_secret(
                    secret_name, spec.auth_token or "",
                    sv.labels(self.box_id, wid, **{sv.LABEL_GENERATION: str(generation)}))
                force = int(((found or {}).get("Spec") or {}).get("TaskTemplate", {}).get("ForceUpdate", 0)) + 1
                body = sv.service_spec(self.settings, self.box_id, spec, image=image, port=port,
                                       network_id=network_id, secret=(secret_id, secret_name), user=user,
                                       force=force, configs=cf.mounts(files, user))
                if found is None:
                    service_id = await client.create_service(body)
                else:
                    service_id = found["ID"]
                    await self._update(client, service_id, body, int(found["Version"]["Index"]))
                await self._remove_secrets(client, wid, keep=secret_id)
                await cf.remove_unused(client, self.box_id, wid, keep=files)
                task = await self._wait_running(client, wid, service_id, force)
                node = await self._node(client, str(task.get("NodeID") or ""))
        self._current[wid] = str(task["ID"])
        handle: Handle = {"workspace_id": wid, "service_id": service_id, "secret_id": secret_id, "port": port,
                          "task_id": task["ID"], "node_id": task.get("NodeID"), "node": node.get("hostname"),
                          "node_addr": node.get("addr"), "created": time.time(),
                          "location": sv.location(node.get("hostname"), task.get("NodeID"))}
        return Workload(handle=handle, url=f"http://{node.get('addr') or '127.0.0.1'}:{port}")

    @staticmethod
    async def _update(client: SwarmClient, service_id: str, body: dict[str, Any], version: int) -> None:
        """Update the service to ``body`` at ``version``. Swarm bumps the version on its own (the updater records
        its progress in the service), so a version read before the start's other calls may be stale by now:
        "update out of sequence" is answered by reading it again, a few times."""
        for attempt in range(UPDATE_ATTEMPTS):
            try:
                await client.update_service(service_id, version, body)
                return
            except EngineError as exc:
                if "out of sequence" not in exc.message or attempt == UPDATE_ATTEMPTS - 1:
                    raise
            await trio.sleep(POLL)
            version = int((await client.service(service_id))["Version"]["Index"])

    async def _until_leaving_tasks_end(self, client: SwarmClient, wid: str, service_id: str, *,
                                       scaled_to_zero: bool) -> None:
        """Wait (bounded) until no task of an earlier stop still runs. A stop the box cut short (a resume right
        after a pause cancels the pause's stop) leaves its task running through its stop grace, with desired
        state ``remove`` or ``shutdown``; Swarm's scale-up does not wait for it, and on the workspace's port the
        new task could not bind: it would exit at once, a crash the box never caused."""
        reported = False
        with trio.move_on_after(LEAVING_WAIT) as waited:
            while (leaving := sv.leaving_tasks(await client.tasks({"service": [service_id]}),
                                               scaled_to_zero=scaled_to_zero)) and \
                    (leaving := sv.leaving_tasks(leaving, await client.down_nodes(),  # nodes read only then
                                                 scaled_to_zero=scaled_to_zero)):
                if not reported:
                    reported = True
                    self.context.report(BackendEvent(
                        wid, "progress", detail=f"swarm: waiting for task {str(leaving[0].get('ID'))[:12]} to stop"))
                await trio.sleep(POLL)
        if waited.cancelled_caught:
            log.warning("swarm: a task of workspace %s still runs %.0fs after its stop; starting anyway", wid,
                        LEAVING_WAIT)

    async def _services_of(self, client: SwarmClient, wid: str) -> list[dict[str, Any]]:
        found = await client.services(sv.owned_filters(self.box_id, wid))
        return sorted(found, key=lambda s: str(s.get("CreatedAt") or ""), reverse=True)

    def _port_for(self, wid: str, found: dict[str, Any] | None) -> int:
        previous = ((found or {}).get("Spec") or {}).get("Labels", {}).get(sv.LABEL_PORT, "")
        try:
            return self._ports.allocate(wid, int(previous) if previous.isdigit() else None)
        except LookupError as exc:
            raise BackendError(f"{exc} (SWARM_PORT_RANGE)") from None

    async def _image_user(self, client: SwarmClient, image: str) -> tuple[int, int]:
        """The uid:gid the image runs as, read on the manager when it has the image (root otherwise), so the
        token file is readable by the agent."""
        try:
            found = await client.image(image)
        except EngineNotFound:
            return 0, 0
        return docker_spec.image_user(found.get("Config"))

    async def _ensure_network(self, client: SwarmClient) -> str:
        async with self._network_lock:
            if self._network_id is None:
                name = self.settings.network
                found = await client.find_network(name)
                if found is None:
                    self._network_id = await client.create_network(sv.network_config(name, self.box_id))
                elif found.get("Driver") != "overlay":
                    raise BackendError(f"SWARM_NETWORK={name} is a {found.get('Driver')} network, not an overlay")
                else:
                    self._network_id = str(found["Id"])
            return self._network_id

    async def _wait_running(self, client: SwarmClient, wid: str, service_id: str, force: int) -> dict[str, Any]:
        """The task of this start (its template's ``ForceUpdate`` is this start's) once it runs; one that
        failed or was rejected is the start's failure, with Swarm's reason (no node satisfies the constraints,
        no such image, a network that cannot be joined, ...). Bounded by the caller."""
        seen = None
        while True:
            ours = [t for t in await client.tasks({"service": [service_id]})
                    if int((t.get("Spec") or {}).get("ForceUpdate") or 0) == force]
            task = sv.newest_task(ours)
            if task is not None:
                status = task.get("Status") or {}
                state = status.get("State")
                if state == "running":
                    return task
                if state in sv.FAILED_STATES or state in ("complete", "shutdown"):
                    raise BackendError(f"the service's task is {state}: {status.get('Err') or status.get('Message')}")
                if status.get("Err") and status.get("Err") != seen:  # e.g. "no suitable node": keeps pending
                    seen = status["Err"]
                    self.context.report(BackendEvent(wid, "progress", detail=f"swarm: {seen}"))
            await trio.sleep(POLL)

    async def _node(self, client: SwarmClient, node_id: str) -> dict[str, str]:
        """A node's hostname and address (remembered: a node keeps both while it is in the swarm)."""
        if not node_id:
            return {}
        if node_id in self._nodes:
            return self._nodes[node_id]
        try:
            node = await client.node(node_id)
        except EngineError:
            return {}
        found = {"hostname": str((node.get("Description") or {}).get("Hostname") or ""),
                 "addr": str((node.get("Status") or {}).get("Addr") or "")}
        self._nodes[node_id] = found
        return found

    async def _remove_secrets(self, client: SwarmClient, wid: str, keep: str | None = None) -> bool:
        """Remove the workspace's secrets but ``keep``; True when none is left over (one still in use stays)."""
        clean = True
        for secret in await client.secrets(sv.owned_filters(self.box_id, wid)):
            if secret.get("ID") == keep:
                continue
            try:
                await client.delete_secret(secret["ID"])
            except EngineNotFound:
                pass
            except EngineError as exc:
                if isinstance(exc, EngineUnreachable):
                    raise
                log.info("swarm: secret of workspace %s not removed yet: %s", wid, exc.message)
                clean = False
        return clean

    async def stop(self, handle: Handle, *, grace: float = 10.0) -> None:
        """Scale the service to 0 and wait (bounded) until its task no longer runs; no service is success."""
        wid = str(handle["workspace_id"])
        async with self._owning(wid) as client:
            self._current.pop(wid, None)
            with self._errors("stopping the service"):
                for found in await self._services_of(client, wid):
                    body = dict(found["Spec"])
                    body["Mode"] = {"Replicated": {"Replicas": 0}}
                    try:
                        await self._update(client, str(found["ID"]), body, int(found["Version"]["Index"]))
                    except EngineNotFound:
                        continue
                    with trio.move_on_after(grace + 10):
                        await self._until_no_tasks(client, found["ID"], live=True)

    async def destroy(self, handle: Handle) -> None:
        """Remove the service, wait for its tasks to go, then remove the workspace's secrets."""
        wid = str(handle["workspace_id"])
        async with self._owning(wid) as client:
            self._current.pop(wid, None)
            self._ports.release(wid)
            with self._errors("removing the service"):
                services = await self._services_of(client, wid)
                for found in services:
                    try:
                        await client.delete_service(found["ID"])
                    except EngineNotFound:
                        pass
                with trio.move_on_after(DESTROY_WAIT):
                    for found in services:
                        await self._until_no_tasks(client, found["ID"])
                    while True:
                        if await self._remove_secrets(client, wid) and await cf.remove_unused(
                                client, self.box_id, wid, None, everything=True):
                            break
                        await trio.sleep(POLL)

    @staticmethod
    async def _until_no_tasks(client: SwarmClient, service_id: str, *, live: bool = False) -> None:
        """Wait until the service has no task left (``live``: none running or on its way); the caller bounds it."""
        while True:
            try:
                tasks = await client.tasks({"service": [service_id]})
                if live:
                    tasks = [t for t in tasks if (t.get("Status") or {}).get("State") in
                             ("running", *sv.STARTING_STATES)]
                if not tasks:
                    return
            except EngineNotFound:  # the service is gone, and its tasks with it
                return
            await trio.sleep(POLL)

    async def _snapshot(self, client: SwarmClient) -> _Snapshot:
        """Every service and task of this box in two calls, shared by the calls of the next ``SNAPSHOT_TTL``
        (the 50 adoptions and inspections after a box restart would be 250 calls otherwise). Only ever
        trusted for "it runs": anything else is asked again precisely (see ``inspect``)."""
        async with self._snapshot_lock:
            found = self._last_snapshot
            if found is not None and trio.current_time() - found.at < SNAPSHOT_TTL:
                return found
            services = await client.services(sv.owned_filters(self.box_id))
            tasks = await client.tasks(sv.owned_filters(self.box_id))
            by_workspace: dict[str, dict[str, Any]] = {}
            for item in sorted(services, key=lambda x: str(x.get("CreatedAt") or "")):
                wid = ((item.get("Spec") or {}).get("Labels") or {}).get(sv.LABEL_WORKSPACE)
                if wid:
                    by_workspace[wid] = item
            by_service: dict[str, list[dict[str, Any]]] = {}
            for task in tasks:
                by_service.setdefault(str(task.get("ServiceID")), []).append(task)
            found = _Snapshot(trio.current_time(), by_workspace, by_service)
            self._last_snapshot = found
            return found

    async def _running_in_snapshot(self, wid: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """(service, running task) of the workspace from a recent snapshot, if it shows one running."""
        if wid in self._busy:
            return None
        snapshot = await self._snapshot(self._require_client())
        found = snapshot.services.get(wid)
        if found is None:
            return None
        task = sv.newest_task(snapshot.tasks.get(str(found["ID"]), []))
        if task is None or not sv.runs(task):
            return None
        return found, task

    async def inspect(self, handle: Handle) -> WorkloadStatus:
        wid = str(handle.get("workspace_id"))
        try:
            quick = await self._running_in_snapshot(wid)
        except (EngineError, BackendError):
            quick = None
        if quick is not None:
            if wid not in self._busy:  # it runs: watched again, whatever report came before (as below)
                self._current[wid] = str(quick[1]["ID"])
            return WorkloadStatus(WorkloadState.RUNNING, detail=f"task {str(quick[1]['ID'])[:12]} is running",
                                  started_at=sv.parse_time(quick[1].get("CreatedAt")))
        try:
            client = self._require_client()
            services = await self._services_of(client, wid)
            found = services[0] if services else None
            tasks = await client.tasks({"service": [found["ID"]]}) if found else []
        except EngineNotFound:  # removed between the two calls
            return WorkloadStatus(WorkloadState.MISSING)
        except (EngineError, BackendError) as exc:
            return WorkloadStatus(WorkloadState.UNKNOWN, detail=str(exc))
        state, detail = sv.task_state(found, tasks)
        task = sv.newest_task(tasks)
        started = None
        if state is WorkloadState.RUNNING and task is not None:
            started = sv.parse_time(task.get("CreatedAt"))
            if wid not in self._busy:
                self._current[wid] = str(task["ID"])
        code = sv.exit_code(task) if state is WorkloadState.STOPPED else None
        return WorkloadStatus(state, exit_code=code, detail=detail, started_at=started)

    async def adopt(self, handle: Handle) -> Handle | None:
        """The service as it is (never updated here), with its current task and node; None when it is gone."""
        wid = str(handle["workspace_id"])
        try:
            client = self._require_client()
            quick = await self._running_in_snapshot(wid)
            if quick is not None:
                found, task = quick
                tasks = [task]
            else:
                services = await self._services_of(client, wid)
                if not services:
                    return None
                found = services[0]
                tasks = await client.tasks({"service": [found["ID"]], "desired-state": ["running"]})
        except EngineNotFound:
            return None
        except EngineError:
            return handle  # cannot tell: keep it, the actor's inspect decides later
        own = (found.get("Spec") or {}).get("Labels") or {}
        port = own.get(sv.LABEL_PORT, "")
        if port.isdigit():
            self._ports.reserve(int(port), wid)
        adopted = {**handle, "service_id": found["ID"]}
        newest = sv.newest_task(tasks)
        if newest is not None and sv.runs(newest):
            task = newest
            self._current[wid] = str(task["ID"])
            node = await self._node(client, str(task.get("NodeID") or ""))
            adopted.update(task_id=task["ID"], node_id=task.get("NodeID"), node=node.get("hostname"),
                           node_addr=node.get("addr"), location=sv.location(node.get("hostname"), task.get("NodeID")))
        return adopted

    async def list_managed(self) -> list[Handle]:
        """Every service of this box, plus every workspace that has only secrets or configs left (a start cut
        short, or files written to a workspace never started)."""
        client = self._require_client()
        with self._errors("listing the services"):
            services = await client.services(sv.owned_filters(self.box_id))
            secrets = await client.secrets(sv.owned_filters(self.box_id))
            secrets += await client.configs(sv.owned_filters(self.box_id))
        found: dict[str, Handle] = {}
        for item in services:
            wid = ((item.get("Spec") or {}).get("Labels") or {}).get(sv.LABEL_WORKSPACE)
            if wid:
                found[wid] = {"workspace_id": wid, "service_id": item["ID"],
                              "created": sv.parse_time(item.get("CreatedAt"))}
        for item in secrets:
            wid = ((item.get("Spec") or {}).get("Labels") or {}).get(sv.LABEL_WORKSPACE)
            if wid and wid not in found:
                found[wid] = {"workspace_id": wid, "created": sv.parse_time(item.get("CreatedAt"))}
        return list(found.values())

    async def logs(self, handle: Handle, *, tail: int = 100) -> str:
        wid = str(handle["workspace_id"])
        client = self._require_client()
        with self._errors("reading the service's logs"):
            services = await self._services_of(client, wid)
            if not services:
                return ""
            return await client.service_logs(services[0]["ID"], tail)

    # -- config files: Docker configs in generations (see configs.py) ------------------------

    async def read_config_files(self, handle: Handle) -> bytes:
        with self._errors("reading the workspace's files"):
            entries = await cf.read(self._require_client(), self.box_id, str(handle["workspace_id"]))
        return ar.pack(entries)

    async def write_config_files(self, handle: Handle, archive: bytes, *, replace: bool = False) -> None:
        changes = [e for e in ar.read(archive) if e.name != ar.TOKEN_FILE]
        await self._new_generation(handle, lambda entries: cf.merged(entries, changes, replace=replace))

    async def delete_config_files(self, handle: Handle, paths: list[str]) -> None:
        cleaned = tuple(p for p in (ar.clean_path(p) for p in paths) if p != ar.TOKEN_FILE)
        if cleaned:
            await self._new_generation(handle, lambda entries: cf.merged(entries, [], removed=cleaned))

    async def _new_generation(self, handle: Handle, change: Callable[[list[ar.Entry]], list[ar.Entry]]) -> None:
        """The workspace's next generation of files; the running task keeps its own until the next start."""
        wid = str(handle["workspace_id"])
        client = self._require_client()
        with self._errors("writing the workspace's files"):
            await cf.write(client, self.box_id, wid, change(await cf.read(client, self.box_id, wid)))
