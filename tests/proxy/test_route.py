"""The routing decision of an A2A call, every branch, without a server."""

from __future__ import annotations

from typing import Any

import pytest

from molecule_box.models import Workspace, WorkspaceStatus
from molecule_box.proxy.route import FORWARD, INBOX, Decision, Queue, Refuse, decide, when_busy
from molecule_box.security.ssrf import NO_INBOUND

S = WorkspaceStatus


def ws(status: S = S.ONLINE, *, url: str | None = "http://127.0.0.1:9000", backend: str = "docker",
       active: int = 0, limit: int = 1, capabilities: dict[str, bool] | None = None) -> Workspace:
    meta: dict[str, Any] = {"capabilities": capabilities} if capabilities is not None else {}
    return Workspace(id="w", name="w", status=status, runtime="langgraph", backend=backend, created_at=0.0,
                     updated_at=0.0, url=url, active_tasks=active, max_concurrent_tasks=limit, runtime_metadata=meta)


def decide_for(target: Workspace, message_id: str | None, *, delivery: bool = False) -> Decision:
    """The decision as the proxy takes it, with the external backend standing for any remote one."""
    return decide(target, message_id, remote=target.backend == "external", delivery=delivery)


def refusal(decision: object) -> tuple[int, dict[str, Any], bool]:
    assert isinstance(decision, Refuse), decision
    return decision.error.status, decision.error.body(), decision.wake


@pytest.mark.parametrize("status", [S.HIBERNATED, S.HIBERNATING])
def test_a_hibernated_target_is_woken_and_the_call_refused(status: S) -> None:
    code, body, wake = refusal(decide_for(ws(status), "m"))
    assert (code, wake, body["waking"]) == (503, True, True)
    assert body["error"] == "workspace is hibernated and is being woken"


@pytest.mark.parametrize("status", [S.HIBERNATED, S.HIBERNATING])
def test_a_delivery_does_not_wake_a_hibernated_target(status: S) -> None:
    code, body, wake = refusal(decide_for(ws(status), "m", delivery=True))
    assert (code, wake, body["error"]) == (503, False, f"workspace is {status.value}")


@pytest.mark.parametrize("delivery", [False, True])
def test_a_paused_target_refuses(delivery: bool) -> None:
    code, body, wake = refusal(decide_for(ws(S.PAUSED, backend="external", url=None), "m", delivery=delivery))
    assert (code, wake, body["error"], body["status"]) == (503, False, "workspace is paused", "paused")


@pytest.mark.parametrize("url", [None, "", NO_INBOUND])
@pytest.mark.parametrize("status", [S.ONLINE, S.OFFLINE, S.PROVISIONING])
def test_an_external_target_without_an_inbound_url_is_a_poll_mode_inbox(url: str | None, status: S) -> None:
    assert decide_for(ws(status, url=url, backend="external", active=5), "m") is INBOX
    assert decide_for(ws(status, url=url, backend="external"), None, delivery=True) is INBOX


def test_a_box_run_target_without_a_url_is_not_ready() -> None:
    code, body, _ = refusal(decide_for(ws(S.PROVISIONING, url=None), "m"))
    assert (code, body["error"], body["retry_after"]) == (503, "workspace has no URL yet", 10)


@pytest.mark.parametrize("status", [S.OFFLINE, S.PROVISIONING, S.FAILED])
def test_a_target_that_is_not_live_refuses(status: S) -> None:
    code, body, _ = refusal(decide_for(ws(status), "m"))
    assert (code, body["error"], body["status"]) == (503, f"workspace is {status.value}", status.value)


@pytest.mark.parametrize("status", [S.ONLINE, S.DEGRADED])
def test_a_live_target_with_room_is_forwarded_to(status: S) -> None:
    assert decide_for(ws(status, active=1, limit=2), "m") is FORWARD
    assert decide_for(ws(status, active=0, limit=0), "m") is FORWARD  # an idle agent is always tried


def test_a_busy_target_queues_a_message_with_an_id() -> None:
    assert decide_for(ws(active=2, limit=2), "m") == Queue("agent at its max_concurrent_tasks")
    assert decide_for(ws(active=3, limit=2), "m") == Queue("agent at its max_concurrent_tasks")


def test_a_delivery_is_forwarded_whatever_the_last_heartbeat_said() -> None:
    """The drain counted its room already (its own deliveries are in the agent's active_tasks)."""
    assert decide_for(ws(active=2, limit=2), "m", delivery=True) is FORWARD


def test_a_busy_target_refuses_a_message_without_an_id() -> None:
    code, body, _ = refusal(decide_for(ws(active=1), None))
    assert (code, body["busy"], body["retry_after"]) == (503, True, 30)
    assert "native_session" not in body


def test_a_busy_target_with_native_sessions_refuses() -> None:
    code, body, _ = refusal(decide_for(ws(active=1, capabilities={"session": True}), "m"))
    assert (code, body["busy"], body["native_session"]) == (503, True, True)


def test_when_busy_names_why() -> None:
    assert when_busy(ws(), "m", "connection reset") == Queue("connection reset")
    assert isinstance(when_busy(ws(), None, "connection reset"), Refuse)


def test_spare_capacity_counts_the_larger_of_heartbeat_and_deliveries_in_flight() -> None:
    assert ws(active=1, limit=4).spare_capacity() == 3
    assert ws(active=1, limit=4).spare_capacity(2) == 2
    assert ws(active=5, limit=4).spare_capacity() == 0
    assert ws(S.OFFLINE, limit=4).spare_capacity() == 0
