"""A crashing actor is restarted with backoff, its error recorded, and its neighbours never notice."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from molecule_box.actors import Supervisor
from molecule_box.actors import commands as c
from molecule_box.actors.deps import ActorDeps
from molecule_box.actors.workspace import WorkspaceActor
from molecule_box.backends import BackendContext, BackendSettings, Workload, WorkloadSpec
from molecule_box.backends.loader import BackendRegistry
from molecule_box.bus import EventBus
from molecule_box.config import Settings
from molecule_box.errors import Conflict, ServiceUnavailable
from molecule_box.metrics import BoxMetrics
from molecule_box.models import WorkspaceStatus
from molecule_box.schemas import CreateWorkspace
from molecule_box.security.crypto import SecretBox, load_key
from molecule_box.store import Store
from molecule_box.store import workspaces as workspace_rows
from molecule_box.vault import Vault

from ..conftest import ADMIN, BoxRunner, bearer, joined, make_settings
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


@contextlib.asynccontextmanager
async def _parts(tmp_path: Path, extra: dict[str, Any] | None = None,
                 ) -> AsyncIterator[tuple[Settings, Store, BackendRegistry, trio.Nursery]]:
    """What a supervisor runs on without a box: a running store and a backend registry (with ``extra``
    backends), and their nursery."""
    settings = make_settings(tmp_path)
    tmp_path.mkdir(exist_ok=True)
    store = Store(settings.store_path)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            context = BackendContext(box_id="test", settings=BackendSettings(), report=lambda event: None,
                                     platform_url=settings.platform_url, bind_addr=settings.bind_addr)
            yield settings, store, BackendRegistry(context, nursery, extra=extra, settings=settings.backends), nursery
            nursery.cancel_scope.cancel()
    finally:
        store.close()


def _supervisor(store: Store, backends: BackendRegistry, settings: Settings) -> Supervisor:
    """A supervisor built from its parts, without a box."""
    return Supervisor(ActorDeps(store=store, bus=EventBus(), backends=backends, settings=settings,
                                metrics=BoxMetrics(), vault=Vault(store, SecretBox(load_key(settings))), now=time.time))


async def test_supervisor_without_a_box(tmp_path: Path) -> None:
    """The supervisor takes its parts, not the box: built here from a store, a bus and a backend registry,
    it creates a family, runs the tree rules over it and purges it once its actors have exited."""
    async with _parts(tmp_path) as (settings, store, backends, nursery):
        supervisor = _supervisor(store, backends, settings)
        assert await nursery.start(supervisor.run) == 0
        parent = await supervisor.create(CreateWorkspace(name="parent", external=True))
        assert parent.workspace.status is WorkspaceStatus.AWAITING_AGENT and parent.token
        child = await supervisor.create(CreateWorkspace(name="child", external=True, url="http://127.0.0.1:9/",
                                                        parent_id=parent.workspace.id))
        assert child.workspace.status is WorkspaceStatus.ONLINE
        assert await supervisor.pause_tree(parent.workspace.id) == 2
        with pytest.raises(Conflict, match='"parent" is paused'):
            await supervisor.wake(child.workspace.id)
        assert await supervisor.resume_tree(parent.workspace.id) == ("awaiting_agent", 2)
        assert await supervisor.delete_tree(parent.workspace.id, purge=True) == 1
        assert supervisor.slots == {}
        assert workspace_rows.all_live(store.db) == []
        assert workspace_rows.get(store.db, child.workspace.id) is None


async def test_restore_reports_started_once_every_actor_has_taken_its_first_step(tmp_path: Path) -> None:
    """The restore's figure (and the box's readiness) covers each actor's resumption, not only its spawn.

    The spawned actors run in the scheduling batch after the spawns, which trio runs forwards or backwards
    at random: reported from the spawning step itself, the restore's caller would find them unstarted about
    half the time, so eight restores in a row catch it with a chance of 255 in 256."""
    async with _parts(tmp_path) as (settings, store, backends, _):
        first = _supervisor(store, backends, settings)
        async with trio.open_nursery() as actors:
            await actors.start(first.run)
            for i in range(20):
                await first.create(CreateWorkspace(name=f"ws-{i}", external=True))
            actors.cancel_scope.cancel()
        for _ in range(8):
            again = _supervisor(store, backends, settings)
            async with trio.open_nursery() as actors:
                assert await actors.start(again.run) == 20
                parked = [slot.workspace_id for slot in again.slots.values()
                          if slot.actor is not None and slot.actor._parked is not None]
                assert len(parked) == 20, f"only {len(parked)} of 20 actors had run when the restore ended"
                actors.cancel_scope.cancel()


class GatedBackend(LifecycleStub):
    """A lifecycle backend whose start waits for the test to open its gate, and says whether it was cancelled."""

    name = "gated"

    def __init__(self, context: BackendContext) -> None:
        super().__init__(context)
        self.gate = trio.Event()
        self.started = trio.Event()
        self.cancelled = False

    async def start(self, spec: WorkloadSpec) -> Workload:
        self.started.set()
        try:
            await self.gate.wait()
        except trio.Cancelled:
            self.cancelled = True
            raise
        return Workload(handle={"workspace_id": spec.workspace_id})


async def test_an_actor_has_a_nursery_only_while_it_has_background_work(tmp_path: Path) -> None:
    """Most actors never start a backend operation, and a nursery for each costs a third of its first step
    at restore: it opens for a start and closes once the start has reported, and a delete during a start
    cancels the start with the actor (no child outlives its actor)."""
    async with _parts(tmp_path, extra={"gated": GatedBackend}) as (settings, store, backends, nursery):
        gated = await backends.get("gated")
        assert isinstance(gated, GatedBackend)
        supervisor = _supervisor(store, backends, settings)
        await nursery.start(supervisor.run)

        def actor_of(wid: str) -> WorkspaceActor:
            actor = supervisor.slots[wid].actor
            assert actor is not None
            return actor

        remote = (await supervisor.create(CreateWorkspace(name="remote", external=True))).workspace.id
        await trio.testing.wait_all_tasks_blocked()
        assert actor_of(remote)._nursery is None

        run = (await supervisor.create(CreateWorkspace(name="run", backend="gated"))).workspace.id
        with trio.fail_after(5):
            await gated.started.wait()
        starting = actor_of(run)._nursery
        assert starting is not None and len(starting.child_tasks) == 1
        gated.gate.set()
        with trio.fail_after(5):
            while actor_of(run)._nursery is not None:
                await trio.sleep(0.01)
        assert workspace_rows.get(store.db, run).backend_state == {"workspace_id": run}

        gated.gate, gated.started = trio.Event(), trio.Event()
        again = (await supervisor.create(CreateWorkspace(name="again", backend="gated"))).workspace.id
        with trio.fail_after(5):
            await gated.started.wait()
        actor = actor_of(again)
        assert await supervisor.delete_tree(again, purge=True) == 0  # no descendants
        assert gated.cancelled and again not in supervisor.slots and actor._nursery is None
        assert actor_of(remote)._nursery is None and actor_of(run)._nursery is None
        nursery.cancel_scope.cancel()
