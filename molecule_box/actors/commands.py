"""Messages a workspace actor understands. API handlers send commands and await their :class:`Reply`."""

from __future__ import annotations

import dataclasses
from typing import Any

import trio

from ..backends.base import BackendError, BackendEvent, Workload
from ..schemas import Heartbeat as HeartbeatBody


class Reply:
    """One answer from an actor: a value or an exception, set once."""

    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.value: Any = None
        self.error: BaseException | None = None

    def set(self, value: Any = None) -> None:
        if not self.done.is_set():
            self.value = value
            self.done.set()

    def fail(self, error: BaseException) -> None:
        if not self.done.is_set():
            self.error = error
            self.done.set()

    def unwrap(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


@dataclasses.dataclass(eq=False)
class Command:
    reply: Reply = dataclasses.field(default_factory=Reply, kw_only=True)


@dataclasses.dataclass(eq=False)
class Register(Command):
    url: str | None
    agent_card: dict[str, Any]
    mint_token: bool
    #: A bearer-less register claiming the open bootstrap: the caller's address (for its event), else None.
    bootstrap_from: str | None = None
    #: The row of the workspace token the register came with (None: the admin's, or a bootstrap).
    token_id: str | None = None


@dataclasses.dataclass(eq=False)
class Heartbeat(Command):
    body: HeartbeatBody


@dataclasses.dataclass(eq=False)
class UpdateCard(Command):
    agent_card: dict[str, Any]


@dataclasses.dataclass(eq=False)
class Patch(Command):
    changes: dict[str, Any]


@dataclasses.dataclass(eq=False)
class Pause(Command):
    pass


@dataclasses.dataclass(eq=False)
class Resume(Command):
    pass


@dataclasses.dataclass(eq=False)
class Hibernate(Command):
    force: bool = False


@dataclasses.dataclass(eq=False)
class Wake(Command):
    pass


@dataclasses.dataclass(eq=False)
class Restart(Command):
    pass


@dataclasses.dataclass(eq=False)
class Migrate(Command):
    """Move the workload to backend ``to``: the new one started and registered before the old one goes."""

    to: str


@dataclasses.dataclass(eq=False)
class Delete(Command):
    payload: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(eq=False)
class SecretsChanged(Command):
    """A secret this workspace inherits changed: lifecycle backends restart to pick it up."""


@dataclasses.dataclass(eq=False)
class Outbound(Command):
    """The workspace's A2A calls succeeded, the last at ``at`` (``last_outbound_at``). The proxy tells these
    once per activity flush, one per caller, and nobody waits for the reply: the call path stays lean."""

    at: float


@dataclasses.dataclass(eq=False)
class Seen(Command):
    """An authenticated request from the workspace's agent arrived at ``at`` (proof of life). Told by the
    supervisor at most every few seconds per workspace; nobody waits for the reply."""

    at: float


@dataclasses.dataclass(eq=False)
class ReadFiles(Command):
    """A tar of the workload's ``/configs`` (the backend's ``read_config_files``)."""


@dataclasses.dataclass(eq=False)
class WriteFiles(Command):
    """Extract a checked tar into the workload's ``/configs`` (``replace``: everything else goes first)."""

    archive: bytes
    replace: bool = False


@dataclasses.dataclass(eq=False)
class DeleteFiles(Command):
    """Remove paths (relative to ``/configs``) from the workload's config files."""

    paths: list[str]


@dataclasses.dataclass(eq=False)
class BootstrapFailed(Command):
    """The backend's platform saw the workload's runtime crash while booting (the control plane's bootstrap
    watcher): ``reason`` becomes the failure reason while the workspace is still provisioning."""

    reason: str


@dataclasses.dataclass(eq=False)
class Crash(Command):
    """Fault injection for tests: the actor raises while handling it (exercises the supervisor)."""


@dataclasses.dataclass(eq=False)
class OpDone:
    """A backend operation the actor started in the background has finished."""

    op_id: int
    kind: str
    result: Workload | None = None
    error: BackendError | None = None


@dataclasses.dataclass(eq=False)
class Observed:
    """The backend saw something happen to the workload (exit, OOM, health change)."""

    event: BackendEvent


Message = Command | OpDone | Observed
