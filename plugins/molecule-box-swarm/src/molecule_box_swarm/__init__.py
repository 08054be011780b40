"""molecule-box's ``swarm`` backend: workspaces as one-replica Docker Swarm services (entry point
``molecule_box.backends: swarm``)."""

from .backend import SwarmBackend
from .settings import SwarmSettings

__all__ = ["SwarmBackend", "SwarmSettings"]
