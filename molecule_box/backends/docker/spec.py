"""What a workspace's container looks like: names, labels, tiers, health check, token archive, host ports.

Pure functions of the workload spec and the settings, kept apart from the
engine I/O so every rule (tier limits, the privileged opt-in, labels, the
bounded log driver) is tested without Docker, and ``docker inspect`` in the
integration tests only confirms that the engine applied what this module
asked for.
"""

from __future__ import annotations

import io
import socket
import tarfile
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from ..base import WorkloadSpec, bind_scope
from .settings import HOST_GATEWAY, HOST_NETWORK, DockerSettings

#: Every container and volume the box creates carries these, so adoption and the orphan sweep are exact and
#: a second box on the same engine (another ``box_id``) is never touched.
LABEL_MANAGED = "molecule-box.managed"
LABEL_BOX = "molecule-box.box"
LABEL_WORKSPACE = "molecule-box.workspace"
#: With ``WORKSPACE_NETWORK=host``: the port the agent listens on, so a restarted box knows which are taken.
LABEL_PORT = "molecule-box.port"

#: Port the agent listens on inside its own network namespace (bridge networks), as on the platform.
AGENT_PORT = 8000
EXTRA_HOSTS = [f"{HOST_GATEWAY}:host-gateway"]
MIB = 1024 * 1024
TIER1_TMPFS = "rw,noexec,nosuid,size=64m"
#: json-file rotation: a chatty agent cannot fill the disk.
LOG_CONFIG = {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}}
TOKEN_PATH = "/configs"
TOKEN_FILE = ".auth_token"

#: Probe of the agent card, in the image's own python3 (curl as a fallback; no probe possible → healthy, so an
#: image without either is not called sick). Both well-known spellings are tried.
_PROBE = (
    'import os,sys,urllib.request as r\n'
    'b="http://127.0.0.1:"+os.environ.get("PORT","8000")\n'
    'for p in ("/.well-known/agent-card.json","/.well-known/agent.json"):\n'
    '    try:\n'
    '        r.urlopen(b+p,timeout=4).close()\n'
    '        sys.exit(0)\n'
    '    except Exception:\n'
    '        pass\n'
    'sys.exit(1)\n'
)
HEALTHCHECK_SHELL = (
    f"if command -v python3 >/dev/null 2>&1; then exec python3 -c '{_PROBE}'; "
    "elif command -v curl >/dev/null 2>&1; then "
    'curl -fsS -o /dev/null --max-time 4 "http://127.0.0.1:${PORT:-8000}/.well-known/agent-card.json" || '
    'curl -fsS -o /dev/null --max-time 4 "http://127.0.0.1:${PORT:-8000}/.well-known/agent.json"; '
    "else exit 0; fi"
)


def reach_problem(settings: DockerSettings, platform_url: str, bind_addr: str) -> str | None:
    """Why a container on ``WORKSPACE_NETWORK`` cannot reach the box at ``PLATFORM_URL``, when the settings alone
    tell (None: it may; ``molecule-box doctor`` tries it from a real container).

    A workspace that cannot reach the box never registers: it stays ``provisioning`` until its deadline. So
    the backend refuses to start with this (one line, naming the settings to change) instead."""
    url = platform_url
    target = (urlsplit(url).hostname or "").lower()
    scope, _ = bind_scope(bind_addr)
    loopback_url = bind_scope(target)[0] == "loopback"
    network = settings.workspace_network
    if network == HOST_NETWORK:
        if target == HOST_GATEWAY:
            return (f"PLATFORM_URL={url}: {HOST_GATEWAY} does not resolve on WORKSPACE_NETWORK=host; unset "
                    "PLATFORM_URL (the default there is http://127.0.0.1:<PORT>) or point it at this host")
        if loopback_url and scope == "address":
            return (f"PLATFORM_URL={url} is a loopback address but the box listens only on BIND_ADDR="
                    f"{bind_addr}: unset PLATFORM_URL or point it at BIND_ADDR")
        return None
    if loopback_url:
        return (f"PLATFORM_URL={url} is the container's own loopback on the bridge network WORKSPACE_NETWORK="
                f"{network}: set WORKSPACE_NETWORK=host, or PLATFORM_URL to an address of this host the box "
                "listens on (BIND_ADDR)")
    if target == HOST_GATEWAY and scope != "any":
        return (f"WORKSPACE_NETWORK={network} is a bridge network, and its containers cannot reach the box at "
                f"PLATFORM_URL={url} while it listens only on BIND_ADDR={bind_addr}: set "
                "WORKSPACE_NETWORK=host, or BIND_ADDR=0.0.0.0 (behind a firewall), or PLATFORM_URL to an address "
                "of this host the containers reach and BIND_ADDR to listen there")
    return None


def image_ref(settings: DockerSettings, runtime: str) -> str:
    """``WORKSPACE_IMAGE_PREFIX`` + runtime + ``:`` + ``WORKSPACE_IMAGE_TAG``."""
    return f"{settings.workspace_image_prefix}{runtime}:{settings.workspace_image_tag}"


def split_image(image: str) -> tuple[str, str]:
    """``repo[:tag]`` → (repo, tag); a registry port (``host:5000/x``) is not a tag."""
    repo, sep, tag = image.rpartition(":")
    if not sep or "/" in tag:
        return image, "latest"
    return repo, tag


def container_name(workspace_id: str) -> str:
    """``ws-<first 12 characters of the id>``, the platform's container name."""
    return f"ws-{workspace_id[:12]}"


def volume_names(workspace_id: str) -> tuple[str, str]:
    """(config volume at /configs, workspace volume at /workspace); both removed with the workspace."""
    name = container_name(workspace_id)
    return f"{name}-configs", f"{name}-workspace"


def labels(box_id: str, workspace_id: str, *, port: int | None = None) -> dict[str, str]:
    found = {LABEL_MANAGED: "true", LABEL_BOX: box_id, LABEL_WORKSPACE: workspace_id}
    if port is not None:
        found[LABEL_PORT] = str(port)
    return found


def owned_filters(box_id: str, workspace_id: str | None = None) -> dict[str, list[str]]:
    """Engine-side filters for this box's resources (optionally one workspace's)."""
    wanted = [f"{LABEL_MANAGED}=true", f"{LABEL_BOX}={box_id}"]
    if workspace_id is not None:
        wanted.append(f"{LABEL_WORKSPACE}={workspace_id}")
    return {"label": wanted}


def is_owned(found_labels: dict[str, str] | None, box_id: str) -> bool:
    """Only what carries this box's id is ever stopped or removed by it: never reclaim
    what you cannot prove you own (another box, or the user's own containers, on the same engine)."""
    found_labels = found_labels or {}
    return found_labels.get(LABEL_MANAGED) == "true" and found_labels.get(LABEL_BOX) == box_id


def healthcheck(interval: float) -> dict[str, Any]:
    """Docker HEALTHCHECK probing the agent card; failures during the first two minutes (boot) do not count."""
    seconds = 1_000_000_000
    return {
        "Test": ["CMD-SHELL", HEALTHCHECK_SHELL],
        "Interval": int(interval * seconds),
        "Timeout": int(min(5.0, max(1.0, interval)) * seconds),
        "StartPeriod": 120 * seconds,
        "Retries": 3,
    }


def has_own_healthcheck(image_config: dict[str, Any] | None) -> bool:
    test = ((image_config or {}).get("Healthcheck") or {}).get("Test") or []
    return bool(test) and test != ["NONE"]


def cpu_limit(cpus: float, host_cpus: int | None) -> int:
    """NanoCPUs, never more than the engine's host has (the engine refuses a create that asks for more)."""
    if host_cpus:
        cpus = min(cpus, float(host_cpus))
    return int(cpus * 1_000_000_000)


def container_config(
    spec: WorkloadSpec,
    settings: DockerSettings,
    *,
    box_id: str,
    image: str,
    port: int | None,
    host_cpus: int | None,
    own_healthcheck: bool,
) -> dict[str, Any]:
    """The ``POST /containers/create`` body of a workspace.

    Tiers (the platform's four, hardened): every tier has memory, CPU and PID limits; tier 1 is sandboxed (read-only
    root, a small noexec ``/tmp``, only the ``/configs`` volume, no privilege escalation). ``--privileged``, the
    host PID namespace and the Docker socket are given to tiers 3 and 4 only when the operator opted in with
    ``DOCKER_ALLOW_PRIVILEGED=true``. Docker's own restart policy is ``no``: the workspace actor owns restarts.
    """
    tier = spec.tier if spec.tier in (1, 2, 3, 4) else 2
    host_network = settings.workspace_network == HOST_NETWORK
    listen = port if host_network and port is not None else AGENT_PORT
    env = dict(spec.env)
    env["PORT"] = str(listen)
    memory_mb, cpus = settings.tier_limits(tier)
    configs_volume, workspace_volume = volume_names(spec.workspace_id)
    # The engine creates a missing volume at container create, labelled like the container (no extra calls);
    # an existing one (a restart) is reused as it is.
    volume_options = {"Labels": labels(box_id, spec.workspace_id)}
    mounts: list[dict[str, Any]] = [{"Type": "volume", "Source": configs_volume, "Target": "/configs",
                                     "VolumeOptions": volume_options}]
    if tier >= 2:
        mounts.append({"Type": "volume", "Source": workspace_volume, "Target": "/workspace",
                       "VolumeOptions": volume_options})
    host: dict[str, Any] = {
        "RestartPolicy": {"Name": "no"},
        "Memory": memory_mb * MIB,
        "MemorySwap": memory_mb * MIB,  # no swap on top: the limit is the limit
        "NanoCpus": cpu_limit(cpus, host_cpus),
        "PidsLimit": settings.workspace_pids_limit,
        "LogConfig": LOG_CONFIG,
        "Init": True,  # reaps the agent's children and forwards SIGTERM
        "Mounts": mounts,
        "NetworkMode": settings.workspace_network,
    }
    if tier == 1:
        host["ReadonlyRootfs"] = True
        host["Tmpfs"] = {"/tmp": TIER1_TMPFS}
        host["SecurityOpt"] = ["no-new-privileges:true"]
    if settings.docker_allow_privileged and tier >= 3:
        host["Privileged"] = True
        host["PidMode"] = "host"
        if tier == 4:
            mounts.append({"Type": "bind", "Source": "/var/run/docker.sock", "Target": "/var/run/docker.sock"})
    body: dict[str, Any] = {
        "Image": image,
        "Env": [f"{key}={value}" for key, value in sorted(env.items())],
        "Labels": labels(box_id, spec.workspace_id, port=port if host_network else None),
        "StopSignal": "SIGTERM",
        "StopTimeout": 10,
        "HostConfig": host,
    }
    if not own_healthcheck:
        body["Healthcheck"] = healthcheck(settings.workspace_healthcheck_interval)
    if not host_network:
        name = container_name(spec.workspace_id)
        body["Hostname"] = name
        body["ExposedPorts"] = {f"{AGENT_PORT}/tcp": {}}
        host["PortBindings"] = {f"{AGENT_PORT}/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}
        # The box's default PLATFORM_URL on a bridge (http://host.docker.internal:PORT) must resolve on Linux too.
        host["ExtraHosts"] = list(EXTRA_HOSTS)
        body["NetworkingConfig"] = {"EndpointsConfig": {settings.workspace_network: {"Aliases": [name]}}}
    return body


#: Marks the short-lived containers the file operations mount a workspace's config volume in.
LABEL_HELPER = "molecule-box.helper"
#: Removes everything under /configs but the token file (``write_config_files(replace=True)``).
CLEAR_CONFIGS = "cd /configs && find . -mindepth 1 -maxdepth 1 ! -name .auth_token -exec rm -rf -- {} +"
#: Removes the paths given as arguments, relative to /configs.
REMOVE_CONFIGS = 'cd /configs && rm -rf -- "$@"'


def files_helper_config(box_id: str, workspace_id: str, image: str, script: str, args: list[str]) -> dict[str, Any]:
    """A container of the workspace's own image with only its config volume mounted, no network, as root (the
    files' owner may be any uid), for the engine's archive API (which works on a container that never ran)
    and, started, for removals. It carries the box's label without a workspace one: the orphan sweep removes
    one a crash left behind, and nothing takes it for the workspace's workload."""
    configs_volume, _ = volume_names(workspace_id)
    return {
        "Image": image,
        "Entrypoint": ["/bin/sh", "-c"],
        "Cmd": [script, "sh", *args],
        "User": "0:0",
        "Labels": {LABEL_MANAGED: "true", LABEL_BOX: box_id, LABEL_HELPER: "files"},
        "NetworkDisabled": True,
        "HostConfig": {
            "Mounts": [{"Type": "volume", "Source": configs_volume, "Target": "/configs",
                        "VolumeOptions": {"Labels": labels(box_id, workspace_id)}}],
            "NetworkMode": "none",
            "RestartPolicy": {"Name": "no"},
            "Memory": 128 * MIB,
            "PidsLimit": 64,
            "LogConfig": LOG_CONFIG,
        },
    }


def network_config(name: str, box_id: str) -> dict[str, Any]:
    return {"Name": name, "Driver": "bridge", "CheckDuplicate": True,
            "Labels": {LABEL_MANAGED: "true", LABEL_BOX: box_id}}


def token_archive(token: str, *, uid: int = 0, gid: int = 0) -> bytes:
    """A tar holding ``.auth_token`` (mode 0600) for ``PUT /containers/{id}/archive?path=/configs``."""
    data = token.encode()
    info = tarfile.TarInfo(TOKEN_FILE)
    info.size = len(data)
    info.mode = 0o600
    info.uid, info.gid = uid, gid
    info.mtime = int(time.time())
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def image_user(image_config: dict[str, Any] | None) -> tuple[int, int]:
    """The numeric uid:gid the image runs as, so the token file is readable by the agent; root otherwise."""
    user = str((image_config or {}).get("User") or "")
    uid, _, gid = user.partition(":")
    if uid.isdigit():
        return int(uid), int(gid) if gid.isdigit() else int(uid)
    return 0, 0


def port_is_free(port: int) -> bool:
    """Nothing on this host listens on ``port`` (the agent binds all addresses with the host network)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


class PortAllocator:
    """Host ports of host-network workspaces: one per workspace, kept across restarts of it and of the box.

    Allocation is synchronous (no checkpoint between the check and the reservation), so concurrent starts in
    one trio run never get the same port.
    """

    def __init__(self, first: int, last: int, *, is_free: Callable[[int], bool] = port_is_free) -> None:
        self.first = first
        self.last = last
        self._is_free = is_free
        self._owner: dict[int, str] = {}
        self._next = first

    def reserve(self, port: int, workspace_id: str) -> None:
        """Record a port a running (adopted) workload already uses."""
        self._owner[port] = workspace_id

    def release(self, workspace_id: str) -> None:
        for port in [p for p, owner in self._owner.items() if owner == workspace_id]:
            del self._owner[port]

    def owned_by(self, workspace_id: str) -> int | None:
        return next((p for p, owner in self._owner.items() if owner == workspace_id), None)

    def allocate(self, workspace_id: str, preferred: int | None = None) -> int:
        """The workspace's own port if it has one (or ``preferred``, its previous one, when still free),
        else the next free port of the range. Raises LookupError when the range is exhausted."""
        current = self.owned_by(workspace_id)
        if current is not None:
            return current
        if (preferred is not None and self.first <= preferred <= self.last and preferred not in self._owner
                and self._is_free(preferred)):
            self._owner[preferred] = workspace_id
            return preferred
        size = self.last - self.first + 1
        for step in range(size):
            port = self.first + (self._next - self.first + step) % size
            if port in self._owner or not self._is_free(port):
                continue
            self._owner[port] = workspace_id
            self._next = port + 1 if port < self.last else self.first
            return port
        raise LookupError(f"no free port left in {self.first}-{self.last}")
