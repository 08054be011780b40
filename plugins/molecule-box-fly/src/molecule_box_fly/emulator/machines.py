"""The emulated Machines API: apps of machines with Fly's state machine, ``/wait``, leases and fault knobs.

What it serves follows the public Machines API (``/v1/apps/{app}/machines``): both auth schemes (``Bearer``
and ``FlyV1``), ``config.image`` required, timed transitions (``created → starting → started → stopping →
stopped``, ``destroying → destroyed``), ``/wait`` long-polls answering 408 on timeout, a started machine
refusing deletion without ``?force=true``, the ``metadata.{key}`` list filter, leases (201, or 409 when held;
a held lease's nonce required on every change), and ``{"error": ...}`` bodies.

Faults and latency are knobs (``POST /_emulator/faults``, or the command line): a capacity error on the next
creates, 5xx on the next calls, dropped connections, a failed launch, and the time each step takes. In
Docker-backed mode each started machine is a real container of a local image on the host network, with the
machine's ``files`` copied in before it starts, so an agent in it boots, reads its token file and registers;
when the container's process exits, the machine's ``restart`` policy applies as flyd applies it (``on-failure``:
restarted up to ``max_retries`` times after a non-zero exit, then ``stopped``, each exit an ``exit`` event).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import logging
import re
import secrets
import shutil
import socket
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import trio

from .http import Drop, Request, Response

log = logging.getLogger("molecule_box_fly.emulator")

ROUTE = re.compile(r"^/v1/apps/(?P<app>[^/]+)/machines"
                   r"(?:/(?P<id>[^/]+)(?:/(?P<action>[a-z]+)(?:/(?P<key>[^/]+))?)?)?/?$")
WAIT_STATES = {"started", "stopped", "suspended", "destroyed"}
LEASE_HEADER = "fly-machine-lease-nonce"
#: A docker label on every container the emulator runs, valued with the emulator's id.
DOCKER_LABEL = "molecule-box-fly-emulator"
#: Restarts of the ``on-failure`` policy when the config gives no ``max_retries`` (Fly's documented default).
DEFAULT_MAX_RETRIES = 10


@dataclasses.dataclass
class Faults:
    """Knobs. Counts are consumed one per matching request; times are seconds."""

    capacity_errors: int = 0  # the next N creates answer 412 "insufficient resources"
    server_errors: int = 0  # the next N API calls answer 503
    drop_connections: int = 0  # the next N API calls close the connection without an answer
    launch_failures: int = 0  # the next N launches end in state "failed" (exit code 1)
    create_seconds: float = 0.0  # latency of a create (and of an update) before it answers
    start_seconds: float = 0.5  # created/stopped → started
    stop_seconds: float = 0.3  # started → stopped
    destroy_seconds: float = 0.1  # destroying → destroyed


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")


def error(status: int, message: str) -> Response:
    return Response(status, {"error": message})


@dataclasses.dataclass
class Machine:
    id: str
    name: str
    region: str
    config: dict[str, Any]
    instance_id: str
    state: str = "created"
    version: int = 1
    created_at: str = dataclasses.field(default_factory=now_iso)
    updated_at: str = dataclasses.field(default_factory=now_iso)
    events: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    lease: dict[str, Any] | None = None
    changed: trio.Event = dataclasses.field(default_factory=trio.Event)
    transition: trio.CancelScope | None = None
    container: str | None = None
    #: Restarts by the machine's restart policy since the API last started it.
    restarts: int = 0

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "state": self.state, "region": self.region,
                "instance_id": self.instance_id, "version": str(self.version), "private_ip": "fdaa::3",
                "config": self.config, "image_ref": {"repository": self.config.get("image", "")},
                "created_at": self.created_at, "updated_at": self.updated_at,
                "events": sorted(self.events, key=lambda e: -e["timestamp"]), "checks": [],
                "host_status": "ok", "cordoned": False}

    def set_state(self, state: str, event: dict[str, Any] | None = None) -> None:
        self.state = state
        self.updated_at = now_iso()
        if event is not None:
            self.events.append({"id": secrets.token_hex(8), "source": "flyd",
                                "timestamp": int(time.time() * 1000), **event})
        self.changed.set()
        self.changed = trio.Event()


class Emulator:
    """The state and the request handler. ``run`` it in a nursery (it drives the timed transitions)."""

    def __init__(self, *, token: str, apps: set[str], faults: Faults | None = None,
                 docker_image: str | None = None) -> None:
        self.token = token.removeprefix("FlyV1 ")
        self.apps: dict[str, dict[str, Machine]] = {app: {} for app in apps}
        self.faults = faults or Faults()
        self.docker_image = docker_image
        self.id = secrets.token_hex(4)
        self.calls: Counter[str] = Counter()
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            if self.docker_image:
                with trio.CancelScope(shield=True), trio.move_on_after(60):
                    await remove_containers(self.id)

    # -- request handling ----------------------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        if request.path.startswith("/_emulator/"):
            return self.control(request)
        auth = request.headers.get("authorization", "")
        if auth not in (f"Bearer {self.token}", f"FlyV1 {self.token}"):
            return error(401, "unauthorized")
        match = ROUTE.match(request.path)
        if match is None:
            return error(404, "not found")
        route = "/".join(filter(None, ("machines", match["id"] and "{id}", match["action"])))
        self.calls[f"{request.method} {route}"] += 1
        if self.faults.drop_connections > 0:
            self.faults.drop_connections -= 1
            raise Drop
        if self.faults.server_errors > 0:
            self.faults.server_errors -= 1
            return error(503, "service unavailable (emulated)")
        machines = self.apps.get(match["app"])
        if machines is None:
            return error(404, f"app {match['app']} not found")
        try:
            body = request.json()
        except ValueError:
            return error(400, "invalid JSON body")
        if match["id"] is None:
            if request.method == "GET":
                return self.list(machines, request)
            if request.method == "POST":
                return await self.create(machines, body)
            return error(405, "method not allowed")
        machine = machines.get(match["id"])
        if machine is None:
            return error(404, f"machine {match['id']} not found")
        return await self.on_machine(machine, request.method, match["action"], match["key"], request, body)

    def control(self, request: Request) -> Response:
        """``GET /_emulator/stats`` (calls by route), ``POST /_emulator/faults`` (set knobs), ``POST
        /_emulator/reset-stats``. Unauthenticated: the emulator listens on loopback for its tester."""
        if request.path == "/_emulator/faults" and request.method == "POST":
            try:
                changes = request.json() or {}
                for key, value in changes.items():
                    kind = type(getattr(self.faults, key))
                    setattr(self.faults, key, kind(value))
            except (ValueError, AttributeError, TypeError) as exc:
                return error(400, f"bad faults: {exc}")
            return Response(200, dataclasses.asdict(self.faults))
        if request.path == "/_emulator/stats" and request.method == "GET":
            states = Counter(m.state for machines in self.apps.values() for m in machines.values())
            return Response(200, {"calls": dict(self.calls), "total": sum(self.calls.values()),
                                  "machines": sum(len(m) for m in self.apps.values()), "states": dict(states)})
        if request.path == "/_emulator/reset-stats" and request.method == "POST":
            self.calls.clear()
            return Response(200, {})
        return error(404, "not found")

    def list(self, machines: dict[str, Machine], request: Request) -> Response:
        include_deleted = request.arg("include_deleted", "false") in ("true", "1")
        region = request.arg("region")
        wanted = {k.removeprefix("metadata."): v[-1] for k, v in request.query.items() if k.startswith("metadata.")}
        found = [m.public() for m in machines.values()
                 if (include_deleted or m.state != "destroyed") and (region is None or m.region == region)
                 and all((m.config.get("metadata") or {}).get(k) == v for k, v in wanted.items())]
        return Response(200, found)

    async def create(self, machines: dict[str, Machine], body: Any) -> Response:
        problem = check_config(body)
        if problem:
            return error(400, problem)
        if self.faults.create_seconds:
            await trio.sleep(self.faults.create_seconds)
        if self.faults.capacity_errors > 0:
            self.faults.capacity_errors -= 1
            return error(412, "insufficient resources available to fulfill request: could not reserve resource "
                              "for machine (emulated capacity error)")
        name = body.get("name") or f"machine-{secrets.token_hex(4)}"
        if any(m.name == name and m.state != "destroyed" for m in machines.values()):
            return error(409, f"a machine named {name} already exists")
        machine = Machine(id=secrets.token_hex(7), name=name, region=body.get("region") or "ord",
                          config=body["config"], instance_id=instance_id())
        machines[machine.id] = machine
        machine.set_state("created", {"type": "launch", "status": "created"})
        if not body.get("skip_launch"):
            self.launch(machine)
        return Response(200, machine.public())

    async def on_machine(self, machine: Machine, method: str, action: str | None, key: str | None,
                         request: Request, body: Any) -> Response:
        if action == "wait" and method == "GET":
            return await self.wait(machine, request)
        if action == "lease":
            return self.on_lease(machine, method, request, body)
        if action is None and method == "GET":
            return Response(200, machine.public())
        if action == "metadata" and method == "GET":
            return Response(200, dict(machine.config.get("metadata") or {}))
        # Everything below changes the machine: a held lease's nonce is required.
        if machine.lease and machine.lease["expires_at"] > time.time():
            if request.headers.get(LEASE_HEADER) != machine.lease["nonce"]:
                return error(409, f"machine {machine.id} is currently leased: send its nonce in {LEASE_HEADER}")
        if machine.state == "destroyed":
            return error(404, f"machine {machine.id} not found (destroyed)")
        if action is None and method == "POST":
            return await self.update(machine, body)
        if action is None and method == "DELETE":
            force = request.arg("force", request.arg("kill", "false")) in ("true", "1")
            if machine.state in ("started", "starting") and not force:
                return error(412, f"unable to destroy machine {machine.id}: it is {machine.state}; stop it first "
                                  "or pass force=true")
            self.transition(machine, self._destroy(machine))
            return Response(200, {"ok": True})
        if action == "stop" and method == "POST":
            if machine.state in ("started", "starting", "created"):
                self.transition(machine, self._stop(machine))
            return Response(200, {"ok": True})
        if action == "start" and method == "POST":
            previous = machine.state
            if previous in ("stopped", "created", "failed", "suspended"):
                self.launch(machine)
            return Response(200, {"previous_state": previous})
        if action == "restart" and method == "POST":
            self.launch(machine, restart=True)
            return Response(200, {"ok": True})
        if action == "metadata" and key and method == "POST":
            if not isinstance(body, dict) or not isinstance(body.get("value"), str):
                return error(400, 'expected {"value": "..."}')
            machine.config.setdefault("metadata", {})[key] = body["value"]
            return Response(204)
        if action == "metadata" and key and method == "DELETE":
            (machine.config.get("metadata") or {}).pop(key, None)
            return Response(204)
        if action in ("cordon", "uncordon", "suspend") and method == "POST":
            return Response(200, {"ok": True})
        return error(405, "method not allowed")

    async def update(self, machine: Machine, body: Any) -> Response:
        problem = check_config(body)
        if problem:
            return error(400, problem)
        if body.get("region") and body["region"] != machine.region:
            return error(400, "region cannot be changed")
        current = body.get("current_version")
        if current is not None and str(current) != str(machine.version):
            return error(409, f"current_version {current} is stale (machine is at {machine.version})")
        if self.faults.create_seconds:
            await trio.sleep(self.faults.create_seconds)
        machine.config = body["config"]
        machine.version += 1
        machine.instance_id = instance_id()
        machine.set_state("updating" if machine.state == "started" else machine.state,
                          {"type": "update", "status": "updating"})
        if not body.get("skip_launch"):
            self.launch(machine, restart=True)
        return Response(200, machine.public())

    def on_lease(self, machine: Machine, method: str, request: Request, body: Any) -> Response:
        lease = machine.lease if machine.lease and machine.lease["expires_at"] > time.time() else None
        if method == "GET":
            return Response(200, {"status": "success", "data": lease}) if lease else error(404, "no lease")
        if method == "POST":
            if lease is not None:
                return error(409, f"machine {machine.id} already has a lease")
            ttl = int(request.arg("ttl") or (body or {}).get("ttl") or 30)
            machine.lease = {"nonce": secrets.token_hex(8), "expires_at": time.time() + ttl,
                             "owner": "emulator", "version": str(machine.version),
                             "description": (body or {}).get("description", "")}
            return Response(201, {"status": "success", "data": machine.lease})
        if method == "DELETE":
            if lease is None or request.headers.get(LEASE_HEADER) != lease["nonce"]:
                return error(400, f"releasing a lease needs its nonce in {LEASE_HEADER}")
            machine.lease = None
            return Response(200, {"ok": True})
        return error(405, "method not allowed")

    async def wait(self, machine: Machine, request: Request) -> Response:
        state = request.arg("state", "started") or "started"
        if state not in WAIT_STATES:
            return error(400, f"invalid state {state!r}: one of {', '.join(sorted(WAIT_STATES))}")
        try:
            timeout = min(int(request.arg("timeout", "60") or 60), 60)
        except ValueError:
            return error(400, "timeout must be a whole number of seconds")
        wanted_instance = request.arg("instance_id")
        with trio.move_on_after(timeout):
            while not (machine.state == state
                       and (wanted_instance in (None, "") or state == "destroyed"
                            or machine.instance_id == wanted_instance)):
                await machine.changed.wait()
            return Response(200, {"ok": True})
        return error(408, f"deadline_exceeded: machine {machine.id} did not reach {state} within {timeout}s")

    # -- transitions (one at a time per machine: a new one cancels the one in progress) ----------------

    def transition(self, machine: Machine, work: Any) -> None:
        assert self._nursery is not None, "Emulator.run is not running"
        if machine.transition is not None:
            machine.transition.cancel()
        scope = machine.transition = trio.CancelScope()

        async def run() -> None:
            with scope:
                await work

        self._nursery.start_soon(run)

    def launch(self, machine: Machine, *, restart: bool = False) -> None:
        machine.restarts = 0
        self.transition(machine, self._launch(machine, restart))

    async def _launch(self, machine: Machine, restart: bool) -> None:
        if restart and machine.state in ("started", "updating", "starting"):
            machine.set_state("stopping")
            await self._container_stop(machine, remove=True)
        machine.set_state("starting", {"type": "start", "status": "starting"})
        await trio.sleep(self.faults.start_seconds)
        if self.faults.launch_failures > 0:
            self.faults.launch_failures -= 1
            machine.set_state("failed", {"type": "exit", "status": "launch_failed",
                                         "request": {"exit_event": {"exit_code": 1, "oom_killed": False}}})
            return
        if self.docker_image:
            try:
                await self._container_start(machine)
            except RuntimeError as exc:
                log.warning("emulator: machine %s: %s", machine.id, exc)
                machine.set_state("failed", {"type": "exit", "status": "launch_failed",
                                             "request": {"exit_event": {"exit_code": 125, "oom_killed": False}}})
                return
        machine.set_state("started", {"type": "start", "status": "started"})

    async def _stop(self, machine: Machine) -> None:
        machine.set_state("stopping", {"type": "stop", "status": "stopping"})
        await trio.sleep(self.faults.stop_seconds)
        await self._container_stop(machine, remove=True)
        machine.set_state("stopped", {"type": "exit", "status": "stopped",
                                      "request": {"exit_event": {"exit_code": 0, "requested_stop": True}}})

    async def _destroy(self, machine: Machine) -> None:
        machine.set_state("destroying", {"type": "destroy", "status": "destroying"})
        await trio.sleep(self.faults.destroy_seconds)
        await self._container_stop(machine, remove=True)
        machine.set_state("destroyed", {"type": "destroy", "status": "destroyed"})

    # -- Docker-backed mode ----------------------------------------------------------------------------

    async def _container_start(self, machine: Machine) -> None:
        """A container of the local image for this instance, on the host network. The host has one address
        where every Fly Machine has its own, so each gets a free port as its ``PORT``."""
        assert self.docker_image is not None
        env = dict(machine.config.get("env") or {})
        env["PORT"] = str(free_port())
        name = f"fly-{self.id}-{machine.id}"
        args = ["create", "--name", name, "--network", "host", "--label", f"{DOCKER_LABEL}={self.id}",
                "--label", f"fly.machine={machine.id}", "--label", f"fly.instance={machine.instance_id}"]
        for key, value in env.items():
            args += ["-e", f"{key}={value}"]
        await docker("rm", "-f", name, check=False)
        container = (await docker(*args, self.docker_image)).strip()
        machine.container = container
        root = await trio.to_thread.run_sync(write_files, machine.config.get("files") or [])
        try:
            await docker("cp", f"{root}/.", f"{container}:/")
        finally:
            await trio.to_thread.run_sync(lambda: shutil.rmtree(root, ignore_errors=True))
        await docker("start", container)
        self._watch(machine, container)

    def _watch(self, machine: Machine, container: str) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(self._exited, machine, container)

    async def _exited(self, machine: Machine, container: str) -> None:
        """The container's main process exits: what flyd does with the machine's ``restart`` policy
        (``on-failure``, the default: restarted up to ``max_retries``, default 10, after a non-zero exit, else
        ``stopped``; ``always``; ``no``), each exit an ``exit`` event. A container the emulator removed itself
        (stop, destroy, update) is no longer the machine's: nothing happens."""
        done = await trio.run_process(["docker", "wait", container], capture_stdout=True, capture_stderr=True,
                                      check=False)
        if machine.container != container:
            return
        try:
            code = int(done.stdout.decode().strip())
        except ValueError:
            code = -1  # the engine lost the container
        restart = machine.config.get("restart") or {}
        policy = restart.get("policy") or "on-failure"
        retries = int(restart.get("max_retries", DEFAULT_MAX_RETRIES))
        again = policy == "always" or (policy == "on-failure" and code != 0 and machine.restarts < retries)
        exit_event = {"type": "exit", "status": "restarting" if again else "stopped",
                      "request": {"exit_event": {"exit_code": code, "oom_killed": False,
                                                 "requested_stop": False, "restarting": again}}}
        if not again:
            log.info("emulator: machine %s exited (%s) and stays stopped (restart policy %s)", machine.id, code,
                     policy)
            await self._container_stop(machine, remove=True)
            machine.set_state("stopped", exit_event)
            return
        machine.restarts += 1
        log.info("emulator: machine %s exited (%s): restart %d of %d", machine.id, code, machine.restarts, retries)
        machine.set_state("starting", exit_event)
        self.transition(machine, self._restart_container(machine, container))

    async def _restart_container(self, machine: Machine, container: str) -> None:
        await trio.sleep(self.faults.start_seconds)
        try:
            await docker("start", container)
        except RuntimeError as exc:
            log.warning("emulator: machine %s: %s", machine.id, exc)
            machine.container = None
            machine.set_state("failed", {"type": "exit", "status": "launch_failed",
                                         "request": {"exit_event": {"exit_code": 125, "oom_killed": False}}})
            return
        machine.set_state("started", {"type": "start", "status": "started"})
        self._watch(machine, container)

    async def _container_stop(self, machine: Machine, *, remove: bool) -> None:
        if not self.docker_image or machine.container is None:
            return
        container, machine.container = machine.container, None
        with trio.CancelScope(shield=True):
            await docker("rm", "-f", container, check=False)


def write_files(files: list[dict[str, Any]]) -> Path:
    """A directory holding each of a machine's ``files`` at its ``guest_path``, with its mode (``docker cp``
    keeps both)."""
    root = Path(tempfile.mkdtemp(prefix="fly-emulator-files-"))
    for item in files:
        target = root / str(item["guest_path"]).lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(base64.b64decode(item.get("raw_value") or ""))
        target.chmod(int(item.get("mode") or 0o644))
    return root


def check_config(body: Any) -> str | None:
    if not isinstance(body, dict) or not isinstance(body.get("config"), dict):
        return "config is required"
    config = body["config"]
    if not isinstance(config.get("image"), str) or not config["image"]:
        return "config.image is required"
    guest = config.get("guest") or {}
    memory = guest.get("memory_mb")
    if memory is not None and (not isinstance(memory, int) or memory % 256):
        return "guest.memory_mb must be a multiple of 256"
    return None


def instance_id() -> str:
    return "01" + secrets.token_hex(12).upper()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def docker(*args: str, check: bool = True) -> str:
    done = await trio.run_process(["docker", *args], capture_stdout=True, capture_stderr=True, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"docker {args[0]}: {done.stderr.decode(errors='replace').strip()[:300]}")
    return done.stdout.decode()


async def remove_containers(emulator_id: str) -> None:
    out = await docker("ps", "-aq", "--filter", f"label={DOCKER_LABEL}={emulator_id}", check=False)
    if out.split():
        await docker("rm", "-f", *out.split(), check=False)
