"""The built-in ``docker`` backend (entry point ``molecule_box.backends: docker``).

- :mod:`.backend`: :class:`DockerBackend`, the contract's methods and the engine watcher;
- :mod:`.client`: aiodocker on a trio-asyncio loop, the only asyncio code of the box;
- :mod:`.spec`: the container a workspace gets (tiers, labels, health check, token), as pure functions;
- :mod:`.events`: Docker events → backend events, as pure functions.
"""

from .backend import DockerBackend

__all__ = ["DockerBackend"]
