"""The ``external`` backend: remote agents (laptops, CI runners, bare metal) that run themselves.

No lifecycle: the box never starts, stops or restarts them; liveness comes
only from their heartbeats; their token comes in the connection block at create
(or, with ``"bootstrap": "open"``, from their first register).
"""

from __future__ import annotations

from .._version import __version__
from .base import BaseBackend, Capabilities, Handle, Workload, WorkloadSpec, WorkloadState, WorkloadStatus


class ExternalBackend(BaseBackend):
    name = "external"
    version = __version__

    def capabilities(self) -> Capabilities:
        return Capabilities(lifecycle=False, remote=True, prewrites_token=False)

    async def start(self, spec: WorkloadSpec) -> Workload:
        return Workload(handle={"workspace_id": spec.workspace_id})

    async def stop(self, handle: Handle, *, grace: float = 10.0) -> None:
        return None

    async def destroy(self, handle: Handle) -> None:
        return None

    async def inspect(self, handle: Handle) -> WorkloadStatus:
        # The box cannot see a remote agent; its heartbeats are the only evidence of life.
        return WorkloadStatus(WorkloadState.UNKNOWN, detail="remote agent: liveness comes from heartbeats")

    async def adopt(self, handle: Handle) -> Handle | None:
        return handle

    async def list_managed(self) -> list[Handle]:
        return []
