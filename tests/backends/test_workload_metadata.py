"""The create body's ``metadata`` (e.g. ``region``) reaches the backend in ``WorkloadSpec.metadata``, at the first
start and at every later one (it is kept with the workspace), instead of being dropped."""

from __future__ import annotations

from typing import Any, ClassVar

import httpx
import trio

from molecule_box.backends.base import BaseBackend, Handle, Workload, WorkloadSpec, WorkloadState, WorkloadStatus

from ..conftest import ADMIN, BoxRunner


class Placing(BaseBackend):
    """A lifecycle backend that only remembers the specs it was asked to start."""

    name = "placing"
    specs: ClassVar[list[WorkloadSpec]] = []

    async def start(self, spec: WorkloadSpec) -> Workload:
        self.specs.append(spec)
        return Workload(handle={"workspace_id": spec.workspace_id})

    async def stop(self, handle: Handle, *, grace: float = 10.0) -> None:
        pass

    async def destroy(self, handle: Handle) -> None:
        pass

    async def inspect(self, handle: Handle) -> WorkloadStatus:
        return WorkloadStatus(WorkloadState.RUNNING)

    async def list_managed(self) -> list[Handle]:
        return []


async def started(wid: str, count: int) -> list[dict[str, Any]]:
    with trio.fail_after(20):
        while len(mine := [s.metadata for s in Placing.specs if s.workspace_id == wid]) < count:
            await trio.sleep(0.05)
    return mine


async def test_metadata_reaches_the_backend_at_every_start(runner: BoxRunner) -> None:
    Placing.specs.clear()
    box = await runner.start(extra_backends={"placing": Placing})
    async with httpx.AsyncClient(base_url=box.urls[0], timeout=10, headers=ADMIN) as client:
        created = await client.post("/workspaces", json={"name": "p", "backend": "placing",
                                                         "metadata": {"region": "ams", "pool": "gpu-a"}})
        assert created.status_code == 201, created.text
        wid = created.json()["id"]
        assert await started(wid, 1) == [{"region": "ams", "pool": "gpu-a"}]
        plain = await client.post("/workspaces", json={"name": "q", "backend": "placing"})
        assert await started(plain.json()["id"], 1) == [{}]
        for bad in ({"region": 3}, {"bad key": "x"}, ["region"], {"region": "x" * 101}):
            refused = await client.post("/workspaces", json={"name": "b", "backend": "placing", "metadata": bad})
            assert refused.status_code == 400, (bad, refused.text)
    await runner.stop()
    box = await runner.start(extra_backends={"placing": Placing})
    async with httpx.AsyncClient(base_url=box.urls[0], timeout=10, headers=ADMIN) as client:
        assert (await client.post(f"/workspaces/{wid}/restart")).status_code in (200, 202)
        assert (await started(wid, 2))[-1] == {"region": "ams", "pool": "gpu-a"}
