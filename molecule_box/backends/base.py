"""Backend contract, version 2: what a workload backend must do for the box.

A backend turns a workspace into a running workload (a Docker container, a Fly
Machine, a control-plane instance) or, for ``external``, into nothing at all:
the agent runs elsewhere and only heartbeats. Backends are found through the
entry-point group ``molecule_box.backends``; the built-in ones use the same
mechanism as outside plugins. ``docs/plugins.md`` is the author's guide; the
conformance kit in :mod:`molecule_box.testing` is the executable form of this
file.

Rules every method follows:

* Only the workspace's actor calls lifecycle methods for that workspace, one at
  a time, so a backend needs no per-workspace locking. Different workspaces'
  calls run concurrently.
* Every method is a trio coroutine, may be cancelled at any checkpoint (the
  actor applies deadlines), and must leave nothing half-made that
  :meth:`Backend.destroy` or the orphan sweep could not clean up.
* Failures the user should see are raised as :class:`BackendError` with a short ``reason`` (shown in
  the API) and an optional ``detail`` (logged only). Never put secrets in
  either.
* ``handle`` is the backend's own JSON-serialisable state for one workload
  (container id, machine id, instance id). The box stores it in the
  workspace's row after :meth:`Backend.start` and passes it back on every
  later call, including after a box restart, like Nomad's driver state.
* A backend's own settings are a :class:`BackendSettings` subclass named by
  ``settings_type``, declared field by field with :func:`option`; the box reads
  them with its own and hands the backend the typed object as
  ``BackendContext.settings``.

This module, :mod:`.options` and :mod:`.archive` (the checked tars of the config-file operations) import
nothing else of the box but its error
root, so a plugin importing the contract loads only the contract.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from typing import Any, ClassVar, Generic, Protocol, TypeVar, runtime_checkable

import trio

from ..errors import MoleculeBoxError
from . import archive
from .options import Setting, bind_scope, option, table

__all__ = [
    "CONTRACT_VERSION", "Backend", "BackendContext", "BackendError", "BackendEvent", "BackendFactory",
    "BackendNotInstalled", "BackendSettings", "BaseBackend", "Capabilities", "ConfigFiles", "FilesNotSupported",
    "Handle",
    "Setting", "Workload",
    "WorkloadSpec", "WorkloadState", "WorkloadStatus", "archive", "bind_scope", "option", "table",
]

#: Version of this contract. A plugin declares the version it implements in
#: ``contract_version``; the loader refuses a plugin written for another.
#: Version 2 added ``admit`` and ``settings_type`` to the protocol and typed
#: ``BackendContext.settings`` (version 1 handed every backend the box's settings).
CONTRACT_VERSION = 2

Handle = dict[str, Any]


class BackendError(MoleculeBoxError):
    """A backend could not do what was asked. ``reason`` is safe to show users; details stay in logs."""

    def __init__(self, reason: str, *, detail: str | None = None) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(reason)


class FilesNotSupported(BackendError):
    """The backend has no config-file operations (``Capabilities.files`` is False)."""

    def __init__(self, backend: str) -> None:
        super().__init__(f"the {backend} backend has no file access to its workspaces (remote agents keep their "
                         "own files)")


class BackendNotInstalled(MoleculeBoxError):
    """The backend a workspace needs is not installed (no entry point of that name)."""

    def __init__(self, name: str, installed: list[str], *, fix: str | None = None) -> None:
        self.name = name
        self.installed = sorted(installed)
        super().__init__(f"backend {name!r} is not installed (installed: {', '.join(self.installed) or 'none'}); "
                         + (fix or "install its plugin or choose another with CONTAINER_BACKEND"))


@dataclasses.dataclass(frozen=True)
class BackendSettings:
    """A backend's own settings: subclass it as a frozen dataclass, one :func:`option` per field, and name
    the subclass in ``settings_type``. Environment variable names are global: prefix yours with the
    backend's name unless you mean to share a variable (e.g. ``DOCKER_HOST``)."""

    def default_platform_url(self, bind_addr: str, port: int) -> str | None:
        """``PLATFORM_URL`` when it is unset: where this backend's workloads reach a box listening on
        ``bind_addr:port``. None: no opinion (the box's own address is used, unless another backend knows)."""
        return None

    def missing(self) -> list[str]:
        """The variables this backend needs and lacks (an API token, say), for ``molecule-box doctor``, which
        cannot otherwise tell a setting that is optional from one left unset. [] when nothing is missing."""
        return []


class WorkloadState(enum.StrEnum):
    RUNNING = "running"
    STARTING = "starting"
    STOPPED = "stopped"  # stopped on purpose, or exited
    MISSING = "missing"  # no such workload (never created, or destroyed)
    UNKNOWN = "unknown"  # the backend could not tell (engine unreachable): callers must not act destructively


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """What a backend can do; the box and the API consult these instead of backend names."""

    #: The box starts and stops workloads (False for remote agents: pause/restart change only state).
    lifecycle: bool = True
    #: Workloads run outside the box and are never restarted by it (Nomad's ``RemoteTasks``).
    remote: bool = False
    #: Tiers this backend can honour; create with another tier is refused with 400, never downgraded.
    tiers: frozenset[int] = frozenset({1, 2, 3, 4})
    #: The backend writes ``WorkloadSpec.auth_token`` into the workload as ``/configs/.auth_token`` (else it
    #: must deliver that token another way, e.g. as ``MOLECULE_WORKSPACE_TOKEN``: box-run workloads never
    #: register without one).
    prewrites_token: bool = False
    #: :meth:`Backend.logs` returns output.
    logs: bool = False
    #: The config-file operations (:meth:`BaseBackend.read_config_files`, ``write_config_files``,
    #: ``delete_config_files``) work on the workload's ``/configs``, whether it runs or not. Without them the
    #: files API answers 501 and templates are not copied (remote agents keep their own files).
    files: bool = False

    def public(self) -> dict[str, Any]:
        body = dataclasses.asdict(self)
        body["tiers"] = sorted(self.tiers)
        return body


@dataclasses.dataclass(frozen=True)
class WorkloadSpec:
    """Everything a backend needs to start one workspace's workload."""

    workspace_id: str
    name: str
    runtime: str
    tier: int
    #: Environment for the workload: decrypted secrets (workspace over global) plus the box's own variables.
    env: dict[str, str]
    #: URL of the box as the workload reaches it (``PLATFORM_URL``).
    platform_url: str
    #: The workspace's bearer token, fresh at every start (the older ones are revoked); with
    #: ``Capabilities.prewrites_token``, deliver it as ``/configs/.auth_token``.
    auth_token: str | None = None
    #: The workspace's free-form config (model, template ...).
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: The handle from a previous start, if any (restart reuses volumes it names).
    previous: Handle | None = None
    #: The create body's ``metadata`` (text values), e.g. ``region`` for a backend that places workloads.
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)
    #: With ``Capabilities.files``: a tar (names relative to ``/configs``, checked) to put into ``/configs``
    #: before the workload starts, when ``/configs`` has no ``config.yaml`` yet (a template's files, or the
    #: minimal ``config.yaml``); later starts keep what is there (edits through the files API survive them).
    seed_files: bytes | None = None

    def __repr__(self) -> str:  # never print env or token
        return f"WorkloadSpec(workspace_id={self.workspace_id!r}, runtime={self.runtime!r}, tier={self.tier})"


@dataclasses.dataclass(frozen=True)
class Workload:
    """What :meth:`Backend.start` returns."""

    handle: Handle
    #: URL the box forwards A2A calls to, if the backend knows it now (else the agent's register supplies it).
    url: str | None = None


@dataclasses.dataclass(frozen=True)
class WorkloadStatus:
    """What :meth:`Backend.inspect` reports."""

    state: WorkloadState
    exit_code: int | None = None
    oom_killed: bool = False
    health: str | None = None  # "healthy", "unhealthy", "starting" or None when the workload has no check
    detail: str | None = None
    started_at: float | None = None


@dataclasses.dataclass(frozen=True)
class BackendEvent:
    """Something the backend saw happen to a workload, pushed to the workspace's actor."""

    workspace_id: str
    #: "exited", "oom", "health", "removed"; "progress" (e.g. an image pull) is only shown, never acted on.
    kind: str
    exit_code: int | None = None
    health: str | None = None
    detail: str | None = None


S = TypeVar("S", bound=BackendSettings)


@dataclasses.dataclass(frozen=True)
class BackendContext(Generic[S]):
    """What the box hands a backend when it is created."""

    #: Stable id of this box (labels managed workloads so two boxes never take each other's).
    box_id: str
    #: The backend's own settings (an instance of its ``settings_type``), read from the environment.
    settings: S
    #: Push a :class:`BackendEvent` to its workspace's actor; never blocks.
    report: Callable[[BackendEvent], None]
    #: URL of the box as workloads reach it (``PLATFORM_URL``), also in every ``WorkloadSpec``.
    platform_url: str
    #: The address the box's API listens on (``BIND_ADDR``), for backends that check their workloads reach it.
    bind_addr: str


@runtime_checkable
class Backend(Protocol):
    """The interface every backend implements. :class:`BaseBackend` supplies the optional parts."""

    #: Entry-point name, e.g. ``"docker"``.
    name: str
    #: Version of the plugin distribution (shown by the loader and ``doctor``).
    version: str
    #: :data:`CONTRACT_VERSION` this backend was written for.
    contract_version: int
    #: The class of its own settings (:class:`BackendSettings` when it has none).
    settings_type: ClassVar[type[BackendSettings]]

    def capabilities(self) -> Capabilities:
        """Static facts about the backend. Called often; must be cheap and must not do I/O."""
        ...

    def admit(self, *, runtime: str, tier: int) -> None:
        """Called by ``POST /workspaces`` before anything is stored: raise :class:`BackendError` to refuse the
        workspace with a 400 carrying ``reason`` (e.g. a runtime the operator did not allow). Must be cheap and
        must not do I/O. :class:`BaseBackend` admits everything."""
        ...

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run for the box's lifetime in the box's nursery: open clients, watch event streams, reconnect.

        Call ``task_status.started()`` once the backend can take calls (or has
        scheduled its own reconnection: an unreachable engine must not stop
        the box from starting). Return only when cancelled.
        """
        ...

    async def start(self, spec: WorkloadSpec) -> Workload:
        """Create and start the workload. Idempotent per workspace: a leftover workload of the
        same workspace is replaced, never duplicated. Raises BackendError."""
        ...

    async def stop(self, handle: Handle, *, grace: float = 10.0) -> None:
        """Stop the workload, keeping its storage. Idempotent: a missing workload is success."""
        ...

    async def destroy(self, handle: Handle) -> None:
        """Stop and remove the workload and everything it owns (volumes, secrets). Idempotent."""
        ...

    async def inspect(self, handle: Handle) -> WorkloadStatus:
        """Observed state. A backend that cannot tell answers UNKNOWN rather than raising, so callers never
        treat a transient error as death (the platform's six-restarts incident)."""
        ...

    async def adopt(self, handle: Handle) -> Handle | None:
        """After a box restart: reattach to a workload that kept running, returning its (possibly refreshed)
        handle, or None when it is gone. Must not restart a healthy workload."""
        ...

    async def list_managed(self) -> list[Handle]:
        """Every workload this box's backend manages (labelled with ``box_id``), for adoption and the orphan
        sweep. Each handle carries ``workspace_id``."""
        ...

    async def logs(self, handle: Handle, *, tail: int = 100) -> str:
        """The workload's last output lines, for failure reasons and ``molecule-box logs``."""
        ...


@runtime_checkable
class ConfigFiles(Protocol):
    """The optional config-file operations of a backend whose ``Capabilities.files`` is True (see
    :class:`BaseBackend` for their rules). Not part of :class:`Backend`: a version-2 plugin written before
    them still loads, and says ``files=False`` by default."""

    async def read_config_files(self, handle: Handle) -> bytes: ...

    async def write_config_files(self, handle: Handle, archive: bytes, *, replace: bool = False) -> None: ...

    async def delete_config_files(self, handle: Handle, paths: list[str]) -> None: ...


class BaseBackend:
    """Convenience base: defaults for the optional parts of :class:`Backend`."""

    name = "base"
    version = "0"
    contract_version = CONTRACT_VERSION
    settings_type: ClassVar[type[BackendSettings]] = BackendSettings

    def __init__(self, context: BackendContext[Any]) -> None:
        self.context = context

    def capabilities(self) -> Capabilities:
        return Capabilities()

    def admit(self, *, runtime: str, tier: int) -> None:
        """Admits every workspace."""

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()

    async def adopt(self, handle: Handle) -> Handle | None:
        status = await self.inspect(handle)  # type: ignore[attr-defined]
        return None if status.state is WorkloadState.MISSING else handle

    async def logs(self, handle: Handle, *, tail: int = 100) -> str:
        return ""

    # -- config files (optional: Capabilities.files) -------------------------------------------
    #
    # Called by the workspace's actor only, like the lifecycle methods, on a running or stopped workload.
    # Archives are plain tars whose member names are relative to ``/configs`` (``config.yaml``,
    # ``plugins/<name>/manifest.json``); the box checks them with :mod:`.archive` before it calls (only
    # regular files and directories, no ``..``, no absolute names, no links, sizes capped), and a backend
    # must still never follow a link out of ``/configs``. ``.auth_token`` is the box's: the box never asks to
    # write or delete it, ``replace`` keeps it, and the API leaves it out of what it shows.

    async def read_config_files(self, handle: Handle) -> bytes:
        """A tar of everything under ``/configs`` (links included as links, never followed)."""
        raise FilesNotSupported(self.name)

    async def write_config_files(self, handle: Handle, archive: bytes, *, replace: bool = False) -> None:
        """Extract ``archive`` into ``/configs``, creating parent directories, every member owned by the agent's
        user (the image's uid/gid), modes as in the archive; files already there are overwritten. ``replace``:
        first remove everything else under ``/configs``. Nothing is restarted: the caller decides."""
        raise FilesNotSupported(self.name)

    async def delete_config_files(self, handle: Handle, paths: list[str]) -> None:
        """Remove each path (relative to ``/configs``, a file or a whole directory); a missing one is fine."""
        raise FilesNotSupported(self.name)


BackendFactory = Callable[[BackendContext[Any]], Backend]
