"""A crashing actor is restarted with backoff, its error recorded, and its neighbours never notice."""

from __future__ import annotations

import httpx
import trio

from molecule_box.actors import commands as c
from molecule_box.backends import Workload, WorkloadSpec
from molecule_box.errors import ServiceUnavailable

from ..conftest import ADMIN, BoxRunner, bearer, joined
from .stubs import LifecycleStub


async def test_crashing_actor_is_restarted_and_neighbour_unaffected(runner: BoxRunner) -> None:
    box = await runner.start()
    async with httpx.AsyncClient(base_url=box.urls[0], timeout=10) as client:
        victim, victim_tok = await joined(client, "victim")
        neighbour, neighbour_tok = await joined(client, "neighbour")
        for _ in range(3):
            try:
                await box.supervisor.ask(victim, c.Crash())
                raise AssertionError("the injected fault did not raise")
            except ServiceUnavailable as exc:
                assert "restarted" in exc.message
            # The neighbour keeps answering while the victim's actor restarts.
            beat = await client.post("/registry/heartbeat", json={"workspace_id": neighbour},
                                     headers=bearer(neighbour_tok))
            assert beat.status_code == 200
        with trio.fail_after(5):
            while True:
                beat = await client.post("/registry/heartbeat", json={"workspace_id": victim},
                                         headers=bearer(victim_tok))
                if beat.status_code == 200:
                    break
                await trio.sleep(0.05)
        failures = (await client.get(f"/workspaces/{victim}/failures", headers=ADMIN)).json()
        assert len(failures["actor_failures"]) == 3
        assert "injected actor fault" in failures["actor_failures"][0]["error"]
        assert box.supervisor.slots[victim].restarts == 3
        assert (await client.get(f"/workspaces/{neighbour}/failures", headers=ADMIN)).json()["actor_failures"] == []
        metrics = (await client.get("/metrics")).text
        assert "molecule_box_actor_restarts_total 3.0" in metrics
        assert (await client.get("/health")).json()["status"] == "ok"


class ExplodingBackend(LifecycleStub):
    """A lifecycle backend whose start raises an unexpected error (a plugin bug, not a BackendError)."""

    name = "exploding"

    async def start(self, spec: WorkloadSpec) -> Workload:
        raise RuntimeError("plugin bug")


async def test_buggy_backend_crashes_only_its_workspace(runner: BoxRunner) -> None:
    box = await runner.start(extra_backends={"exploding": ExplodingBackend})
    async with httpx.AsyncClient(base_url=box.urls[0], timeout=10) as client:
        neighbour, token = await joined(client, "neighbour")
        bad = await client.post("/workspaces", json={"name": "bad", "backend": "exploding"}, headers=ADMIN)
        assert bad.status_code == 201 and bad.json()["status"] == "provisioning"
        wid = bad.json()["id"]
        with trio.fail_after(5):
            while not (await client.get(f"/workspaces/{wid}/failures", headers=ADMIN)).json()["actor_failures"]:
                await trio.sleep(0.05)
        failures = (await client.get(f"/workspaces/{wid}/failures", headers=ADMIN)).json()["actor_failures"]
        assert "plugin bug" in failures[0]["error"]
        beat = await client.post("/registry/heartbeat", json={"workspace_id": neighbour}, headers=bearer(token))
        assert beat.status_code == 200
        # The crash loop ends: after five crashes in a row the workspace is parked as failed, with the reason.
        with trio.fail_after(15):
            while (await client.get(f"/workspaces/{wid}", headers=ADMIN)).json()["status"] != "failed":
                await trio.sleep(0.1)
        got = (await client.get(f"/workspaces/{wid}", headers=ADMIN)).json()
        assert "crashed 5 times" in got["failure_reason"] and "plugin bug" in got["failure_reason"]
        deleted = await client.delete(f"/workspaces/{wid}", headers=ADMIN)
        assert deleted.status_code == 200
