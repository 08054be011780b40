"""Finding and running backends: the ``molecule_box.backends`` entry-point group.

Built-in backends are registered in this package's own ``pyproject.toml``
exactly as an outside plugin registers its own, so both paths are the same
code. A backend is loaded (and its ``serve`` started in the box's nursery)
the first time the box needs it.
"""

from __future__ import annotations

import logging
from importlib.metadata import EntryPoint, entry_points
from collections.abc import Mapping
from typing import Any

import trio

from ..errors import BackendNotInstalled, ConfigError
from .base import CONTRACT_VERSION, Backend, BackendContext, BackendFactory

log = logging.getLogger(__name__)

GROUP = "molecule_box.backends"


def discover() -> dict[str, EntryPoint]:
    """Installed backends by name (the entry point's name)."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def describe() -> list[dict[str, Any]]:
    """Name, distribution version and capabilities of every installed backend, for ``/health`` and ``doctor``."""
    found = []
    for name, ep in sorted(discover().items()):
        row: dict[str, Any] = {"name": name, "module": ep.value}
        try:
            cls = ep.load()
            row["version"] = getattr(cls, "version", "?")
            row["contract_version"] = getattr(cls, "contract_version", None)
        except Exception as exc:  # a broken plugin is reported, not fatal
            row["error"] = f"{type(exc).__name__}: {exc}"
        found.append(row)
    return found


class BackendRegistry:
    """The loaded backends of one box; loads lazily and owns their ``serve`` tasks."""

    def __init__(self, context: BackendContext, nursery: trio.Nursery,
                 extra: Mapping[str, BackendFactory] | None = None) -> None:
        self._context = context
        #: In-process backends (tests, embedding) consulted before the entry points.
        self._extra = dict(extra or {})
        self._nursery = nursery
        self._loaded: dict[str, Backend] = {}
        self._loading: dict[str, trio.Event] = {}

    def installed(self) -> list[str]:
        return sorted(set(discover()) | set(self._extra))

    def loaded(self) -> dict[str, Backend]:
        return dict(self._loaded)

    def peek(self, name: str) -> Backend | None:
        return self._loaded.get(name)

    def check_installed(self, name: str) -> None:
        if name not in self._loaded and name not in self._extra and name not in discover():
            raise BackendNotInstalled(name, self.installed())

    async def get(self, name: str) -> Backend:
        """The running backend ``name``, loading and starting it on first use."""
        if name in self._loaded:
            return self._loaded[name]
        if name in self._loading:
            await self._loading[name].wait()
            if name in self._loaded:
                return self._loaded[name]
        factory: BackendFactory | None = self._extra.get(name)
        ep = discover().get(name)
        if factory is None and ep is None:
            raise BackendNotInstalled(name, self.installed())
        origin = ep.value if ep is not None and factory is None else "in-process"
        done = self._loading[name] = trio.Event()
        try:
            if factory is None:
                assert ep is not None
                factory = ep.load()
            backend = factory(self._context)
            if getattr(backend, "contract_version", None) != CONTRACT_VERSION:
                raise ConfigError([
                    f"backend {name!r} ({origin}) implements contract version "
                    f"{getattr(backend, 'contract_version', None)}, this box speaks {CONTRACT_VERSION}"
                ])
            if not isinstance(backend, Backend):
                raise ConfigError([f"backend {name!r} ({origin}) does not implement molecule_box.backends.Backend"])
            await self._nursery.start(backend.serve)
            self._loaded[name] = backend
            log.info("backend %s %s loaded (%s)", name, backend.version, backend.capabilities())
            return backend
        finally:
            self._loading.pop(name, None)
            done.set()
