"""The state machine as pure functions (reference §2.2), no sockets."""

from __future__ import annotations

import pytest

from molecule_box.actors import transitions as t
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
