"""A lifecycle backend whose workloads never exist: tests subclass it and define only ``start``."""

from __future__ import annotations

from typing import Any

import trio

from molecule_box.backends import BaseBackend, Capabilities, WorkloadState, WorkloadStatus


class LifecycleStub(BaseBackend):
    version = "1"

    def capabilities(self) -> Capabilities:
        return Capabilities(lifecycle=True)

    async def stop(self, handle: dict[str, object], *, grace: float = 10.0) -> None:
        return None

    async def destroy(self, handle: dict[str, object]) -> None:
        return None

    async def inspect(self, handle: dict[str, object]) -> WorkloadStatus:
        return WorkloadStatus(WorkloadState.MISSING)

    async def list_managed(self) -> list[dict[str, object]]:
        return []


async def receive(events: trio.MemoryReceiveChannel[Any], within: float = 3600) -> Any:
    """The next event, or TooSlowError after ``within`` seconds of (mock) time: a lost event fails the test
    instead of hanging the run."""
    with trio.fail_after(within):
        return await events.receive()
