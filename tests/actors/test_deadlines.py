"""Deadlines on trio's MockClock: exact, instant, and re-armed from SQLite after a restart."""

from __future__ import annotations

import itertools
import uuid
from pathlib import Path

import pytest
import trio
import trio.testing

from molecule_box.actors import commands as c
from molecule_box.backends import Workload, WorkloadSpec
from molecule_box.box import open_box
from molecule_box.models import Workspace, WorkspaceStatus
from molecule_box.schemas import Heartbeat
from molecule_box.store import workspaces as workspace_rows

from ..conftest import make_settings
from .stubs import LifecycleStub, receive

BASE = 1_700_000_000.0


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    # Jump only after real idleness: the store commits in a worker thread, which the clock must wait for, and a
    # COMMIT's fsync took up to 230 ms here (0.2 s let the clock jump during one, and the test failed).
    return trio.testing.MockClock(autojump_threshold=0.5)


def wall() -> float:
    return BASE + trio.current_time()


def external(status: WorkspaceStatus, **fields: object) -> Workspace:
    now = wall()
    return Workspace(id=str(uuid.uuid4()), name="w", status=status, runtime="external", backend="external",
                     created_at=now, updated_at=now, status_changed_at=now, url="http://127.0.0.1:9/", **fields)


async def add(box: object, ws: Workspace) -> None:
    await box.store.write(workspace_rows.insert(ws))  # type: ignore[attr-defined]
    box.supervisor.spawn(ws)  # type: ignore[attr-defined]


async def test_offline_exactly_at_deadline(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    settings = make_settings(tmp_path, REMOTE_LIVENESS_STALE_AFTER="90")
    async with open_box(settings, now=wall, announce=lambda t: None) as box:
        ws = external(WorkspaceStatus.ONLINE)
        await add(box, ws)
        await trio.sleep(60)
        await box.supervisor.ask(ws.id, c.Heartbeat(Heartbeat(workspace_id=ws.id)))
        beat = trio.current_time()
        with box.bus.subscribe(lambda e: e.type == "WORKSPACE_OFFLINE") as events:
            event = await receive(events)
        assert trio.current_time() - beat == pytest.approx(90, abs=0.01)
        assert event.workspace_id == ws.id
        assert box.supervisor.record(ws.id).status is WorkspaceStatus.OFFLINE  # type: ignore[union-attr]
        # offline is not a live state: no further deadline fires.
        await trio.sleep(1000)
        assert box.supervisor.record(ws.id).status is WorkspaceStatus.OFFLINE  # type: ignore[union-attr]


async def test_deadline_rearmed_from_stored_heartbeat(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    settings = make_settings(tmp_path, REMOTE_LIVENESS_STALE_AFTER="90")
    ws = external(WorkspaceStatus.ONLINE, last_heartbeat_at=wall())
    async with open_box(settings, now=wall, announce=lambda t: None) as box:
        await add(box, ws)
    await trio.sleep(50)  # the box is down for 50 s
    async with open_box(settings, now=wall, announce=lambda t: None) as box:
        start = wall()
        with box.bus.subscribe(lambda e: e.type == "WORKSPACE_OFFLINE") as events:
            await receive(events)
        # When the actor decided (its clock is the mock one), not when the event arrived: under load the
        # commit's fsync can take longer than the autojump threshold, and the clock jumps on meanwhile.
        went = box.supervisor.record(ws.id)
        assert went is not None and went.status_changed_at - start == pytest.approx(40, abs=0.01)


async def test_deadline_long_past_goes_offline_at_once(tmp_path: Path,
                                                       autojump_clock: trio.testing.MockClock) -> None:
    settings = make_settings(tmp_path, REMOTE_LIVENESS_STALE_AFTER="90")
    ws = external(WorkspaceStatus.ONLINE, last_heartbeat_at=wall() - 10_000)
    async with open_box(settings, now=wall, announce=lambda t: None) as box:
        with box.bus.subscribe(lambda e: e.type == "WORKSPACE_OFFLINE") as events:
            start = trio.current_time()
            await add(box, ws)
            await receive(events)
        assert trio.current_time() - start < 0.01


class NeverStarts(LifecycleStub):
    name = "never"

    async def start(self, spec: WorkloadSpec) -> Workload:
        await trio.sleep_forever()
        raise AssertionError


async def test_provision_timeout_fails_workspace(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    settings = make_settings(tmp_path, PROVISION_TIMEOUT_SECONDS="600")
    async with open_box(settings, now=wall, announce=lambda t: None, extra_backends={"never": NeverStarts}) as box:
        now = wall()
        ws = Workspace(id=str(uuid.uuid4()), name="slow", status=WorkspaceStatus.PROVISIONING, runtime="x",
                       backend="never", created_at=now, updated_at=now, status_changed_at=now)
        with box.bus.subscribe(lambda e: e.type == "WORKSPACE_PROVISION_FAILED") as events:
            await add(box, ws)
            event = await receive(events)
        assert trio.current_time() == pytest.approx(600, abs=0.5)
        assert event.payload["source"] == "provision_timeout"
        record = box.supervisor.record(ws.id)
        assert record is not None and record.status is WorkspaceStatus.FAILED
        assert "600" in (record.failure_reason or "")


async def test_supervisor_backoff_grows(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    settings = make_settings(tmp_path)
    async with open_box(settings, now=wall, announce=lambda t: None) as box:
        ws = external(WorkspaceStatus.ONLINE)
        await add(box, ws)
        gaps = []
        for _ in range(6):
            start = trio.current_time()
            with pytest.raises(Exception):
                await box.supervisor.ask(ws.id, c.Crash())
            # The next command waits in the mailbox until the restarted actor takes it.
            await box.supervisor.ask(ws.id, c.Heartbeat(Heartbeat(workspace_id=ws.id)))
            gaps.append(trio.current_time() - start)
        assert gaps[0] < 0.3 and gaps[-1] > 2.0, gaps
        # Each delay doubles, with +-20 % jitter: consecutive gaps grow by at least 2 * 0.8 / 1.2 = 1.33.
        assert all(b >= a * 1.25 for a, b in itertools.pairwise(gaps)), gaps
