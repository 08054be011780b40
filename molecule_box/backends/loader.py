"""Finding and running backends: the ``molecule_box.backends`` entry-point group.

Built-in backends are registered in this package's own ``pyproject.toml``
exactly as an outside plugin registers its own, so both paths are the same
code. A backend is loaded (and its ``serve`` started in the box's nursery)
the first time the box needs it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import trio

from ..errors import ConfigError
from .base import (
    CONTRACT_VERSION,
    Backend,
    BackendContext,
    BackendFactory,
    BackendNotInstalled,
    BackendSettings,
    Capabilities,
)

log = logging.getLogger(__name__)

GROUP = "molecule_box.backends"


def discover() -> dict[str, EntryPoint]:
    """Installed backends by name (the entry point's name)."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def describe() -> list[dict[str, Any]]:
    """Name, versions (the backend's, its distribution's and the contract's it implements) of every installed
    backend, for ``/health`` and ``doctor``."""
    found = []
    for name, ep in sorted(discover().items()):
        row: dict[str, Any] = {"name": name, "module": ep.value}
        if ep.dist is not None:
            row["distribution"] = ep.dist.name
            row["distribution_version"] = ep.dist.version
        try:
            cls = ep.load()
            row["version"] = getattr(cls, "version", "?")
            row["contract_version"] = getattr(cls, "contract_version", None)
        except Exception as exc:  # a broken plugin is reported, not fatal
            row["error"] = f"{type(exc).__name__}: {exc}"
        found.append(row)
    return found


def settings_type_of(factory: object) -> type[BackendSettings] | None:
    """The settings class a backend declares, if it declares a usable one (a frozen dataclass subclassing
    :class:`BackendSettings`)."""
    kind = getattr(factory, "settings_type", None)
    if isinstance(kind, type) and issubclass(kind, BackendSettings) and dataclasses.is_dataclass(kind):
        return kind
    return None


def settings_types() -> dict[str, type[BackendSettings]]:
    """Installed backends' settings classes by backend name. A plugin that does not import is left out here
    (``describe`` and ``doctor`` report it; the box refuses it when a workspace needs it)."""
    found: dict[str, type[BackendSettings]] = {}
    for name, ep in sorted(discover().items()):
        try:
            kind = settings_type_of(ep.load())
        except Exception:  # a broken plugin: describe() and doctor report it
            log.debug("backend %s does not load; its settings are not read", name, exc_info=True)
            continue
        if kind is not None:
            found[name] = kind
    return found


class BackendRegistry:
    """The loaded backends of one box; loads lazily and owns their ``serve`` tasks."""

    def __init__(self, context: BackendContext[Any], nursery: trio.Nursery,
                 extra: Mapping[str, BackendFactory] | None = None,
                 settings: Mapping[str, BackendSettings] | None = None,
                 fix: Callable[[str], str | None] | None = None) -> None:
        #: What a refusal of a backend that is not installed tells the operator to do (by backend name).
        self._fix = fix or (lambda name: None)
        #: Shared by every backend but ``settings``, which is each backend's own (from ``settings``, read at start).
        self._context = context
        self._settings = dict(settings or {})
        #: In-process backends (tests, embedding) consulted before the entry points.
        self._extra = dict(extra or {})
        self._nursery = nursery
        self._loaded: dict[str, Backend] = {}
        self._loading: dict[str, trio.Event] = {}

    def installed(self) -> list[str]:
        return sorted(set(discover()) | set(self._extra))

    def loaded(self) -> dict[str, Backend]:
        return dict(self._loaded)

    def capabilities(self, name: str) -> Capabilities:
        """What backend ``name`` can do, for the box's decisions about its workspaces (never the name itself);
        the defaults for one not loaded (a plugin that is missing)."""
        backend = self._loaded.get(name)
        return backend.capabilities() if backend is not None else Capabilities()

    def is_remote(self, name: str) -> bool:
        """Do workspaces of backend ``name`` run outside the box (their liveness the remote deadline, their
        A2A calls to the inbox while they have no URL)?"""
        return self.capabilities(name).remote

    def is_installed(self, name: str) -> bool:
        return name in self._loaded or name in self._extra or name in discover()

    def not_installed(self, name: str) -> BackendNotInstalled:
        return BackendNotInstalled(name, self.installed(), fix=self._fix(name))

    def check_installed(self, name: str) -> None:
        if not self.is_installed(name):
            raise self.not_installed(name)

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
            raise self.not_installed(name)
        origin = ep.value if ep is not None and factory is None else "in-process"
        done = self._loading[name] = trio.Event()
        try:
            if factory is None:
                assert ep is not None
                factory = ep.load()
            kind = settings_type_of(factory) or BackendSettings
            own = self._settings.get(name)
            backend = factory(dataclasses.replace(self._context, settings=own if isinstance(own, kind) else kind()))
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
