"""What the supervisor and its actors use, handed to them by whoever assembles the box.

They take these parts, not the whole box, so ``actors/`` depends on nothing that depends on it: a
supervisor is built in a test from a store, a bus and a backend registry, and the box module only
assembles.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Protocol

from ..backends.base import Backend, Capabilities
from ..bus import EventBus
from ..config import Settings
from ..metrics import BoxMetrics
from ..store import Store
from ..vault import Vault


class Backends(Protocol):
    """Where an actor finds its workspace's backend (the box's plugin registry)."""

    async def get(self, name: str) -> Backend: ...

    def check_installed(self, name: str) -> None: ...

    def is_installed(self, name: str) -> bool: ...

    def capabilities(self, name: str) -> Capabilities: ...

    def is_remote(self, name: str) -> bool: ...


@dataclasses.dataclass(frozen=True)
class ActorDeps:
    store: Store
    bus: EventBus
    backends: Backends
    settings: Settings
    metrics: BoxMetrics
    vault: Vault
    #: The wall clock (unix seconds); tests pass a mock one.
    now: Callable[[], float]
