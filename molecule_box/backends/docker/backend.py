"""The built-in ``docker`` backend: one container per workspace on the local (or ``DOCKER_HOST``) engine.

Lifecycle calls come from each workspace's actor (one at a time per
workspace); ``serve()`` runs for the box's lifetime and owns the engine
connection: it subscribes to the engine's events (this box's containers
only), turns ``die``/``oom``/``health_status``/``destroy`` into
:class:`BackendEvent` reports, reconciles from ``list`` on every
(re)subscription and every 30 s (the stream is lossy), and reconnects with
backoff when the engine goes away. While it is away nothing is declared dead:
``inspect`` answers UNKNOWN.

The box's own stops are told apart from crashes here: containers the box is
stopping or removing are remembered, and their ``die`` is not reported.
"""

from __future__ import annotations

import importlib.metadata
import logging
import math
import re
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import trio

from ..base import (
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
from ..base import archive as ar
from . import engine_events as ev
from . import spec as sp
from .client import (
    DockerClient,
    EngineError,
    EngineNotFound,
    EngineUnreachable,
    open_client,
)
from .settings import HOST_NETWORK, DockerSettings

log = logging.getLogger(__name__)

RECONNECT_FIRST = 0.5
RECONNECT_MAX = 10.0
#: Reconciliation from ``list`` besides the one after each (re)subscription.
RECONCILE_INTERVAL = 30.0
#: Progress events of an image pull, at most one per this many seconds per workspace.
PROGRESS_EVERY = 1.0
#: Grace of the SIGTERM before SIGKILL when a workspace is deleted.
DESTROY_GRACE = 10.0
#: A start that finds the engine unreachable waits for it to come back (bounded by the actor's provisioning
#: deadline, never failing the workspace for the outage itself), retrying at least this often.
START_RETRY_EVERY = 5.0
#: Server errors (5xx) a start retries while the engine keeps answering, before it fails the workspace.
START_SERVER_ERRORS = 2
#: A files helper's removal (``rm -rf`` or clearing /configs) must finish within this many seconds.
HELPER_DEADLINE = 60.0
#: How long an image lookup is trusted (a removed image is noticed at create and looked up again).
IMAGE_CACHE_SECONDS = 60.0


class DockerBackend(BaseBackend):
    """Containers on a Docker engine, through aiodocker on a trio-asyncio loop (see :mod:`.client`)."""

    name = "docker"
    version = importlib.metadata.version("molecule-box")
    settings_type = DockerSettings

    def __init__(self, context: BackendContext[DockerSettings]) -> None:
        super().__init__(context)
        self.settings = context.settings
        self.box_id = context.box_id
        self.host_network = self.settings.workspace_network == HOST_NETWORK
        self._client: DockerClient | None = None
        #: Is the engine answering (last call of the watcher succeeded)?
        self.connected = False
        self.live_restore: bool | None = None
        self._host_cpus: int | None = None
        #: workspace id → its current container: events of any other container of it are stale.
        self._known: dict[str, str] = {}
        #: Containers the box itself is stopping or removing: their ``die``/``destroy`` is no crash.
        self._expected: set[str] = set()
        self._ports = sp.PortAllocator(*self.settings.workspace_ports)
        self._network_ready = False
        self._network_lock = trio.Lock()
        #: Set while the engine answers; starts wait on it during an outage.
        self._engine_up = trio.Event()
        #: image → (trio time until which it is trusted, its config): concurrent starts look it up once.
        self._images: dict[str, tuple[float, dict[str, Any]]] = {}
        self._image_locks: dict[str, trio.Lock] = {}

    def capabilities(self) -> Capabilities:
        return Capabilities(lifecycle=True, remote=False, tiers=frozenset({1, 2, 3, 4}), prewrites_token=True,
                            logs=True, files=True)

    def admit(self, *, runtime: str, tier: int) -> None:
        """Refuse a runtime outside ``ALLOWED_RUNTIMES``, or any workspace when its container could not reach the
        box, at create time (the API answers 400) and at every start (the workspace fails with the reason)."""
        allowed = self.settings.allowed_runtime_names
        if runtime not in allowed:
            raise BackendError(f"runtime {runtime!r} is not allowed here (ALLOWED_RUNTIMES: "
                               f"{', '.join(sorted(allowed - {'external'}))})")
        problem = sp.reach_problem(self.settings, self.context.platform_url, self.context.bind_addr)
        if problem is not None:
            raise BackendError(problem)

    # -- the engine connection ----------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the engine connection. Settings whose containers could not reach the box are said once here, and
        ``admit`` refuses docker workspaces with the same reason; the box itself still starts, because its remote
        agents need none of it (refusing the whole start over a backend they do not use broke the first run
        of everyone with Docker installed and only remote agents in mind)."""
        async with open_client(self.settings.docker_host) as client:
            problem = sp.reach_problem(self.settings, self.context.platform_url, self.context.bind_addr)
            if problem is not None:
                log.warning("docker: %s; docker workspaces are refused until it is fixed", problem)
            self._client = client
            send, receive = trio.open_memory_channel[dict[str, Any]](math.inf)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._watch_engine, client, send)
                    nursery.start_soon(self._handle_events, receive)
                    task_status.started()
            finally:
                self._client = None
                self.connected = False

    async def _watch_engine(self, client: DockerClient, send: trio.MemorySendChannel[dict[str, Any]]) -> None:
        """Connect, subscribe, reconcile; on any failure reconnect with backoff, forever."""
        delay = RECONNECT_FIRST
        announced_down = False
        while True:
            reason = ""
            try:
                info = await client.info()
            except EngineError as exc:
                reason = exc.message
            except Exception as exc:  # a bug here must not take the box down: log it and reconnect
                log.exception("docker: engine watcher failed")
                reason = f"{type(exc).__name__}: {exc}"
            else:
                self._host_cpus = int(info.get("NCPU") or 0) or None
                self.live_restore = bool(info.get("LiveRestoreEnabled"))
                log.info("docker: connected to engine %s (%s CPUs, live-restore %s)", info.get("ServerVersion", "?"),
                         self._host_cpus, "on" if self.live_restore else "off")
                self.connected = True
                self._engine_up.set()
                announced_down = False
                delay = RECONNECT_FIRST
                reason = await self._subscribed(client, send)
            if self.connected or not announced_down:
                log.warning("docker: engine unavailable (%s); reconnecting", reason)
                announced_down = True
            self._mark_down()
            await trio.sleep(delay)
            delay = min(RECONNECT_MAX, delay * 2)

    async def _subscribed(self, client: DockerClient, send: trio.MemorySendChannel[dict[str, Any]]) -> str:
        """Read the event stream (the reading task only enqueues) while reconciling periodically.
        Returns why it ended."""
        failure: list[str] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._reconcile_loop, nursery.cancel_scope, failure)
            try:
                await client.watch_events(ev.event_filters(self.box_id), send.send_nowait)
                failure.append("the engine closed the event stream")
            except EngineError as exc:
                failure.append(exc.message)
            except Exception as exc:  # a bug here must not take the box down: log it and resubscribe
                log.exception("docker: event stream failed")
                failure.append(f"{type(exc).__name__}: {exc}")
            nursery.cancel_scope.cancel()
        return failure[0] if failure else "unknown"

    async def _reconcile_loop(self, scope: trio.CancelScope, failure: list[str]) -> None:
        await trio.sleep(0.1)  # let the subscription open first, so nothing falls between list and stream
        while True:
            try:
                await self.reconcile()
            except EngineError as exc:
                failure.append(f"reconciliation failed: {exc.message}")
                scope.cancel()  # resubscribe: an engine that does not answer list will not send events either
                return
            except Exception:  # a bug here must not take the box down
                log.exception("docker: reconciliation failed")
            await trio.sleep(RECONCILE_INTERVAL)

    async def reconcile(self) -> None:
        """Compare what the engine runs with what this backend started or adopted; report every difference
        as an event (the actor confirms with ``inspect``). Also re-learns which host ports are taken."""
        client = self._require_client()
        containers = await client.list_containers(sp.owned_filters(self.box_id))
        by_id = {c.get("Id", ""): c for c in containers}
        for summary in containers:
            found = summary.get("Labels") or {}
            port = found.get(sp.LABEL_PORT)
            if port and port.isdigit() and found.get(sp.LABEL_WORKSPACE):
                self._ports.reserve(int(port), found[sp.LABEL_WORKSPACE])
        for workspace_id, container_id in list(self._known.items()):
            if container_id in self._expected:
                continue
            seen = by_id.get(container_id)
            if seen is None:
                self.context.report(BackendEvent(workspace_id, "removed", detail="container is gone (reconciled)"))
            elif seen.get("State") != "running":
                self.context.report(BackendEvent(workspace_id, "exited",
                                                 detail=f"container is {seen.get('State')} (reconciled)"))
            else:  # "Up 5 minutes (unhealthy)": the engine sends health_status only on a change
                health = ev.health_from_status(str(seen.get("Status") or ""))
                if health is not None:
                    self.context.report(BackendEvent(workspace_id, "health", health=health))

    async def _handle_events(self, receive: trio.MemoryReceiveChannel[dict[str, Any]]) -> None:
        async for raw in receive:
            try:
                self._handle_event(raw)
            except Exception:  # one odd event must not stop the stream
                log.exception("docker: could not handle event %r", raw)

    def _handle_event(self, raw: dict[str, Any]) -> None:
        """Report one engine event to its workspace's actor, unless it is stale or the box's own doing."""
        event = ev.parse(raw, self.box_id)
        if event is None or event.action == "start":
            return
        current = self._known.get(event.workspace_id)
        if current is not None and current != event.container_id:
            return  # a replaced container's last words
        if event.action in ("die", "destroy") and event.container_id in self._expected:
            if event.action == "destroy":
                self._expected.discard(event.container_id)  # gone for good: nothing more to tell apart
            return  # the box stopped it
        report = event.backend_event()
        if report is not None:
            self.context.report(report)

    def _mark_down(self) -> None:
        self.connected = False
        self._network_ready = False
        if self._engine_up.is_set():
            self._engine_up = trio.Event()

    def _require_client(self) -> DockerClient:
        if self._client is None:
            raise BackendError("the docker backend is not running")
        return self._client

    @contextmanager
    def _engine_errors(self, doing: str) -> Iterator[None]:
        """Engine errors → :class:`BackendError`."""
        try:
            yield
        except EngineUnreachable as exc:
            raise BackendError("the Docker engine is unreachable", detail=f"{doing}: {exc.message}") from None
        except EngineError as exc:
            raise BackendError(f"{doing} failed: {exc.message}") from None

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self, spec: WorkloadSpec) -> Workload:
        """Create and start the container (replacing any leftover of the workspace).

        An engine outage is not the workspace's failure: when the engine is unreachable, or answers with a
        server error (as it does while shutting down), start waits for it and tries again; start is
        idempotent, and the actor's provisioning deadline bounds the wait. Refusals (4xx: bad image, bad
        settings) and server errors of an engine that stays up fail at once with the engine's message.
        """
        self.admit(runtime=spec.runtime, tier=spec.tier)
        server_errors = 0
        looked_again = False
        while True:
            client = self._require_client()
            try:
                return await self._start_once(client, spec)
            except EngineUnreachable as exc:
                reason = exc.message
            except EngineNotFound as exc:
                if looked_again:  # e.g. the image vanished between lookup and create: once more from the top
                    raise BackendError(f"starting the container failed: {exc.message}") from None
                looked_again = True
                continue
            except EngineError as exc:
                if exc.status < 500:
                    raise BackendError(f"starting the container failed: {exc.message}") from None
                server_errors += 1
                if server_errors > START_SERVER_ERRORS and await self._engine_answers(client):
                    raise BackendError(f"starting the container failed: {exc.message}") from None
                reason = exc.message
            log.warning("docker: engine trouble while starting workspace %s (%s); trying again", spec.workspace_id,
                        reason)
            if not await self._engine_answers(client):
                self._mark_down()
            with trio.move_on_after(START_RETRY_EVERY):
                await self._engine_up.wait()
                await trio.sleep(1.0)  # a restarting engine answers before it is quite ready

    async def _engine_answers(self, client: DockerClient) -> bool:
        try:
            await client.info()
        except EngineError:
            return False
        return True

    async def _start_once(self, client: DockerClient, spec: WorkloadSpec) -> Workload:
        """One attempt; engine errors come out raw (``start`` decides which ones are worth another try)."""
        wid = spec.workspace_id
        name = sp.container_name(wid)
        image = sp.image_ref(self.settings, spec.runtime)
        image_config = await self._image_config(client, image, wid)
        if not self.host_network:
            await self._ensure_network(client)
        port = self._port_for(spec)
        previous = (spec.previous or {}).get("container_id")
        if previous:  # a restart: the old container goes first (its volumes stay)
            await self._remove_container(client, str(previous))
        config = sp.container_config(spec, self.settings, box_id=self.box_id, image=image, port=port,
                                     host_cpus=self._host_cpus,
                                     own_healthcheck=sp.has_own_healthcheck(image_config))
        try:
            container_id = await client.create_container(config, name)
        except EngineNotFound:
            self._images.pop(image, None)  # removed since it was looked up: look (and pull) again next time
            raise
        except EngineError as exc:
            if exc.status != 409:
                raise
            # The name is taken: a leftover of this workspace (a start cut short) is replaced, never
            # duplicated; anything else with that name is not this box's to remove.
            await self._remove_containers(client, wid)
            try:
                container_id = await client.create_container(config, name)
            except EngineError as again:
                if again.status == 409:
                    raise BackendError(f"a container named {name} already exists and does not belong to this "
                                       "box; remove or rename it") from None
                raise
        self._known[wid] = container_id  # from now on, events of any older container of it are stale
        try:
            if spec.seed_files is not None and not await self._has_config(client, container_id):
                uid, gid = sp.image_user(image_config)
                await client.put_archive(container_id, sp.TOKEN_PATH, _owned(spec.seed_files, uid, gid))
            if spec.auth_token is not None:
                uid, gid = sp.image_user(image_config)
                await client.put_archive(container_id, sp.TOKEN_PATH,
                                         sp.token_archive(spec.auth_token, uid=uid, gid=gid))
            await client.start_container(container_id)
            url = await self._url_of(client, container_id, port)
        except BaseException:
            self._expected.add(container_id)
            with trio.CancelScope(shield=True), trio.move_on_after(15):
                try:
                    await client.remove_container(container_id)
                except EngineError:
                    log.warning("docker: could not remove the half-started container %s", container_id[:12])
            raise
        handle: Handle = {"workspace_id": wid, "container_id": container_id, "name": name, "image": image,
                          "network": self.settings.workspace_network}
        if port is not None:
            handle["port"] = port
        return Workload(handle=handle, url=url)

    async def _has_config(self, client: DockerClient, container_id: str) -> bool:
        try:
            await client.get_archive(container_id, f"{sp.TOKEN_PATH}/config.yaml")
        except EngineNotFound:
            return False
        return True

    def _port_for(self, spec: WorkloadSpec) -> int | None:
        if not self.host_network:
            return None
        previous = (spec.previous or {}).get("port")
        try:
            return self._ports.allocate(spec.workspace_id, previous if isinstance(previous, int) else None)
        except LookupError as exc:
            raise BackendError(f"{exc} (WORKSPACE_PORT_RANGE)") from None

    async def _url_of(self, client: DockerClient, container_id: str, port: int | None) -> str:
        if port is not None:
            return f"http://127.0.0.1:{port}"
        for _ in range(10):  # the engine publishes the port as the container starts
            data = await client.inspect_container(container_id)
            bindings = ((data.get("NetworkSettings") or {}).get("Ports") or {}).get(f"{sp.AGENT_PORT}/tcp") or []
            host_port = next((b.get("HostPort") for b in bindings if b.get("HostPort")), None)
            if host_port:
                return f"http://127.0.0.1:{host_port}"
            await trio.sleep(0.1)
        raise BackendError("the container started but its port was not published")

    async def _image_config(self, client: DockerClient, image: str, workspace_id: str) -> dict[str, Any]:
        """The image's config, looked up (or pulled) once per image for concurrent starts, then cached briefly."""
        cached = self._images.get(image)
        if cached is not None and cached[0] > trio.current_time():
            return cached[1]
        lock = self._image_locks.setdefault(image, trio.Lock())
        async with lock:
            cached = self._images.get(image)
            if cached is not None and cached[0] > trio.current_time():
                return cached[1]
            config = await self._ensure_image(client, image, workspace_id)
            self._images[image] = (trio.current_time() + IMAGE_CACHE_SECONDS, config)
            return config

    async def _ensure_image(self, client: DockerClient, image: str, workspace_id: str) -> dict[str, Any]:
        """The image's config, pulling the image first when the engine does not have it (bounded)."""
        try:
            return dict((await client.inspect_image(image)).get("Config") or {})
        except EngineNotFound:
            pass
        repo, tag = sp.split_image(image)
        self.context.report(BackendEvent(workspace_id, "progress", detail=f"pulling image {image}"))
        last = [time.monotonic()]

        def progress(record: dict[str, Any]) -> None:
            now = time.monotonic()
            if now - last[0] < PROGRESS_EVERY:
                return
            last[0] = now
            status = str(record.get("status") or "")
            bar = str(record.get("progress") or "")
            self.context.report(BackendEvent(workspace_id, "progress",
                                             detail=f"pulling image {image}: {status} {bar}".strip()))

        timeout = self.settings.image_pull_timeout_seconds
        try:
            with trio.fail_after(timeout):
                await client.pull(repo, tag, progress)
        except trio.TooSlowError:
            raise BackendError(f"pulling image {image} did not finish within {timeout:g}s") from None
        except EngineUnreachable:
            raise
        except EngineError as exc:
            raise BackendError(f"image {image} could not be pulled: {exc.message}") from None
        self.context.report(BackendEvent(workspace_id, "progress", detail=f"pulled image {image}"))
        return dict((await client.inspect_image(image)).get("Config") or {})

    async def _ensure_network(self, client: DockerClient) -> None:
        if self._network_ready:
            return
        async with self._network_lock:
            if self._network_ready:
                return
            name = self.settings.workspace_network
            if await client.find_network(name) is None:
                try:
                    await client.create_network(sp.network_config(name, self.box_id))
                    log.info("docker: created network %s", name)
                except EngineError as exc:
                    if exc.status != 409:  # another box created it meanwhile
                        raise
            self._network_ready = True

    async def _remove_container(self, client: DockerClient, container_id: str) -> None:
        """Remove one container if it is this box's (gone already is fine)."""
        try:
            data = await client.inspect_container(container_id)
        except EngineNotFound:
            return
        if not sp.is_owned((data.get("Config") or {}).get("Labels"), self.box_id):
            return
        self._expected.add(data["Id"])
        try:
            await client.remove_container(data["Id"])
        except EngineNotFound:
            pass

    async def _remove_containers(self, client: DockerClient, workspace_id: str, *, grace: float | None = None) -> None:
        """Remove every container of this box's workspace (SIGTERM and ``grace`` first, if given)."""
        for summary in await client.list_containers(sp.owned_filters(self.box_id, workspace_id)):
            container_id = summary["Id"]
            self._expected.add(container_id)
            try:
                if grace is not None and summary.get("State") == "running":
                    await client.stop_container(container_id, grace)
                await client.remove_container(container_id)
            except EngineNotFound:
                pass
            if self._known.get(workspace_id) == container_id:
                del self._known[workspace_id]

    async def _resolve(self, client: DockerClient, handle: Handle) -> dict[str, Any] | None:
        """The handle's container as the engine sees it, or None when it is gone or not this box's."""
        ref = handle.get("container_id") or sp.container_name(str(handle.get("workspace_id", "")))
        try:
            data = await client.inspect_container(ref)
        except EngineNotFound:
            return None
        if not sp.is_owned((data.get("Config") or {}).get("Labels"), self.box_id):
            return None
        return data

    async def stop(self, handle: Handle, *, grace: float = 10.0) -> None:
        client = self._require_client()
        with self._engine_errors("stopping the container"):
            data = await self._resolve(client, handle)
            if data is None:
                return
            container_id = data["Id"]
            self._expected.add(container_id)
            if not (data.get("State") or {}).get("Running"):
                return
            try:
                await client.stop_container(container_id, grace)  # SIGTERM, then SIGKILL after grace
            except EngineNotFound:
                return

    async def destroy(self, handle: Handle) -> None:
        client = self._require_client()
        workspace_id = str(handle["workspace_id"])
        with self._engine_errors("removing the container"):
            data = await self._resolve(client, handle)
            if data is not None:  # by id, even if it lost its workspace label somehow
                self._expected.add(data["Id"])
                try:
                    if (data.get("State") or {}).get("Running"):
                        await client.stop_container(data["Id"], DESTROY_GRACE)
                    await client.remove_container(data["Id"])
                except EngineNotFound:
                    pass
            await self._remove_containers(client, workspace_id, grace=DESTROY_GRACE)
            for volume in sp.volume_names(workspace_id):
                try:
                    found = await client.inspect_volume(volume)
                except EngineNotFound:
                    continue
                if sp.is_owned(found.get("Labels"), self.box_id):
                    try:
                        await client.remove_volume(volume)
                    except EngineNotFound:
                        pass
        self._known.pop(workspace_id, None)
        self._ports.release(workspace_id)

    async def inspect(self, handle: Handle) -> WorkloadStatus:
        client = self._client
        if client is None:
            return WorkloadStatus(WorkloadState.UNKNOWN, detail="the docker backend is not running")
        try:
            data = await self._resolve(client, handle)
        except EngineError as exc:
            return WorkloadStatus(WorkloadState.UNKNOWN, detail=f"Docker engine: {exc.message}")
        if data is None:
            return WorkloadStatus(WorkloadState.MISSING)
        return status_of(data)

    async def adopt(self, handle: Handle) -> Handle | None:
        client = self._require_client()
        workspace_id = str(handle["workspace_id"])
        try:
            data = await self._resolve(client, handle)
        except EngineError:
            return handle  # cannot tell now: keep it, reconciliation reports what it finds later
        if data is None:
            self._known.pop(workspace_id, None)
            return None
        self._known[workspace_id] = data["Id"]
        adopted = dict(handle, container_id=data["Id"])
        port = ((data.get("Config") or {}).get("Labels") or {}).get(sp.LABEL_PORT)
        if port and port.isdigit():
            self._ports.reserve(int(port), workspace_id)
            adopted["port"] = int(port)
        return adopted

    async def list_managed(self) -> list[Handle]:
        """This box's containers, plus one handle per workspace that has only volumes left.

        Volumes outlive their container by design (a restart keeps them), and a failed start leaves them with
        no container and no handle stored: if the workspace's cleanup is then cut short (the box stopped or
        killed, its actor crashed), only its volumes are left, and the orphan sweep must see them too."""
        client = self._require_client()
        with self._engine_errors("listing containers and volumes"):
            containers = await client.list_containers(sp.owned_filters(self.box_id))
            volumes = await client.list_volumes(sp.owned_filters(self.box_id))
        handles: list[Handle] = []
        for summary in containers:
            found = summary.get("Labels") or {}
            names = summary.get("Names") or [""]
            handles.append({
                "workspace_id": found.get(sp.LABEL_WORKSPACE, ""),
                "container_id": summary.get("Id"),
                "name": str(names[0]).lstrip("/"),
                "state": summary.get("State"),
                "created": summary.get("Created"),
            })
        listed = {handle["workspace_id"] for handle in handles}
        for volume in volumes:
            workspace_id = (volume.get("Labels") or {}).get(sp.LABEL_WORKSPACE, "")
            if workspace_id and workspace_id not in listed:
                listed.add(workspace_id)
                handles.append({"workspace_id": workspace_id, "name": volume.get("Name"),
                                "created": _timestamp(volume.get("CreatedAt"))})
        return handles

    async def logs(self, handle: Handle, *, tail: int = 100) -> str:
        client = self._client
        if client is None:
            return ""
        try:
            data = await self._resolve(client, handle)
            if data is None:
                return ""
            return await client.logs(data["Id"], tail)
        except EngineError:
            return ""

    # -- config files (Capabilities.files) -------------------------------------------------------
    #
    # Every operation mounts the workspace's config volume in a short-lived helper container of the workspace's
    # image (the volume is shared with the workload, so a running agent sees a write at once): the same path
    # whether the workload runs, is stopped, or its container is gone. The whole tree is read with the
    # engine's archive API and checked here, so a link in the volume is listed as a link and never followed.

    @asynccontextmanager
    async def _helper(self, handle: Handle, script: str = "true",
                      args: list[str] | None = None) -> AsyncIterator[tuple[DockerClient, str]]:
        client = self._require_client()
        workspace_id = str(handle.get("workspace_id") or "")
        image = handle.get("image")
        if not workspace_id or not isinstance(image, str):
            raise BackendError("the workspace has no container yet: its files exist from its first start")
        with self._engine_errors("opening the workspace's config volume"):
            config = sp.files_helper_config(self.box_id, workspace_id, image, script, args or [])
            helper = await client.create_container(config, f"{sp.container_name(workspace_id)}-files-"
                                                   f"{secrets.token_hex(4)}")
        try:
            yield client, helper
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(15):
                try:
                    await client.remove_container(helper)
                except EngineError:
                    log.warning("docker: could not remove the files helper %s", helper[:12])

    async def _run_helper(self, client: DockerClient, helper: str) -> None:
        await client.start_container(helper)
        code = await client.wait_container(helper, HELPER_DEADLINE)
        if code != 0:
            raise BackendError(f"changing the workspace's files failed (exit code {code})",
                               detail=await client.logs(helper, 20))

    async def _tree(self, client: DockerClient, helper: str) -> bytes:
        """The engine's tar of /configs, names made relative to it (``configs/a`` → ``a``)."""
        raw = await client.get_archive(helper, sp.TOKEN_PATH)
        return ar.strip_root(raw, "configs")

    async def read_config_files(self, handle: Handle) -> bytes:
        async with self._helper(handle) as (client, helper):
            with self._engine_errors("reading the workspace's files"):
                return await self._tree(client, helper)

    async def write_config_files(self, handle: Handle, archive: bytes, *, replace: bool = False) -> None:
        entries = [e for e in ar.read(archive) if e.name != ar.TOKEN_FILE]
        script = sp.CLEAR_CONFIGS if replace else "true"
        async with self._helper(handle, script) as (client, helper):
            with self._engine_errors("writing the workspace's files"):
                if not replace:
                    ar.check_inside(await self._tree(client, helper), [e.name for e in entries])
                else:
                    await self._run_helper(client, helper)
                uid, gid = sp.image_user(await self._image_config(client, str(handle["image"]),
                                                                  str(handle["workspace_id"])))
                await client.put_archive(helper, sp.TOKEN_PATH, ar.pack(entries, uid=uid, gid=gid))

    async def delete_config_files(self, handle: Handle, paths: list[str]) -> None:
        cleaned = [p for p in (ar.clean_path(p) for p in paths) if p != ar.TOKEN_FILE]
        if not cleaned:
            return
        async with self._helper(handle, sp.REMOVE_CONFIGS, cleaned) as (client, helper):
            with self._engine_errors("deleting the workspace's files"):
                ar.check_inside(await self._tree(client, helper), cleaned)
                await self._run_helper(client, helper)


def _owned(archive: bytes, uid: int, gid: int) -> bytes:
    """``archive`` (checked) again, every member owned by the agent's ``uid:gid``."""
    return ar.pack(ar.read(archive), uid=uid, gid=gid)


_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?")


def _timestamp(text: str | None) -> float | None:
    """Docker's RFC 3339 timestamps → unix seconds (None for the zero time): a container's are UTC with
    nanoseconds, a volume's whole seconds, possibly in the engine's local time zone."""
    if not text or text.startswith("0001-"):
        return None
    from datetime import datetime

    parsed = _RFC3339.fullmatch(text)
    if parsed is None:
        return None
    main, digits, zone = parsed.groups()
    fraction = (digits or "")[:6]
    try:
        stamp = datetime.fromisoformat(main + (zone if zone and zone != "Z" else "+00:00")).timestamp()
    except ValueError:
        return None
    return stamp + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)


def status_of(data: dict[str, Any]) -> WorkloadStatus:
    """``docker inspect`` → :class:`WorkloadStatus`."""
    state = data.get("State") or {}
    status = state.get("Status")
    health = (state.get("Health") or {}).get("Status")
    if status == "running":
        kind = WorkloadState.RUNNING
    elif status in ("created", "restarting"):
        kind = WorkloadState.STARTING
    else:  # exited, dead, paused, removing
        kind = WorkloadState.STOPPED
    return WorkloadStatus(
        state=kind,
        exit_code=state.get("ExitCode") if kind is WorkloadState.STOPPED else None,
        oom_killed=bool(state.get("OOMKilled")),
        health=health,
        detail=state.get("Error") or None,
        started_at=_timestamp(state.get("StartedAt")),
    )
