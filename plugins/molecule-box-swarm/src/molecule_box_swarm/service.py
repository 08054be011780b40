"""What a workspace's service looks like (names, labels, tiers, placement, network, the token secret) and what its
tasks mean, as pure functions of the spec and the settings, so every rule is tested without an engine.

Tiers: the box's four, as the docker backend sizes them (memory, CPU and PID limits from the same settings),
with ``SWARM_RESERVATION`` of each limit reserved. A service cannot be privileged or share the host's PID
namespace, so with ``DOCKER_ALLOW_PRIVILEGED`` (which makes docker's tiers 3 and 4 exactly that) the backend
supports tiers 1 and 2 only: a tier-3 or tier-4 create is refused, never run unprivileged behind the operator's
back.
"""

from __future__ import annotations

import re
import time
from typing import Any

from molecule_box.backends.base import WorkloadSpec, WorkloadState
from molecule_box.backends.docker.settings import HOST_NETWORK
from molecule_box.backends.docker.spec import LABEL_BOX, LABEL_MANAGED, LABEL_PORT, LABEL_WORKSPACE, owned_filters

from .settings import SwarmSettings

__all__ = ["LABEL_BOX", "LABEL_MANAGED", "LABEL_PORT", "LABEL_WORKSPACE", "owned_filters"]

# The docker backend's labels and filters: the same keys mark a box's services, tasks and secrets.
LABEL_TIER = "molecule-box.tier"
#: On secrets: the generation of the token (its creation time in ms), so the newest is known.
LABEL_GENERATION = "molecule-box.generation"

#: Port the agent listens on inside an overlay task, as on the platform.
AGENT_PORT = 8000
TOKEN_TARGET = "/configs/.auth_token"
MIB = 1024 * 1024
NANO = 1_000_000_000
LOG_DRIVER = {"Name": "json-file", "Options": {"max-size": "10m", "max-file": "3"}}
#: Task states on the way to running (Status.State), and the ones a task never leaves.
STARTING_STATES = frozenset({"new", "allocated", "pending", "assigned", "accepted", "preparing", "ready",
                             "starting"})
FAILED_STATES = frozenset({"failed", "rejected", "orphaned"})
#: Workspace metadata keys that place a service: ``node`` (a node's hostname), ``node_id``, ``node_role``
#: (manager or worker), and ``node.<label>`` (a node label the operator set with ``docker node update
#: --label-add``).
_LABEL_KEY = re.compile(r"^node\.([A-Za-z0-9_.-]+)$")


def short(box_id: str) -> str:
    return re.sub(r"[^a-z0-9]", "", box_id.lower())[:10] or "box"


def service_name(box_id: str, workspace_id: str) -> str:
    return f"mb-{short(box_id)}-{workspace_id[:12]}"


def secret_name(box_id: str, workspace_id: str, generation: int) -> str:
    return f"{service_name(box_id, workspace_id)}-tok-{generation}"


def new_generation() -> int:
    return time.time_ns() // 1_000_000


def labels(box_id: str, workspace_id: str, **extra: str) -> dict[str, str]:
    return {LABEL_MANAGED: "true", LABEL_BOX: box_id, LABEL_WORKSPACE: workspace_id, **extra}


def supported_tiers(settings: SwarmSettings) -> frozenset[int]:
    return frozenset({1, 2}) if settings.docker_allow_privileged else frozenset({1, 2, 3, 4})


def refusal(settings: SwarmSettings, tier: int) -> str | None:
    """Why a tier cannot run as a service here, or None."""
    if tier in supported_tiers(settings):
        return None
    return (f"tier {tier} runs privileged in the host PID namespace here (DOCKER_ALLOW_PRIVILEGED=true), which a "
            "Docker Swarm service cannot be; use tier 1 or 2, or the docker backend")


def constraints(metadata: dict[str, str]) -> list[str]:
    """Placement constraints from the workspace's metadata (see the keys above); other keys place nothing."""
    found: list[str] = []
    for key, value in sorted(metadata.items()):
        if not value or any(c in value for c in "=!,\n"):
            continue
        if key == "node":
            found.append(f"node.hostname=={value}")
        elif key == "node_id":
            found.append(f"node.id=={value}")
        elif key == "node_role" and value in ("manager", "worker"):
            found.append(f"node.role=={value}")
        elif (match := _LABEL_KEY.match(key)) is not None:
            found.append(f"node.labels.{match.group(1)}=={value}")
    return found


def resources(settings: SwarmSettings, tier: int) -> dict[str, Any]:
    memory_mb, cpus = settings.tier_limits(tier)
    limits = {"NanoCPUs": int(cpus * NANO), "MemoryBytes": memory_mb * MIB, "Pids": settings.workspace_pids_limit}
    share = settings.swarm_reservation
    reservations = {"NanoCPUs": int(cpus * NANO * share), "MemoryBytes": int(memory_mb * MIB * share)}
    return {"Limits": limits, "Reservations": reservations if share else {}}


def service_spec(settings: SwarmSettings, box_id: str, spec: WorkloadSpec, *, image: str, port: int,
                 network_id: str | None, secret: tuple[str, str], user: tuple[int, int],
                 replicas: int = 1, force: int = 0, configs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The ``ServiceSpec`` of a workspace.

    Restart condition ``none``: the workspace's actor is the one restarter (backoff, ``RESTART_LIMIT``, the
    failure reason), so Swarm never starts a second attempt beside or against it; a start after a crash is a
    service update (a new token secret), which makes Swarm schedule a new task.
    """
    host = settings.network == HOST_NETWORK
    env = {**spec.env, "PORT": str(port if host else AGENT_PORT)}
    own = labels(box_id, spec.workspace_id, **{LABEL_TIER: str(spec.tier), LABEL_PORT: str(port)})
    secret_id, secret_name_ = secret
    uid, gid = user
    container: dict[str, Any] = {
        "Image": image,
        "Env": [f"{k}={v}" for k, v in sorted(env.items())],
        "Labels": labels(box_id, spec.workspace_id),
        "Secrets": [{"File": {"Name": TOKEN_TARGET, "UID": str(uid), "GID": str(gid), "Mode": 0o600},
                     "SecretID": secret_id, "SecretName": secret_name_}],
        "Configs": configs or [],
        "StopGracePeriod": 10 * NANO,
        "Init": True,
    }
    if spec.tier == 1:
        container["ReadOnly"] = True
        container["Mounts"] = [{"Type": "tmpfs", "Target": "/tmp", "TmpfsOptions": {"SizeBytes": 64 * MIB}}]
    template: dict[str, Any] = {
        "ContainerSpec": container,
        "Resources": resources(settings, spec.tier),
        "RestartPolicy": {"Condition": "none", "MaxAttempts": 0},
        "Placement": {"Constraints": constraints(spec.metadata)},
        "Networks": [{"Target": network_id or HOST_NETWORK}],
        "LogDriver": LOG_DRIVER,
        "ForceUpdate": force,
    }
    body: dict[str, Any] = {
        "Name": service_name(box_id, spec.workspace_id),
        "Labels": own,
        "TaskTemplate": template,
        "Mode": {"Replicated": {"Replicas": replicas}},
        # An update (each start: a new token) replaces the task at once and never pauses on a task's failure:
        # whether a failed start is retried is the actor's call, and a paused update would hold the next one.
        "UpdateConfig": {"Parallelism": 1, "Order": "stop-first", "FailureAction": "continue", "Monitor": 0},
    }
    if not host:
        body["EndpointSpec"] = {"Mode": "vip", "Ports": [
            {"Protocol": "tcp", "TargetPort": AGENT_PORT, "PublishedPort": port, "PublishMode": "host"}]}
    return body


def network_config(name: str, box_id: str) -> dict[str, Any]:
    return {"Name": name, "Driver": "overlay", "Attachable": True, "CheckDuplicate": True,
            "Labels": {LABEL_MANAGED: "true", LABEL_BOX: box_id}}


def newest_task(tasks: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The task that tells the service's state: the newest by creation (Swarm keeps old ones as history)."""
    return max(tasks, key=lambda t: (str(t.get("CreatedAt") or ""), int((t.get("Version") or {}).get("Index", 0))),
               default=None)


def runs(task: dict[str, Any] | None) -> bool:
    """The task runs and Swarm means it to: a task whose node went down keeps its last state (``running``)
    while its desired state turns ``shutdown``; it is gone for the workspace, whatever it last said."""
    found = task or {}
    return (found.get("Status") or {}).get("State") == "running" and found.get("DesiredState") in (None, "running")


def task_state(service: dict[str, Any] | None, tasks: list[dict[str, Any]]) -> tuple[WorkloadState, str | None]:
    """(state, detail) of a workspace from its service and tasks: no service is MISSING; 0 replicas or no live
    task is STOPPED (a crashed task is not replaced: restarts are the box's); a task on its way is STARTING."""
    if service is None:
        return WorkloadState.MISSING, None
    wanted = replicas(service)
    task = newest_task(tasks)
    if task is None:
        return (WorkloadState.STOPPED if not wanted else WorkloadState.STARTING), None
    status = task.get("Status") or {}
    state = str(status.get("State") or "")
    detail = f"task {str(task.get('ID', ''))[:12]} is {state}"
    if status.get("Err"):
        detail += f": {status['Err']}"
    if state == "running" and not runs(task):
        return WorkloadState.STOPPED, f"{detail}, but Swarm shuts it down (desired: {task.get('DesiredState')})"
    if state == "running":
        return WorkloadState.RUNNING, detail
    if state in STARTING_STATES and task.get("DesiredState") == "running" and wanted:
        return WorkloadState.STARTING, detail
    return WorkloadState.STOPPED, detail


def location(hostname: str | None, node_id: str | None) -> str:
    """The workspace's ``location`` (its record shows it): the node's hostname and short id, since several nodes
    may share a hostname."""
    short_id = str(node_id or "")[:12]
    return f"{hostname} ({short_id})" if hostname and short_id else hostname or short_id or "unknown node"


def leaving_tasks(tasks: list[dict[str, Any]], down_nodes: frozenset[str] = frozenset(), *,
                  scaled_to_zero: bool = False) -> list[dict[str, Any]]:
    """Tasks Swarm is stopping that still run (or start): their desired state is past ``running`` (``shutdown``
    after an update, ``remove`` after a scale-down) but their container still holds what it held. A task on a
    node that is down only says so: nothing of it holds anything a new task needs.

    ``scaled_to_zero``: the service's spec asks for no replica (a stop was sent), so every task that still runs
    is on its way out, even one whose desired state Swarm's orchestrator has not turned yet. Under load that
    lag is long enough for a resume right after a pause to see the old task as ``running``, scale up, and get a
    new task beside it that cannot bind the workspace's port (seen once in CI: an exit 1, then ``failed``)."""
    return [t for t in tasks if (t.get("Status") or {}).get("State") in ("running", *STARTING_STATES)
            and (scaled_to_zero or t.get("DesiredState") not in ("running", *STARTING_STATES))
            and t.get("NodeID") not in down_nodes]


def replicas(service: dict[str, Any] | None) -> int:
    """The replicas the service's spec asks for (0 for a stopped workspace, 1 for a started one)."""
    mode = ((service or {}).get("Spec") or {}).get("Mode") or {}
    return int((mode.get("Replicated") or {}).get("Replicas") or 0)


def exit_code(task: dict[str, Any] | None) -> int | None:
    status = (task or {}).get("Status") or {}
    code = (status.get("ContainerStatus") or {}).get("ExitCode")
    return int(code) if isinstance(code, int) else None


def parse_time(raw: str | None) -> float | None:
    """An engine timestamp (RFC 3339 with nanoseconds) as unix seconds."""
    if not raw or raw.startswith("0001-"):
        return None
    from datetime import datetime

    head, _, rest = raw.partition(".")
    frac = "".join(ch for ch in rest if ch.isdigit())[:6]
    try:
        base = datetime.fromisoformat(head + ("+00:00" if raw.endswith("Z") or "Z" in rest else ""))
    except ValueError:
        return None
    return base.timestamp() + (int(frac) / 10 ** len(frac) if frac else 0.0)
