"""The state machine as pure functions: every verb and its refusals, no sockets."""

from __future__ import annotations

import dataclasses

import pytest

from molecule_box.actors import transitions as t
from molecule_box.errors import Conflict, NotFound
from molecule_box.models import Workspace, WorkspaceStatus
from molecule_box.schemas import Heartbeat

S = WorkspaceStatus
WID = "2f1b6a2e-7c51-4d33-9e1a-0c8a5d0f1b2c"


def ws(status: WorkspaceStatus, **fields: object) -> Workspace:
    return Workspace(id=WID, name="w", status=status, runtime="external", backend="external", created_at=0.0,
                     updated_at=0.0, **fields)


def beat(**fields: object) -> Heartbeat:
    return Heartbeat(workspace_id=WID, **fields)


def kinds(outcome: t.Outcome) -> list[str]:
    return [kind for kind, _ in outcome.events]


@pytest.mark.parametrize(("before", "after"), [
    (S.PROVISIONING, S.ONLINE), (S.OFFLINE, S.ONLINE), (S.ONLINE, S.ONLINE), (S.DEGRADED, S.ONLINE),
    (S.FAILED, S.FAILED), (S.PAUSED, S.PAUSED), (S.HIBERNATED, S.HIBERNATED),
    (S.AWAITING_AGENT, S.ONLINE),  # an agent given its token may skip register (the SDK's connect --token)
])
def test_heartbeat_moves_only_what_it_may(before: WorkspaceStatus, after: WorkspaceStatus) -> None:
    outcome = t.heartbeat(ws(before), beat(), 10.0)
    assert outcome.workspace.status is after
    assert outcome.workspace.last_heartbeat_at == 10.0
    assert kinds(outcome)[-1] == "WORKSPACE_HEARTBEAT"


def test_degraded_by_error_rate_or_wedge_and_recovery() -> None:
    degraded = t.heartbeat(ws(S.ONLINE), beat(error_rate=0.5, sample_error="boom"), 1.0)
    assert degraded.workspace.status is S.DEGRADED
    assert degraded.events[0] == ("WORKSPACE_DEGRADED", {"error_rate": 0.5, "sample_error": "boom"})
    wedged = t.heartbeat(ws(S.ONLINE), beat(runtime_state="wedged"), 1.0)
    assert wedged.workspace.status is S.DEGRADED
    assert t.heartbeat(degraded.workspace, beat(error_rate=0.2), 2.0).workspace.status is S.DEGRADED
    assert t.heartbeat(degraded.workspace, beat(error_rate=0.05), 2.0).workspace.status is S.ONLINE
    managed = beat(error_rate=0.9, runtime_metadata={"capabilities": {"status_mgmt": True}})
    assert t.heartbeat(ws(S.ONLINE), managed, 1.0).workspace.status is S.ONLINE


def test_heartbeat_snapshot_and_task_event() -> None:
    outcome = t.heartbeat(ws(S.ONLINE), beat(current_task="summarise", active_tasks=2, uptime_seconds=9.7,
                                             monthly_spend=10**15), 5.0)
    new = outcome.workspace
    assert (new.current_task, new.active_tasks, new.uptime_seconds) == ("summarise", 2, 9)
    assert new.monthly_spend == t.SPEND_CAP
    assert kinds(outcome) == ["TASK_UPDATED", "WORKSPACE_HEARTBEAT"]
    same = t.heartbeat(new, beat(current_task="summarise", active_tasks=2), 6.0)
    assert kinds(same) == ["WORKSPACE_HEARTBEAT"]
    assert same.workspace.monthly_spend == t.SPEND_CAP  # 0 means "no update"


def test_register_from_any_state_but_keeps_backend_url() -> None:
    for status in (S.FAILED, S.PAUSED, S.HIBERNATED, S.OFFLINE, S.AWAITING_AGENT):
        out = t.register(ws(status), "http://a/", {"name": "x"}, 3.0)
        assert out.workspace.status is S.ONLINE and out.workspace.url == "http://a/"
    owned = ws(S.PROVISIONING, url="http://127.0.0.1:40001", url_from_backend=True)
    assert t.register(owned, "http://ws-abc:8000", {}, 3.0).workspace.url == "http://127.0.0.1:40001"


def test_deadlines() -> None:
    online = ws(S.ONLINE, last_heartbeat_at=100.0)
    assert t.liveness_deadline(online, 90) == 190.0
    assert t.liveness_deadline(ws(S.PAUSED, last_heartbeat_at=100.0), 90) is None
    assert t.liveness_deadline(ws(S.ONLINE, status_changed_at=50.0), 90) == 140.0
    assert t.provision_deadline(ws(S.PROVISIONING, status_changed_at=10.0), 600) == 610.0
    assert t.provision_deadline(online, 600) is None
    offline = t.went_offline(online, 190.0)
    assert offline.workspace.status is S.OFFLINE and kinds(offline) == ["WORKSPACE_OFFLINE"]


def test_authenticated_traffic_is_proof_of_life_without_extra_writes() -> None:
    online = ws(S.ONLINE, last_heartbeat_at=100.0)
    # Within a third of the deadline of the last heartbeat: nothing to record (an on-time agent costs no write).
    assert t.seen(online, 129.0, 90) is None
    later = t.seen(online, 150.0, 90)
    assert later is not None and later.workspace.last_seen_at == 150.0 and later.events == []
    assert later.workspace.status is S.ONLINE and later.workspace.last_heartbeat_at == 100.0
    assert t.liveness_deadline(later.workspace, 90) == 240.0  # moved by the request, not by the heartbeat
    assert t.seen(later.workspace, 170.0, 90) is None  # measured from the newest proof
    # A heartbeat after the request is the newest proof again.
    beaten = t.heartbeat(later.workspace, beat(), 200.0).workspace
    assert t.liveness_deadline(beaten, 90) == 290.0
    # Only a live workspace's deadline moves: requests bring nothing back online and touch no parked state.
    for status in (S.OFFLINE, S.PAUSED, S.AWAITING_AGENT, S.FAILED, S.HIBERNATED):
        assert t.seen(ws(status, last_heartbeat_at=100.0), 1000.0, 90) is None


def box_run(status: WorkspaceStatus, **fields: object) -> Workspace:
    """A workspace whose workload the box runs, with the URL its backend gave it."""
    return dataclasses.replace(ws(status, **fields), runtime="langgraph", backend="docker", tier=3,
                               url="http://127.0.0.1:30001", url_from_backend=True)


@pytest.mark.parametrize(("lifecycle", "url", "status", "event"), [
    (True, None, S.PROVISIONING, ("WORKSPACE_PROVISIONING", {"name": "w", "tier": 3, "runtime": "external"})),
    (False, "https://agent.example", S.ONLINE, ("WORKSPACE_ONLINE", {"name": "w", "external": True})),
    (False, None, S.AWAITING_AGENT, ("WORKSPACE_AWAITING_AGENT", {"name": "w", "external": True})),
])
def test_created_initial_status(lifecycle: bool, url: str | None, status: WorkspaceStatus,
                                event: t.EventSpec) -> None:
    outcome = t.created(ws(S.PROVISIONING, url=url), lifecycle=lifecycle)
    assert outcome.workspace.status is status
    assert outcome.events == [event]


def test_pause_stops_and_drops_the_backend_url() -> None:
    outcome = t.pause(box_run(S.ONLINE, active_tasks=2), 5.0)
    new = outcome.workspace
    assert (new.status, new.active_tasks, new.url, new.status_changed_at) == (S.PAUSED, 0, None, 5.0)
    assert outcome.events == [("WORKSPACE_PAUSED", {"name": "w"})]
    remote = t.pause(ws(S.ONLINE, url="https://agent.example"), 5.0).workspace
    assert remote.url == "https://agent.example"  # a remote agent keeps its own URL


def test_pause_refusals() -> None:
    with pytest.raises(NotFound, match="already paused") as paused:
        t.pause(ws(S.PAUSED), 1.0)
    assert paused.value.status == 404  # the platform's answer, not a 409
    with pytest.raises(NotFound) as removed:
        t.pause(ws(S.REMOVED), 1.0)
    assert removed.value.extra == {"deleted": True}


def test_resume() -> None:
    up = t.resume(ws(S.PAUSED, url="https://agent.example"), 7.0, lifecycle=False)
    assert up.workspace.status is S.AWAITING_AGENT  # the agent stopped its loop on pause: it registers again
    assert up.workspace.last_heartbeat_at == 7.0  # a full interval to show it is there
    assert up.events == [("WORKSPACE_AWAITING_AGENT", {"name": "w", "external": True})]
    started = t.resume(box_run(S.PAUSED, failure_reason="old"), 7.0, lifecycle=True)
    assert (started.workspace.status, started.workspace.failure_reason) == (S.PROVISIONING, None)
    assert kinds(started) == ["WORKSPACE_PROVISIONING"]
    woken = t.resume(ws(S.HIBERNATED, url="https://agent.example"), 7.0, lifecycle=False)
    assert woken.workspace.status is S.ONLINE and woken.events[0][1]["woken"] is True
    with pytest.raises(NotFound, match="not paused"):
        t.resume(ws(S.ONLINE), 7.0, lifecycle=False)


def test_wake() -> None:
    assert t.wake(ws(S.HIBERNATED), 1.0, lifecycle=False).workspace.status is S.AWAITING_AGENT
    online = t.wake(ws(S.HIBERNATED, url="https://agent.example"), 1.0, lifecycle=False)
    assert online.events == [("WORKSPACE_ONLINE", {"name": "w", "external": True, "woken": True})]
    assert t.wake(box_run(S.HIBERNATED), 1.0, lifecycle=True).workspace.status is S.PROVISIONING
    with pytest.raises(Conflict, match="is paused, not hibernated"):
        t.wake(ws(S.PAUSED), 1.0, lifecycle=False)


def test_hibernate() -> None:
    stopping = t.hibernate(box_run(S.ONLINE), 2.0, lifecycle=True, force=False)
    assert stopping.workspace.status is S.HIBERNATING and stopping.events == []
    done = t.hibernated(stopping.workspace, 3.0)
    assert (done.workspace.status, done.workspace.url) == (S.HIBERNATED, None)
    assert done.events == [("WORKSPACE_HIBERNATED", {"name": "w", "tier": 3})]
    assert t.hibernate(ws(S.ONLINE), 2.0, lifecycle=False, force=False).workspace.status is S.HIBERNATED
    with pytest.raises(Conflict) as busy:
        t.hibernate(ws(S.ONLINE, active_tasks=2), 2.0, lifecycle=False, force=False)
    assert busy.value.extra == {"active_tasks": 2}
    assert t.hibernate(ws(S.ONLINE, active_tasks=2), 2.0, lifecycle=False, force=True).workspace.status is S.HIBERNATED
    with pytest.raises(NotFound, match="not online"):
        t.hibernate(ws(S.PAUSED), 2.0, lifecycle=False, force=False)


def test_restart() -> None:
    outcome = t.restart(box_run(S.FAILED, failure_reason="boom"), 4.0, lifecycle=True)
    new = outcome.workspace
    assert (new.status, new.failure_reason, new.url) == (S.PROVISIONING, None, None)
    assert outcome.events == [("WORKSPACE_PROVISIONING", {"name": "w", "tier": 3, "runtime": "langgraph",
                                                          "restart": True})]
    with pytest.raises(Conflict, match="restart the agent itself"):
        t.restart(ws(S.ONLINE), 4.0, lifecycle=False)
    with pytest.raises(NotFound):
        t.restart(box_run(S.REMOVED), 4.0, lifecycle=True)


def test_restarting_after_a_crash() -> None:
    outcome = t.restarting(box_run(S.ONLINE), 4.0, exit_code=137, oom_killed=True, attempt=2, delay=1.5)
    assert outcome.workspace.status is S.PROVISIONING
    assert outcome.events[0][1] == {"name": "w", "tier": 3, "runtime": "langgraph", "restart": True,
                                    "reason": "oom_killed", "exit_code": 137, "oom_killed": True, "attempt": 2,
                                    "delay_seconds": 1.5}


def test_delete() -> None:
    outcome = t.delete(ws(S.ONLINE, active_tasks=1), 9.0, {"cascade_deleted": 2})
    assert outcome is not None
    assert (outcome.workspace.status, outcome.workspace.active_tasks) == (S.REMOVED, 0)
    assert outcome.events == [("WORKSPACE_REMOVED", {"cascade_deleted": 2})]
    assert t.delete(outcome.workspace, 10.0, {}) is None  # deleting twice is not an error


def test_a_move_is_recorded_from_start_to_end_and_changes_no_status() -> None:
    old = dataclasses.replace(ws(S.ONLINE, url="http://127.0.0.1:9001"), backend="docker")
    started = t.migrating(old, "swarm")
    assert started.workspace is old
    assert started.events == [("WORKSPACE_MIGRATING", {"name": "w", "from": "docker", "to": "swarm"})]
    moved = t.migrated(old, 7.0, "swarm", {"service_id": "s1"}, "http://127.0.0.1:9002")
    new = moved.workspace
    assert (new.backend, new.backend_state, new.url, new.status, new.updated_at) == (
        "swarm", {"service_id": "s1"}, "http://127.0.0.1:9002", S.ONLINE, 7.0)
    assert moved.events == [("WORKSPACE_MIGRATED", {"name": "w", "from": "docker", "to": "swarm"})]
    registered = dataclasses.replace(old, url="http://127.0.0.1:9002")  # the new agent registered, then it failed
    failed = t.migration_failed(registered, 8.0, "swarm", "no such image", "http://127.0.0.1:9001")
    assert (failed.workspace.backend, failed.workspace.url, failed.workspace.status) == (
        "docker", "http://127.0.0.1:9001", S.ONLINE)
    assert failed.events == [("WORKSPACE_MIGRATION_FAILED", {"name": "w", "from": "docker", "to": "swarm",
                                                             "error": "no such image"})]
