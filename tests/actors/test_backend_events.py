"""The actor's reactions to what a lifecycle backend observes, with a scripted backend on trio's MockClock:
exits confirmed by inspect, restart backoff and the restart limit, stale or expected exits ignored, health
degrading and recovering, adoption after a box restart."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from molecule_box.actors import commands as c
from molecule_box.backends import (
    BackendContext,
    BackendEvent,
    BaseBackend,
    Capabilities,
    Workload,
    WorkloadSpec,
    WorkloadState,
    WorkloadStatus,
)
from molecule_box.box import Box, open_box
from molecule_box.models import Event, Workspace, WorkspaceStatus
from molecule_box.schemas import Heartbeat
from molecule_box.store import workspaces as workspace_rows

from ..conftest import make_settings
from .stubs import receive

BASE = 1_700_000_000.0
S = WorkspaceStatus


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    # Jump only after real idleness: the store commits in a worker thread, which the clock must wait for, and a
    # COMMIT's fsync took up to 230 ms here (0.2 s let the clock jump during one, and the test failed).
    return trio.testing.MockClock(autojump_threshold=0.5)


def wall() -> float:
    return BASE + trio.current_time()


class Scripted(BaseBackend):
    """A lifecycle backend whose workloads' states the test sets; records every call."""

    name = "scripted"
    version = "1"

    def __init__(self, context: BackendContext) -> None:
        super().__init__(context)
        self.state: dict[str, WorkloadStatus] = {}
        self.starts: list[tuple[float, str]] = []
        self.generation = 0
        self.gone: set[str] = set()

    def capabilities(self) -> Capabilities:
        return Capabilities(lifecycle=True, prewrites_token=True, logs=True)

    async def start(self, spec: WorkloadSpec) -> Workload:
        self.generation += 1
        self.starts.append((trio.current_time(), spec.workspace_id))
        self.state[spec.workspace_id] = WorkloadStatus(WorkloadState.RUNNING)
        return Workload(handle={"workspace_id": spec.workspace_id, "generation": self.generation})

    async def stop(self, handle: dict[str, Any], *, grace: float = 10.0) -> None:
        self.state[handle["workspace_id"]] = WorkloadStatus(WorkloadState.STOPPED, exit_code=143)

    async def destroy(self, handle: dict[str, Any]) -> None:
        self.state.pop(handle["workspace_id"], None)

    async def inspect(self, handle: dict[str, Any]) -> WorkloadStatus:
        return self.state.get(handle["workspace_id"], WorkloadStatus(WorkloadState.MISSING))

    async def adopt(self, handle: dict[str, Any]) -> dict[str, Any] | None:
        return None if handle["workspace_id"] in self.gone else handle

    async def list_managed(self) -> list[dict[str, Any]]:
        return [{"workspace_id": wid} for wid in self.state]

    async def logs(self, handle: dict[str, Any], *, tail: int = 100) -> str:
        return "starting\nValueError: no model configured\n"

    def crash(self, wid: str, code: int = 3, *, oom: bool = False) -> None:
        self.state[wid] = WorkloadStatus(WorkloadState.STOPPED, exit_code=code, oom_killed=oom)
        self.context.report(BackendEvent(wid, "exited", exit_code=code))


class Harness:
    def __init__(self) -> None:
        self.backend: Scripted | None = None

    def factory(self, context: BackendContext) -> Scripted:
        self.backend = Scripted(context)
        return self.backend


def workspace(status: WorkspaceStatus, **fields: Any) -> Workspace:
    now = wall()
    wid = str(uuid.uuid4())
    return Workspace(id=wid, name="w", status=status, runtime="langgraph", backend="scripted", created_at=now,
                     updated_at=now, status_changed_at=now, last_heartbeat_at=now,
                     backend_state={"workspace_id": wid, "generation": 0}, **fields)


async def add(box: Box, ws: Workspace) -> None:
    await box.store.write(workspace_rows.insert(ws))
    box.supervisor.spawn(ws)


def box_settings(tmp_path: Path, **env: str) -> Any:
    return make_settings(tmp_path, CONTAINER_BACKEND="scripted", RESTART_BACKOFF_SECONDS="1", **env)


async def next_event(box: Box, wanted: Callable[[Event], bool], timeout: float = 1000) -> Event:
    with box.bus.subscribe(wanted) as events:
        with trio.fail_after(timeout):
            return await events.receive()


def status(box: Box, wid: str) -> WorkspaceStatus:
    record = box.supervisor.record(wid)
    assert record is not None
    return record.status


async def test_exit_is_restarted_with_backoff_until_the_limit(tmp_path: Path,
                                                             autojump_clock: trio.testing.MockClock) -> None:
    harness = Harness()
    async with open_box(box_settings(tmp_path, RESTART_LIMIT="2"), now=wall, announce=lambda t: None,
                        extra_backends={"scripted": harness.factory}) as box:
        backend = harness.backend
        assert backend is not None
        ws = workspace(S.ONLINE)
        backend.state[ws.id] = WorkloadStatus(WorkloadState.RUNNING)
        await add(box, ws)
        await trio.sleep(1)
        delays = []
        for attempt in (1, 2):
            with box.bus.subscribe(lambda e: e.type == "WORKSPACE_PROVISIONING") as events:
                crashed_at = trio.current_time()
                backend.crash(ws.id)
                event = await receive(events)
            assert event.payload["restart"] is True and event.payload["exit_code"] == 3
            assert event.payload["attempt"] == attempt
            while len(backend.starts) < attempt:
                await trio.sleep(0.1)
            delays.append(backend.starts[-1][0] - crashed_at)
            assert status(box, ws.id) is S.PROVISIONING
        assert delays == [pytest.approx(1, abs=0.01), pytest.approx(2, abs=0.01)]  # exponential backoff
        with box.bus.subscribe(lambda e: e.type == "WORKSPACE_PROVISION_FAILED") as events:
            backend.crash(ws.id, oom=True)
            failed = await receive(events)
        record = box.supervisor.record(ws.id)
        assert record is not None and record.status is S.FAILED
        assert failed.payload["source"] == "restart_policy" and failed.payload["oom_killed"] is True
        assert "3 times" in (record.failure_reason or "") and "OOM" in (record.failure_reason or "")
        assert (record.failure_reason or "").endswith("ValueError: no model configured")
        await trio.sleep(100)
        backend.crash(ws.id)  # a failed workspace is not restarted by anything but the operator
        await trio.sleep(100)
        assert len(backend.starts) == 2 and status(box, ws.id) is S.FAILED


async def test_stale_or_expected_exits_change_nothing(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    harness = Harness()
    async with open_box(box_settings(tmp_path), now=wall, announce=lambda t: None,
                        extra_backends={"scripted": harness.factory}) as box:
        backend = harness.backend
        assert backend is not None
        live, paused = workspace(S.ONLINE), workspace(S.PAUSED)
        backend.state[live.id] = WorkloadStatus(WorkloadState.RUNNING)
        backend.state[paused.id] = WorkloadStatus(WorkloadState.STOPPED, exit_code=143)
        await add(box, live)
        await add(box, paused)
        await trio.sleep(1)
        # An exit of a container that was already replaced: inspect says the current one runs.
        box.report(BackendEvent(live.id, "exited", exit_code=137))
        # The engine cannot tell (it is restarting): not evidence of death.
        unknown = workspace(S.ONLINE)
        backend.state[unknown.id] = WorkloadStatus(WorkloadState.UNKNOWN)
        await add(box, unknown)
        await trio.sleep(1)
        box.report(BackendEvent(unknown.id, "exited"))
        box.report(BackendEvent(paused.id, "exited", exit_code=143))  # the box's own stop
        await trio.sleep(100)
        assert backend.starts == []
        assert [status(box, w.id) for w in (live, unknown, paused)] == [S.ONLINE, S.ONLINE, S.PAUSED]


async def test_health_degrades_and_recovers_and_heartbeats_do_not_hide_it(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    harness = Harness()
    async with open_box(box_settings(tmp_path), now=wall, announce=lambda t: None,
                        extra_backends={"scripted": harness.factory}) as box:
        assert harness.backend is not None
        ws = workspace(S.ONLINE)
        harness.backend.state[ws.id] = WorkloadStatus(WorkloadState.RUNNING)
        await add(box, ws)
        await trio.sleep(1)
        box.report(BackendEvent(ws.id, "health", health="unhealthy"))
        event = await next_event(box, lambda e: e.type == "WORKSPACE_DEGRADED")
        assert event.payload["source"] == "healthcheck"
        await box.supervisor.ask(ws.id, c.Heartbeat(Heartbeat(workspace_id=ws.id)))
        assert status(box, ws.id) is S.DEGRADED  # a clean heartbeat does not override the failing check
        box.report(BackendEvent(ws.id, "health", health="healthy"))
        event = await next_event(box, lambda e: e.type == "WORKSPACE_ONLINE")
        assert event.payload == {"recovered_from": "unhealthy"}
        record = box.supervisor.record(ws.id)
        assert record is not None and record.status is S.ONLINE and record.failure_reason is None
        assert harness.backend.starts == []  # degraded is never a reason to restart


async def test_adoption_after_a_box_restart(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    settings = box_settings(tmp_path)
    running, stopped, gone = workspace(S.ONLINE), workspace(S.ONLINE), workspace(S.DEGRADED)
    harness = Harness()
    async with open_box(settings, now=wall, announce=lambda t: None,
                        extra_backends={"scripted": harness.factory}) as box:
        for ws in (running, stopped, gone):
            await box.store.write(workspace_rows.insert(ws))
    harness = Harness()
    original = harness.factory

    def seeded(context: BackendContext) -> Scripted:
        backend = original(context)
        backend.state[running.id] = WorkloadStatus(WorkloadState.RUNNING)
        backend.state[stopped.id] = WorkloadStatus(WorkloadState.STOPPED, exit_code=1)
        backend.gone.add(gone.id)
        return backend

    async with open_box(settings, now=wall, announce=lambda t: None, extra_backends={"scripted": seeded}) as box:
        await trio.sleep(50)
        backend = harness.backend
        assert backend is not None
        restarted = sorted(wid for _, wid in backend.starts)
        assert restarted == sorted([stopped.id, gone.id])  # the running one was adopted, not restarted
        assert status(box, running.id) is S.ONLINE
        assert status(box, stopped.id) is S.PROVISIONING and status(box, gone.id) is S.PROVISIONING


async def test_handle_is_kept_when_the_agent_registers_before_start_reports(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    gate = trio.Event()

    class SlowToReport(Scripted):
        async def start(self, spec: WorkloadSpec) -> Workload:
            workload = await super().start(spec)
            await gate.wait()  # the container runs and its agent registers before start returns
            return workload

    async with open_box(box_settings(tmp_path), now=wall, announce=lambda t: None,
                        extra_backends={"scripted": SlowToReport}) as box:
        ws = dataclasses.replace(workspace(S.PROVISIONING), backend_state=None)
        await add(box, ws)
        await trio.sleep(1)
        await box.supervisor.ask(ws.id, c.Register("http://127.0.0.1:9/", {"name": "a"}, mint_token=False))
        assert status(box, ws.id) is S.ONLINE
        gate.set()
        await trio.sleep(1)
        record = box.supervisor.record(ws.id)
        assert record is not None and record.status is S.ONLINE
        assert record.backend_state == {"workspace_id": ws.id, "generation": 1}
