"""The workspace state machine as pure functions: record in, (new record, events) out.

No I/O and no clock reads here (``now`` is passed in), so every status a
workspace can reach is decided here and tested without sockets; the actor
only persists what these functions decide, publishes the events after the
commit and runs the backend operation that goes with it. A verb that does not
apply raises a domain refusal (:mod:`molecule_box.errors`), which the API maps
to its status.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import Conflict, NotFound
from ..models import LIVE_STATES, Workspace, WorkspaceStatus
from ..schemas import Heartbeat

S = WorkspaceStatus
SPEND_CAP = 1_000_000_000_000

EventSpec = tuple[str, dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class Outcome:
    workspace: Workspace
    events: list[EventSpec] = dataclasses.field(default_factory=list)


def set_status(ws: Workspace, status: WorkspaceStatus, now: float, **changes: Any) -> Workspace:
    if status is not ws.status:
        changes["status_changed_at"] = now
    return dataclasses.replace(ws, status=status, updated_at=now, **changes)


def cleared_url(ws: Workspace) -> dict[str, Any]:
    """Stopping a box-driven workload drops the URL the backend gave it; a remote agent keeps its own."""
    return {"url": None, "url_from_backend": False} if ws.url_from_backend else {}


def require_not_removed(ws: Workspace) -> Workspace:
    if ws.status is S.REMOVED:
        raise NotFound("workspace not found", deleted=True)
    return ws


# -- one payload builder per lifecycle event ------------------------------------------------------

def provisioning_event(ws: Workspace, **extra: Any) -> EventSpec:
    return ("WORKSPACE_PROVISIONING", {"name": ws.name, "tier": ws.tier, "runtime": ws.runtime, **extra})


def hibernated_event(ws: Workspace) -> EventSpec:
    return ("WORKSPACE_HIBERNATED", {"name": ws.name, "tier": ws.tier})


def remote_up_event(ws: Workspace, status: WorkspaceStatus, **extra: Any) -> EventSpec:
    """A remote workspace reached ``online`` (it has a URL) or ``awaiting_agent`` without the box starting
    anything."""
    kind = "WORKSPACE_ONLINE" if status is S.ONLINE else "WORKSPACE_AWAITING_AGENT"
    return (kind, {"name": ws.name, "external": True, **extra})


# -- the lifecycle verbs ------------------------------------------------------------------------

def created(ws: Workspace, *, lifecycle: bool) -> Outcome:
    """The initial status of a new workspace: a box-run one is ``provisioning`` (its actor starts it); a
    remote one is ``online`` when its URL is known, else ``awaiting_agent`` until its agent registers."""
    if lifecycle:
        return Outcome(dataclasses.replace(ws, status=S.PROVISIONING), [provisioning_event(ws)])
    status = S.ONLINE if ws.url else S.AWAITING_AGENT
    return Outcome(dataclasses.replace(ws, status=status), [remote_up_event(ws, status)])


def pause(ws: Workspace, now: float) -> Outcome:
    """Any live state → paused; the actor then stops the workload.

    Pausing a paused workspace is a 404 ("not found or already paused"), not a 409: the platform answers
    so and its clients rely on it."""
    require_not_removed(ws)
    if ws.status is S.PAUSED:
        raise NotFound("workspace not found or already paused")
    return Outcome(set_status(ws, S.PAUSED, now, active_tasks=0, **cleared_url(ws)),
                   [("WORKSPACE_PAUSED", {"name": ws.name})])


def bring_up(ws: Workspace, now: float, *, lifecycle: bool, remote_status: WorkspaceStatus,
             woken: bool = False) -> Outcome:
    """Start a stopped workspace again: a box-run one → provisioning (the actor starts its workload); a
    remote one → ``remote_status`` with its liveness deadline re-armed from now, so the agent gets a full
    interval to show it is still there."""
    if not lifecycle:
        extra = {"woken": True} if woken else {}
        return Outcome(set_status(ws, remote_status, now, last_heartbeat_at=now),
                       [remote_up_event(ws, remote_status, **extra)])
    return Outcome(set_status(ws, S.PROVISIONING, now, failure_reason=None), [provisioning_event(ws)])


def resume(ws: Workspace, now: float, *, lifecycle: bool) -> Outcome:
    """paused → up again (a hibernated workspace is woken). Anything else is a 404 "not found or not
    paused", as the platform answers."""
    require_not_removed(ws)
    if ws.status is S.HIBERNATED:
        return wake(ws, now, lifecycle=lifecycle)
    if ws.status is not S.PAUSED:
        raise NotFound("workspace not found or not paused")
    return bring_up(ws, now, lifecycle=lifecycle, remote_status=S.AWAITING_AGENT)


def wake(ws: Workspace, now: float, *, lifecycle: bool) -> Outcome:
    """hibernated → up again. A remote agent kept heartbeating while hibernated (the SDK only stops on
    pause or delete), so one with a URL is online at once."""
    require_not_removed(ws)
    if ws.status is not S.HIBERNATED:
        raise Conflict(f"workspace is {ws.status.value}, not hibernated")
    return bring_up(ws, now, lifecycle=lifecycle, remote_status=S.ONLINE if ws.url else S.AWAITING_AGENT,
                    woken=True)


def hibernate(ws: Workspace, now: float, *, lifecycle: bool, force: bool) -> Outcome:
    """A live workspace → hibernating (the actor stops its workload, then :func:`hibernated`); a remote one
    → hibernated at once. One with active tasks only with ``force``."""
    require_not_removed(ws)
    if ws.status not in LIVE_STATES:
        raise NotFound(f"workspace not found or not online (status {ws.status.value})")
    if ws.active_tasks > 0 and not force:
        raise Conflict("workspace has active tasks; pass ?force=true to hibernate anyway",
                       active_tasks=ws.active_tasks)
    if not lifecycle:
        return hibernated(ws, now)
    return Outcome(set_status(ws, S.HIBERNATING, now))


def hibernated(ws: Workspace, now: float) -> Outcome:
    """The workload stopped (or there is none to stop): hibernated."""
    return Outcome(set_status(ws, S.HIBERNATED, now, **cleared_url(ws)), [hibernated_event(ws)])


def restart(ws: Workspace, now: float, *, lifecycle: bool) -> Outcome:
    """An operator's restart: → provisioning (the actor replaces the workload). A remote agent runs
    outside the box, so there is nothing the box could restart."""
    require_not_removed(ws)
    if not lifecycle:
        raise Conflict(f"{ws.backend} workspaces run outside the box: restart the agent itself")
    return Outcome(set_status(ws, S.PROVISIONING, now, failure_reason=None, **cleared_url(ws)),
                   [provisioning_event(ws, restart=True)])


def restarting(ws: Workspace, now: float, *, exit_code: int | None, oom_killed: bool, attempt: int,
               delay: float) -> Outcome:
    """The workload died on its own and the restart policy starts it again after ``delay``."""
    return Outcome(
        set_status(ws, S.PROVISIONING, now, failure_reason=None, **cleared_url(ws)),
        [provisioning_event(ws, restart=True, reason="oom_killed" if oom_killed else "exited",
                            exit_code=exit_code, oom_killed=oom_killed, attempt=attempt, delay_seconds=delay)],
    )


def delete(ws: Workspace, now: float, payload: dict[str, Any]) -> Outcome | None:
    """Any state → removed (None: it already is; deleting twice is not an error)."""
    if ws.status is S.REMOVED:
        return None
    return Outcome(set_status(ws, S.REMOVED, now, active_tasks=0), [("WORKSPACE_REMOVED", payload)])


def heartbeat(ws: Workspace, hb: Heartbeat, now: float) -> Outcome:
    """Record the snapshot; move between online/degraded/offline/provisioning as the platform does.

    Heartbeats never move a workspace out of failed, paused or hibernated: only a register does, so a stale
    agent cannot silently undo an operator's pause. An authenticated heartbeat does bring an
    ``awaiting_agent`` workspace online: an agent given its token (the SDK's ``connect --token``) skips
    register, and would otherwise wait there for ever.
    """
    changes: dict[str, Any] = dict(
        last_heartbeat_at=now,
        last_error_rate=hb.error_rate,
        last_sample_error=hb.sample_error or None,
        active_tasks=hb.active_tasks,
        uptime_seconds=int(hb.uptime_seconds),
        current_task=hb.current_task or None,
        runtime_state=hb.runtime_state or None,
        runtime_metadata=hb.runtime_metadata.model_dump(exclude_none=True) if hb.runtime_metadata else None,
    )
    if hb.monthly_spend:
        changes["monthly_spend"] = max(0, min(hb.monthly_spend, SPEND_CAP))
    events: list[EventSpec] = []
    if (hb.current_task or None) != ws.current_task:
        events.append(("TASK_UPDATED", {"current_task": hb.current_task or "", "active_tasks": hb.active_tasks}))
    caps = (hb.runtime_metadata.capabilities if hb.runtime_metadata else None) or {}
    self_managed = bool(caps.get("status_mgmt"))
    status = ws.status
    if status is S.PROVISIONING:
        status = S.ONLINE
        events.append(("WORKSPACE_ONLINE", {"recovered_from": "provisioning"}))
    elif status in (S.OFFLINE, S.AWAITING_AGENT):
        events.append(("WORKSPACE_ONLINE", {"recovered_from": status.value}))
        status = S.ONLINE
    if status is S.ONLINE:
        if hb.runtime_state == "wedged":
            status = S.DEGRADED
            events.append(("WORKSPACE_DEGRADED", {"runtime_state": "wedged", "sample_error": hb.sample_error or ""}))
        elif hb.error_rate >= 0.5 and not self_managed:
            status = S.DEGRADED
            events.append(("WORKSPACE_DEGRADED", {"error_rate": hb.error_rate, "sample_error": hb.sample_error or ""}))
    elif status is S.DEGRADED and not hb.runtime_state and ws.failure_reason is None:
        # A degradation with a reason came from another observer (the container's health check): only it
        # (or a register) clears it, so a heartbeat cannot paper over a failing health check.
        if self_managed or hb.error_rate < 0.1:
            status = S.ONLINE
            events.append(("WORKSPACE_ONLINE", {}))
    events.append(("WORKSPACE_HEARTBEAT", {"active_tasks": hb.active_tasks, "uptime_seconds": int(hb.uptime_seconds)}))
    return Outcome(set_status(ws, status, now, **changes), events)


def register(ws: Workspace, url: str | None, agent_card: dict[str, Any], now: float) -> Outcome:
    """Any state but removed → online. A URL the backend assigned (its own port mapping) wins over the
    one the agent reports from inside its container."""
    keep_url = ws.url_from_backend and ws.url
    new = set_status(
        ws, S.ONLINE, now,
        url=ws.url if keep_url else url,
        agent_card=agent_card,
        last_heartbeat_at=now,
        failure_reason=None,
    )
    return Outcome(new, [("WORKSPACE_ONLINE", {"url": new.url or "", "agent_card": agent_card})])


#: ``failure_reason`` of a workspace degraded by its container's health check (cleared when it passes again).
HEALTH_DEGRADED = "the container's health check fails (its agent card does not answer)"


def health_changed(ws: Workspace, health: str | None, now: float) -> Outcome | None:
    """The workload's health check changed: online → degraded when it fails; back to online when it passes
    again, but only if the health check was what degraded it. None: nothing changes."""
    if health == "unhealthy" and ws.status is S.ONLINE:
        return Outcome(set_status(ws, S.DEGRADED, now, failure_reason=HEALTH_DEGRADED),
                       [("WORKSPACE_DEGRADED", {"source": "healthcheck", "health": "unhealthy",
                                                "reason": HEALTH_DEGRADED})])
    if health == "healthy" and ws.status is S.DEGRADED and ws.failure_reason == HEALTH_DEGRADED:
        return Outcome(set_status(ws, S.ONLINE, now, failure_reason=None),
                       [("WORKSPACE_ONLINE", {"recovered_from": "unhealthy"})])
    return None


def update_card(ws: Workspace, agent_card: dict[str, Any], now: float) -> Outcome:
    return Outcome(dataclasses.replace(ws, agent_card=agent_card, updated_at=now),
                   [("AGENT_CARD_UPDATED", {"agent_card": agent_card})])


def outbound(ws: Workspace, at: float) -> Outcome | None:
    """A later successful outbound call moves ``last_outbound_at`` forward (never back: tells can race)."""
    if ws.last_outbound_at is not None and at <= ws.last_outbound_at:
        return None
    return Outcome(dataclasses.replace(ws, last_outbound_at=at))


def last_proof_of_life(ws: Workspace) -> float:
    """The latest heartbeat or recorded authenticated request, else when the status last changed."""
    proofs = [at for at in (ws.last_heartbeat_at, ws.last_seen_at) if at is not None]
    return max(proofs) if proofs else (ws.status_changed_at or ws.updated_at)


def liveness_deadline(ws: Workspace, ttl: float) -> float | None:
    """When a live workspace is declared offline without a sign of life (unix seconds), or None."""
    if ws.status not in LIVE_STATES:
        return None
    return last_proof_of_life(ws) + ttl


def seen(ws: Workspace, at: float, ttl: float) -> Outcome | None:
    """An authenticated request from the agent at ``at`` is proof of life, like a heartbeat.

    Why: an agent busy with a long task can starve its own heartbeat loop while it still polls its inbox
    or calls its peers; calling it offline then is wrong. Only the deadline moves: the status does not
    (offline comes back with a heartbeat or register, which report the agent's state), and nothing is
    written while the last proof is less than a third of the deadline old, so an agent that heartbeats on
    time costs no extra write.
    """
    if ws.status not in LIVE_STATES or at - last_proof_of_life(ws) < ttl / 3:
        return None
    return Outcome(dataclasses.replace(ws, last_seen_at=at))


def provision_deadline(ws: Workspace, timeout: float) -> float | None:
    if ws.status is not S.PROVISIONING:
        return None
    return (ws.status_changed_at or ws.updated_at) + timeout


def went_offline(ws: Workspace, now: float) -> Outcome:
    return Outcome(set_status(ws, S.OFFLINE, now), [("WORKSPACE_OFFLINE", {})])


def provision_timed_out(ws: Workspace, now: float, timeout: float) -> Outcome:
    reason = f"provisioning did not finish within {timeout:g}s (no register or heartbeat from the agent)"
    return Outcome(
        set_status(ws, S.FAILED, now, failure_reason=reason, last_sample_error=reason),
        [("WORKSPACE_PROVISION_FAILED", {"error": reason, "timeout_secs": timeout, "runtime": ws.runtime,
                                         "source": "provision_timeout"})],
    )


def migrating(ws: Workspace, to: str) -> Outcome:
    """A move to backend ``to`` began; the workspace keeps serving from its current workload meanwhile."""
    return Outcome(ws, [("WORKSPACE_MIGRATING", {"name": ws.name, "from": ws.backend, "to": to})])


def migrated(ws: Workspace, now: float, to: str, handle: dict[str, Any], url: str | None) -> Outcome:
    """The new workload's agent registered: the workspace is the new backend's from here on."""
    changes: dict[str, Any] = {"backend": to, "backend_state": handle, "updated_at": now}
    if url:
        changes.update(url=url, url_from_backend=True)
    return Outcome(dataclasses.replace(ws, **changes),
                   [("WORKSPACE_MIGRATED", {"name": ws.name, "from": ws.backend, "to": to})])


def migration_failed(ws: Workspace, now: float, to: str, reason: str, old_url: str | None) -> Outcome:
    """The move did not finish: the old workload stays the workspace's, and the event says why (the CLI that
    asked for the move reports it)."""
    return Outcome(dataclasses.replace(ws, url=old_url, updated_at=now),
                   [("WORKSPACE_MIGRATION_FAILED", {"name": ws.name, "from": ws.backend, "to": to,
                                                    "error": reason})])


def failed(ws: Workspace, now: float, reason: str, **payload: Any) -> Outcome:
    return Outcome(
        set_status(ws, S.FAILED, now, failure_reason=reason, last_sample_error=reason),
        [("WORKSPACE_PROVISION_FAILED", {"error": reason, **payload})],
    )
