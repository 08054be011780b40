"""The box's records: workspace states, the workspace row, events.

Plain frozen dataclasses: actors replace a record wholesale after each
committed change (``dataclasses.replace``), so anyone holding a reference
sees a consistent, committed snapshot.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any


class WorkspaceStatus(enum.StrEnum):
    """All ten states of the platform, including the two its enum forgot."""

    PROVISIONING = "provisioning"
    ONLINE = "online"
    OFFLINE = "offline"
    DEGRADED = "degraded"
    FAILED = "failed"
    REMOVED = "removed"
    PAUSED = "paused"
    HIBERNATING = "hibernating"
    HIBERNATED = "hibernated"
    AWAITING_AGENT = "awaiting_agent"


S = WorkspaceStatus

#: States in which a missed heartbeat deadline means the workspace went offline.
LIVE_STATES = frozenset({S.ONLINE, S.DEGRADED})
#: States a workspace never leaves by itself: the operator or a register must act.
PARKED_STATES = frozenset({S.PAUSED, S.HIBERNATED, S.REMOVED})


def rfc3339(ts: float | None) -> str | None:
    """Unix seconds → RFC 3339 UTC with milliseconds, the timestamp format of every API response."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclasses.dataclass(frozen=True, slots=True)
class Workspace:
    """One row of ``workspaces``: identity, lifecycle and the last heartbeat's snapshot."""

    id: str
    name: str
    status: WorkspaceStatus
    runtime: str
    backend: str
    created_at: float
    updated_at: float
    role: str | None = None
    tier: int = 3
    agent_card: Any = None
    url: str | None = None
    url_from_backend: bool = False
    parent_id: str | None = None
    last_heartbeat_at: float | None = None
    last_error_rate: float = 0.0
    last_sample_error: str | None = None
    active_tasks: int = 0
    uptime_seconds: int = 0
    current_task: str | None = None
    runtime_state: str | None = None
    runtime_metadata: Any = None
    monthly_spend: int = 0
    budget_limit: int | None = None
    max_concurrent_tasks: int = 1
    workspace_dir: str | None = None
    workspace_access: str = "none"
    config: Any = None
    backend_state: Any = None
    failure_reason: str | None = None
    last_outbound_at: float | None = None
    x: float | None = None
    y: float | None = None
    collapsed: bool = False
    status_changed_at: float | None = None
    #: Last authenticated request from the workspace's agent that moved its liveness deadline (see
    #: actors/transitions.seen); recorded only when heartbeats lag.
    last_seen_at: float | None = None

    JSON_FIELDS = ("agent_card", "runtime_metadata", "config", "backend_state")

    @classmethod
    def from_columns(cls, values: Sequence[Any]) -> Workspace:
        """The record of a row read as ``SELECT`` of :data:`WORKSPACE_COLUMNS`, in that order.

        By position, not by name: a restore decodes every row of the store, and looking 36 columns up by name in
        a ``sqlite3.Row`` (a linear, case-insensitive search each), then passing them as keywords, cost 52 us a
        row against 17 by position (measured over 10,000 rows)."""
        fields = list(values)
        for i in _JSON_AT:
            if fields[i] is not None:
                fields[i] = json.loads(fields[i])
        fields[_STATUS_AT] = _STATUSES[fields[_STATUS_AT]]
        for i in _BOOL_AT:
            fields[i] = bool(fields[i])
        return cls(*fields)

    def to_row(self) -> dict[str, Any]:
        row = {name: getattr(self, name) for name in WORKSPACE_COLUMNS}
        for name in self.JSON_FIELDS:
            row[name] = None if row[name] is None else json.dumps(row[name], separators=(",", ":"))
        row["status"] = self.status.value
        row["collapsed"] = int(self.collapsed)
        row["url_from_backend"] = int(self.url_from_backend)
        return row

    @property
    def capabilities(self) -> dict[str, bool]:
        meta = self.runtime_metadata if isinstance(self.runtime_metadata, dict) else {}
        caps = meta.get("capabilities")
        return caps if isinstance(caps, dict) else {}

    @property
    def location(self) -> str | None:
        """Where the workload runs, as its backend words it in the handle (``location``: a swarm node, a region);
        None when the backend says nothing of it."""
        found = self.backend_state.get("location") if isinstance(self.backend_state, dict) else None
        return str(found)[:200] if found else None

    def public(self, *, detail: bool = True) -> dict[str, Any]:
        """The platform's JSON shape of a workspace (its list; ``detail=False`` is its get shape)."""
        body: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "tier": self.tier,
            "status": self.status.value,
            "url": self.url or "",
            "parent_id": self.parent_id,
            "agent_card": self.agent_card,
            "active_tasks": self.active_tasks,
            "max_concurrent_tasks": self.max_concurrent_tasks,
            "last_error_rate": self.last_error_rate,
            "uptime_seconds": self.uptime_seconds,
            "runtime": self.runtime,
            "backend": self.backend,
            "x": self.x or 0,
            "y": self.y or 0,
            "collapsed": self.collapsed,
            "last_heartbeat_at": rfc3339(self.last_heartbeat_at),
            "last_seen_at": rfc3339(self.last_seen_at),
            "failure_reason": self.failure_reason,
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
        }
        location = self.location
        if location is not None:  # molecule-box addition
            body["location"] = location
        if detail:
            body.update(
                budget_limit=self.budget_limit,
                monthly_spend=self.monthly_spend,
                current_task=self.current_task or "",
                last_sample_error=self.last_sample_error or "",
                workspace_dir=self.workspace_dir,
            )
        else:
            body["last_outbound_at"] = rfc3339(self.last_outbound_at)
        return body

    def spare_capacity(self, in_flight: int = 0) -> int:
        """How many more messages the agent may be handed now: its ``max_concurrent_tasks`` less what it is busy
        with (none unless it is live). The one test of capacity: whether a call is queued, whether a sign of
        life starts a drain of the busy queue, and how far a drain goes.

        An agent's heartbeat counts the deliveries it is working on in its ``active_tasks``, so adding the
        deliveries in flight would count them twice and pause a drain at every heartbeat; the larger of the two
        is what it is busy with. Either way no more than ``max_concurrent_tasks`` deliveries are ever in flight,
        and an agent whose own work was not yet in its last heartbeat answers busy, which stops the drain."""
        if self.status not in LIVE_STATES:
            return 0
        return max(0, self.max_concurrent_tasks - max(self.active_tasks, in_flight))


#: The ``workspaces`` columns in :class:`Workspace`'s field order (what :meth:`Workspace.from_columns` reads).
WORKSPACE_COLUMNS = tuple(f.name for f in dataclasses.fields(Workspace))
_JSON_AT = tuple(WORKSPACE_COLUMNS.index(name) for name in Workspace.JSON_FIELDS)
_STATUS_AT = WORKSPACE_COLUMNS.index("status")
_BOOL_AT = (WORKSPACE_COLUMNS.index("collapsed"), WORKSPACE_COLUMNS.index("url_from_backend"))
_STATUSES = {status.value: status for status in WorkspaceStatus}


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """One broadcast: lifecycle events are also persisted; high-frequency ones are not (``BROADCAST_ONLY``)."""

    type: str
    workspace_id: str | None
    payload: dict[str, Any]
    timestamp: float
    id: int | None = None

    def ws_frame(self) -> dict[str, Any]:
        return {"event": self.type, "workspace_id": self.workspace_id, "timestamp": rfc3339(self.timestamp),
                "payload": self.payload}

    def sse_frame(self) -> dict[str, Any]:
        return {"type": self.type, "timestamp": int(self.timestamp * 1000), "data": self.payload}

    def history_row(self) -> dict[str, Any]:
        return {"id": self.id, "event_type": self.type, "workspace_id": self.workspace_id,
                "payload": self.payload, "created_at": rfc3339(self.timestamp)}


#: Event types broadcast without being written to ``events`` (too frequent to keep).
BROADCAST_ONLY = frozenset({"WORKSPACE_HEARTBEAT", "TASK_UPDATED", "ACTIVITY_LOGGED", "A2A_RESPONSE", "AGENT_MESSAGE"})
