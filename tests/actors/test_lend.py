"""A steady heartbeat is committed in its parked actor's name, without waking it (WorkspaceActor.lend); every
other heartbeat, and anything that arrives while a lent one commits, goes through the actor as before.
Whether the actor ran is counted with a trio instrument: its task's steps."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from molecule_box.actors import commands as c
from molecule_box.box import open_box
from molecule_box.models import WorkspaceStatus
from molecule_box.schemas import Heartbeat
from molecule_box.store import workspaces as workspace_rows

from ..conftest import make_settings
from .stubs import receive
from .test_deadlines import add, external, wall

S = WorkspaceStatus


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0.5)  # as in test_deadlines: a COMMIT may take 0.2 s


class Steps(trio.abc.Instrument):
    """How many times the task named ``name`` was scheduled."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name == self.name:
            self.count += 1


@contextlib.contextmanager
def actor_steps(workspace_id: str) -> Iterator[Steps]:
    steps = Steps(f"actor:{workspace_id}")
    trio.lowlevel.add_instrument(steps)
    try:
        yield steps
    finally:
        trio.lowlevel.remove_instrument(steps)


def drain(events: trio.MemoryReceiveChannel[object]) -> list[object]:
    seen = []
    while True:
        try:
            seen.append(events.receive_nowait())
        except trio.WouldBlock:
            return seen


async def test_a_steady_heartbeat_is_committed_without_waking_the_actor(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    async with open_box(make_settings(tmp_path), now=wall, announce=lambda t: None) as box:
        ws = external(S.ONLINE)
        await add(box, ws)
        await trio.sleep(1)  # the actor is parked on its mailbox
        with box.bus.subscribe(lambda e: e.type == "TASK_UPDATED") as events, actor_steps(ws.id) as steps:
            answer = await box.supervisor.ask(
                ws.id, c.Heartbeat(Heartbeat(workspace_id=ws.id, active_tasks=3, current_task="a")))
            assert steps.count == 0
            event = events.receive_nowait()  # published with the commit, before the answer
        assert answer == {"status": "ok"}
        assert event.payload["current_task"] == "a"  # type: ignore[attr-defined]
        record = box.supervisor.record(ws.id)
        assert record is not None and record.active_tasks == 3 and record.last_heartbeat_at == wall()
        stored = workspace_rows.get(box.store.db, ws.id)
        assert stored is not None and stored.active_tasks == 3 and stored.current_task == "a"
        assert box.metrics.heartbeats._value.get() == 1


async def test_a_lent_heartbeat_moves_the_parked_actors_deadline(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """The actor is not woken at the deadline the heartbeat replaced (90 s after it was parked), only at the
    new one, exactly."""
    settings = make_settings(tmp_path, REMOTE_LIVENESS_STALE_AFTER="90")
    async with open_box(settings, now=wall, announce=lambda t: None) as box:
        ws = external(S.ONLINE)
        await add(box, ws)
        await trio.sleep(60)
        with actor_steps(ws.id) as steps:
            await box.supervisor.ask(ws.id, c.Heartbeat(Heartbeat(workspace_id=ws.id)))
            beat = trio.current_time()
            await trio.sleep(80)
            assert steps.count == 0
        assert box.supervisor.record(ws.id).status is S.ONLINE  # type: ignore[union-attr]
        with box.bus.subscribe(lambda e: e.type == "WORKSPACE_OFFLINE") as events:
            await receive(events)
        assert trio.current_time() - beat == pytest.approx(90, abs=0.01)


@pytest.mark.parametrize(("status", "body", "after"), [
    (S.ONLINE, {"error_rate": 0.9}, S.DEGRADED),
    (S.OFFLINE, {}, S.ONLINE),
    (S.AWAITING_AGENT, {}, S.ONLINE),
])
async def test_a_heartbeat_that_changes_the_status_goes_through_the_actor(
        tmp_path: Path, autojump_clock: trio.testing.MockClock, status: WorkspaceStatus, body: dict[str, float],
        after: WorkspaceStatus) -> None:
    async with open_box(make_settings(tmp_path), now=wall, announce=lambda t: None) as box:
        ws = external(status)
        await add(box, ws)
        await trio.sleep(1)
        with actor_steps(ws.id) as steps:
            await box.supervisor.ask(ws.id, c.Heartbeat(Heartbeat(workspace_id=ws.id, **body)))
            assert steps.count > 0
        assert box.supervisor.record(ws.id).status is after  # type: ignore[union-attr]
        assert workspace_rows.get(box.store.db, ws.id).status is after  # type: ignore[union-attr]


async def test_what_arrives_while_a_lent_heartbeat_commits_waits_for_it(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """The second heartbeat finds a lent write in flight and goes to the actor, which decides from the record
    that write leaves: the task did not change again, so there is one TASK_UPDATED, not two."""
    async with open_box(make_settings(tmp_path), now=wall, announce=lambda t: None) as box:
        ws = external(S.ONLINE)
        await add(box, ws)
        await trio.sleep(1)
        answers: list[object] = []
        asked: list[int] = []  # trio runs the two tasks in either order

        async def beat(active: int) -> None:
            body = Heartbeat(workspace_id=ws.id, current_task="a", active_tasks=active)
            asked.append(active)
            answers.append(await box.supervisor.ask(ws.id, c.Heartbeat(body)))

        with box.bus.subscribe(lambda e: e.type == "TASK_UPDATED") as events, actor_steps(ws.id) as steps:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(beat, 1)
                nursery.start_soon(beat, 2)
            assert steps.count > 0
            assert len(drain(events)) == 1
        assert answers == [{"status": "ok"}] * 2
        record = box.supervisor.record(ws.id)
        assert record is not None and record.current_task == "a" and record.active_tasks == asked[1]
        assert workspace_rows.get(box.store.db, ws.id).active_tasks == asked[1]  # type: ignore[union-attr]


async def test_a_heartbeat_for_a_removed_workspace_is_refused_by_the_actor(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    async with open_box(make_settings(tmp_path), now=wall, announce=lambda t: None) as box:
        ws = external(S.ONLINE)
        await add(box, ws)
        await box.supervisor.ask(ws.id, c.Delete())
        with pytest.raises(Exception) as refused:
            await box.supervisor.ask(ws.id, c.Heartbeat(Heartbeat(workspace_id=ws.id)))
        assert getattr(refused.value, "status", None) == 404
