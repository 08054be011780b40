"""A heartbeat that changes nothing but what it reports is committed by the supervisor (its columns only) and
told to the actor without a round trip; one that changes a status goes through the actor. Real box, real
SQLite file, trio's MockClock for the deadlines."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from molecule_box.actors import commands as c
from molecule_box.box import open_box
from molecule_box.models import Workspace, WorkspaceStatus
from molecule_box.schemas import Heartbeat
from molecule_box.store import workspaces as workspace_rows

from ..conftest import make_settings
from .stubs import receive
from .test_deadlines import add, autojump_clock, external, wall

__all__ = ["autojump_clock"]  # the fixture, used by name


def stored(box: object, wid: str) -> Workspace:
    row = workspace_rows.get(box.store.db, wid)  # type: ignore[attr-defined]
    assert row is not None
    return row


def saves(box: object, wid: str) -> int:
    actor = box.supervisor.slots[wid].actor  # type: ignore[attr-defined]
    assert actor is not None
    return int(actor.saves)


async def test_a_quiet_heartbeat_is_committed_before_its_answer_and_rearms_the_deadline(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    settings = make_settings(tmp_path, REMOTE_LIVENESS_STALE_AFTER="90")
    async with open_box(settings, now=wall, announce=lambda t: None) as box:
        ws = external(WorkspaceStatus.ONLINE, last_heartbeat_at=wall())
        await add(box, ws)
        await trio.sleep(60)
        before = saves(box, ws.id)
        with box.bus.subscribe(lambda e: e.type in ("WORKSPACE_HEARTBEAT", "WORKSPACE_OFFLINE")) as events:
            assert await box.supervisor.heartbeat(ws.id, Heartbeat(workspace_id=ws.id, active_tasks=2)) == {
                "status": "ok"}
            row = stored(box, ws.id)  # committed before the answer
            assert row.active_tasks == 2 and row.last_heartbeat_at is not None
            assert ws.last_heartbeat_at is not None and row.last_heartbeat_at >= ws.last_heartbeat_at + 60
            heartbeat = await receive(events)
            assert heartbeat.type == "WORKSPACE_HEARTBEAT" and heartbeat.payload["active_tasks"] == 2
            record = box.supervisor.record(ws.id)
            assert record is not None and record.active_tasks == 2  # the actor took it into its record
            offline = await receive(events)
        assert offline.type == "WORKSPACE_OFFLINE"
        # From the new heartbeat, not the old; when the actor decided (on the mock clock), not when the event
        # arrived: a slow fsync lets the clock jump on meanwhile.
        went = box.supervisor.record(ws.id)
        assert went is not None and went.status_changed_at - row.last_heartbeat_at == pytest.approx(90, abs=0.01)
        assert saves(box, ws.id) == before + 1  # only the offline transition was the actor's save


async def test_a_heartbeat_that_changes_the_status_goes_through_the_actor(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    settings = make_settings(tmp_path, REMOTE_LIVENESS_STALE_AFTER="90")
    async with open_box(settings, now=wall, announce=lambda t: None) as box:
        ws = external(WorkspaceStatus.OFFLINE)
        await add(box, ws)
        await trio.sleep(1)  # the actor has started
        before = saves(box, ws.id)
        with box.bus.subscribe(lambda e: e.type == "WORKSPACE_ONLINE") as events:
            await box.supervisor.heartbeat(ws.id, Heartbeat(workspace_id=ws.id))
            await receive(events)
        assert saves(box, ws.id) == before + 1
        assert stored(box, ws.id).status is WorkspaceStatus.ONLINE


async def test_an_actor_save_after_the_quiet_commit_is_followed_by_the_heartbeat_again(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """The actor saves its whole record (without the heartbeat, not told yet) after the supervisor's op: the
    row then holds the older values until the actor, told of the heartbeat, commits it again."""
    settings = make_settings(tmp_path, REMOTE_LIVENESS_STALE_AFTER="90")
    async with open_box(settings, now=wall, announce=lambda t: None) as box:
        ws = external(WorkspaceStatus.ONLINE, last_heartbeat_at=wall())
        await add(box, ws)
        await trio.sleep(1)
        patch = c.Patch(changes={"role": "patched"})
        box.supervisor.tell(ws.id, patch)  # waits in the mailbox: the actor saves it after the heartbeat's op
        await box.supervisor.heartbeat(ws.id, Heartbeat(workspace_id=ws.id, active_tasks=3))
        with trio.fail_after(5):
            await patch.reply.done.wait()
            while (row := stored(box, ws.id)).active_tasks != 3:
                await trio.sleep(0.5)
        assert row.role == "patched"
        record = box.supervisor.record(ws.id)
        assert record is not None and record.active_tasks == 3 and record.role == "patched"
