"""The swarm backend's settings: the docker backend's (images, tier sizes, the privileged opt-in, the network
choice), so a workspace moved from ``docker`` to ``swarm`` keeps its image and limits, plus the manager's
address, the overlay, the ports and the share of each limit a service reserves."""

from __future__ import annotations

import dataclasses

from molecule_box.backends.base import option
from molecule_box.backends.docker.settings import HOST_NETWORK, DockerSettings, parse_port_range
from molecule_box.backends.options import name, text

#: The attachable overlay of a box whose ``WORKSPACE_NETWORK`` is not ``host``.
DEFAULT_OVERLAY = "molecule-box-swarm"


def _port_range(raw: str) -> str:
    first, last = parse_port_range(raw)
    return f"{first}-{last}"


def _network(raw: str) -> str:
    return name(raw, "must be an overlay network name, or host") if raw.strip() else ""


def _fraction(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("must be a number from 0 to 1") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError("must be a number from 0 to 1")
    return value


@dataclasses.dataclass(frozen=True)
class SwarmSettings(DockerSettings):
    swarm_docker_host: str | None = option(
        "SWARM_DOCKER_HOST", text, None,
        "Engine address of a swarm manager (unix://..., tcp://...): services, secrets and nodes are managed "
        "there. Default: DOCKER_HOST, else the local socket.")
    swarm_network: str = option(
        "SWARM_NETWORK", _network, "",
        "Network of swarm workspaces: host (each gets a port of SWARM_PORT_RANGE on its node's host network), "
        f"or an attachable overlay created if missing (port 8000 published in host mode). Default: host when "
        f"WORKSPACE_NETWORK=host, else {DEFAULT_OVERLAY}.")
    swarm_port_range: str = option(
        "SWARM_PORT_RANGE", _port_range, "31000-31999",
        "Ports of swarm workspaces on their nodes (PORT on the host network, the published port on an "
        "overlay), low-high; apart from WORKSPACE_PORT_RANGE so both backends can run on one machine.")
    swarm_reservation: float = option(
        "SWARM_RESERVATION", _fraction, 0.1,
        "Share of a tier's memory and CPU limits each service reserves (the scheduler places a service only on "
        "a node with that much unreserved); 0: no reservations.")

    @property
    def network(self) -> str:
        """The network services attach to: ``host`` or an overlay's name."""
        if self.swarm_network:
            return self.swarm_network
        return HOST_NETWORK if self.workspace_network == HOST_NETWORK else DEFAULT_OVERLAY

    @property
    def ports(self) -> tuple[int, int]:
        return parse_port_range(self.swarm_port_range)

    @property
    def manager(self) -> str | None:
        return self.swarm_docker_host or self.docker_host

    def default_platform_url(self, bind_addr: str, port: int) -> str | None:
        """No default of its own: tasks may run on any node, where neither loopback nor the docker backend's
        host gateway is the box; on one node with the host network the box's own address works."""
        return None
