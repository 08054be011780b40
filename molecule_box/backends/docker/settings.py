"""The docker backend's own settings (``DockerBackend.settings_type``), read with the box's at start."""

from __future__ import annotations

import dataclasses

from ..base import BackendSettings, bind_scope, option
from ..options import boolean, name, name_list, positive_float, positive_int, text

#: Runtimes that have a workspace-template image, plus ``external``.
DEFAULT_RUNTIMES = "langgraph,claude-code,openclaw,crewai,autogen,deepagents,hermes,codex,gemini-cli,external"
#: ``WORKSPACE_NETWORK`` of workspaces sharing the host's network.
HOST_NETWORK = "host"
#: Resolves to the engine's host gateway in bridge-network containers (``ExtraHosts``), nowhere else.
HOST_GATEWAY = "host.docker.internal"


def parse_port_range(raw: str) -> tuple[int, int]:
    low, sep, high = raw.strip().partition("-")
    try:
        first, last = int(low), int(high if sep else low)
    except ValueError:
        raise ValueError("must be a port range such as 30000-30999") from None
    if not 1024 <= first <= last <= 65535:
        raise ValueError("must be a port range within 1024-65535, low-high")
    return first, last


def _port_range(raw: str) -> str:
    first, last = parse_port_range(raw)
    return f"{first}-{last}"


def _network_name(raw: str) -> str:
    return name(raw, "must be a Docker network name, or host")


def default_platform_url(network: str, bind_addr: str, port: int) -> str:
    """``PLATFORM_URL`` when unset: where a container on ``network`` reaches a box listening on ``bind_addr``.

    A host-network container shares the host's addresses, loopback included. A bridge one reaches the host
    only at one of its other addresses, and ``host.docker.internal`` (the engine's host gateway) is the one
    that needs no configuration when the box listens on every address; with a loopback-only box no URL works
    there, and the docker backend refuses docker workspaces (``spec.reach_problem``)."""
    scope, host = bind_scope(bind_addr)
    if network != HOST_NETWORK and scope != "address":
        host = HOST_GATEWAY
    return f"http://{host}:{port}"


@dataclasses.dataclass(frozen=True)
class DockerSettings(BackendSettings):
    docker_host: str | None = option(
        "DOCKER_HOST", text, None,
        "Docker engine address (unix:///var/run/docker.sock, tcp://...). Default: the Docker context, else the "
        "local socket.")
    workspace_image_prefix: str = option(
        "WORKSPACE_IMAGE_PREFIX", text, "ghcr.io/molecule-ai/workspace-template-",
        "Image of a docker workspace: prefix + runtime + ':' + WORKSPACE_IMAGE_TAG. Pulled when missing.")
    workspace_image_tag: str = option("WORKSPACE_IMAGE_TAG", text, "latest", "Tag of workspace images.")
    allowed_runtimes: str = option(
        "ALLOWED_RUNTIMES", name_list, DEFAULT_RUNTIMES,
        "Comma-separated runtimes a docker workspace may use; a create with another is refused (400).")
    workspace_network: str = option(
        "WORKSPACE_NETWORK", _network_name, "molecule-box",
        "Docker bridge network of workspaces (created if missing; port 8000 published on 127.0.0.1), "
        "or host (each workspace gets a port from WORKSPACE_PORT_RANGE).")
    workspace_port_range: str = option(
        "WORKSPACE_PORT_RANGE", _port_range, "30000-30999",
        "With WORKSPACE_NETWORK=host: the ports workspaces listen on (PORT), low-high.")
    tier1_memory_mb: int = option("TIER1_MEMORY_MB", positive_int, 512,
                                  "Memory limit of tier 1 (sandboxed) containers, in MiB.")
    tier2_memory_mb: int = option("TIER2_MEMORY_MB", positive_int, 512, "Memory limit of tier 2 containers, in MiB.")
    tier3_memory_mb: int = option("TIER3_MEMORY_MB", positive_int, 2048, "Memory limit of tier 3 containers, in MiB.")
    tier4_memory_mb: int = option("TIER4_MEMORY_MB", positive_int, 4096, "Memory limit of tier 4 containers, in MiB.")
    tier1_cpus: float = option("TIER1_CPUS", positive_float, 1.0,
                               "CPU limit of tier 1 containers (fractions allowed; at most the host's CPUs).")
    tier2_cpus: float = option("TIER2_CPUS", positive_float, 1.0, "CPU limit of tier 2 containers.")
    tier3_cpus: float = option("TIER3_CPUS", positive_float, 2.0, "CPU limit of tier 3 containers.")
    tier4_cpus: float = option("TIER4_CPUS", positive_float, 4.0, "CPU limit of tier 4 containers.")
    workspace_pids_limit: int = option("WORKSPACE_PIDS_LIMIT", positive_int, 1024,
                                       "Most processes a workspace container may run.")
    docker_allow_privileged: bool = option(
        "DOCKER_ALLOW_PRIVILEGED", boolean, False,
        "Opt-in: tier 3 gets --privileged and the host PID namespace, tier 4 also the Docker socket. Off: never.")
    workspace_healthcheck_interval: float = option(
        "WORKSPACE_HEALTHCHECK_INTERVAL", positive_float, 15.0,
        "Seconds between Docker health probes of the agent card (images with their own HEALTHCHECK keep theirs).")
    image_pull_timeout_seconds: float = option("IMAGE_PULL_TIMEOUT_SECONDS", positive_float, 300.0,
                                               "A workspace image pull that takes longer fails the workspace.")

    @property
    def allowed_runtime_names(self) -> frozenset[str]:
        return frozenset(self.allowed_runtimes.split(","))

    @property
    def workspace_ports(self) -> tuple[int, int]:
        """``WORKSPACE_PORT_RANGE`` as (first, last), both inclusive."""
        return parse_port_range(self.workspace_port_range)

    def tier_limits(self, tier: int) -> tuple[int, float]:
        """(memory MiB, CPUs) of a tier; anything but 1, 3 or 4 is sized as tier 2, as on the platform."""
        tier = tier if tier in (1, 2, 3, 4) else 2
        memory: int = getattr(self, f"tier{tier}_memory_mb")
        cpus: float = getattr(self, f"tier{tier}_cpus")
        return memory, cpus

    def default_platform_url(self, bind_addr: str, port: int) -> str | None:
        return default_platform_url(self.workspace_network, bind_addr, port)
