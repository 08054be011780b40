"""Docker's events stream → :class:`~molecule_box.backends.base.BackendEvent`, as pure functions.

The stream is lossy (256 buffered events, 100 ms per listener, nothing kept
across an engine restart), so events are only triggers:
the workspace actor confirms each with ``inspect`` before it acts, and the
backend reconciles from ``list``/``inspect`` on every resubscription and on
a timer.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..base import BackendEvent
from .spec import LABEL_BOX, LABEL_MANAGED, LABEL_WORKSPACE

#: Container actions the box reacts to. ``health_status`` matches ``health_status: healthy`` and ``...: unhealthy``
#: (the engine fuzzy-matches that one action); ``start`` only updates the backend's own bookkeeping.
ACTIONS = ("start", "die", "oom", "health_status", "destroy")


def event_filters(box_id: str) -> dict[str, list[str]]:
    """Only this box's managed containers, only the actions above: the engine filters, the box never sees
    other containers' churn."""
    return {
        "type": ["container"],
        "label": [f"{LABEL_MANAGED}=true", f"{LABEL_BOX}={box_id}"],
        "event": list(ACTIONS),
    }


@dataclasses.dataclass(frozen=True)
class ContainerEvent:
    """One event of one of this box's containers."""

    action: str  # start, die, oom, health, destroy
    container_id: str
    workspace_id: str
    exit_code: int | None = None
    health: str | None = None

    def backend_event(self) -> BackendEvent | None:
        """What the workspace's actor is told (None for bookkeeping-only actions)."""
        if self.action == "die":
            return BackendEvent(self.workspace_id, "exited", exit_code=self.exit_code,
                                detail=f"container {self.container_id[:12]} exited")
        if self.action == "oom":
            return BackendEvent(self.workspace_id, "oom",
                                detail=f"container {self.container_id[:12]} hit its memory limit")
        if self.action == "health":
            return BackendEvent(self.workspace_id, "health", health=self.health)
        if self.action == "destroy":
            return BackendEvent(self.workspace_id, "removed", detail=f"container {self.container_id[:12]} was removed")
        return None


def parse(raw: dict[str, Any] | None, box_id: str) -> ContainerEvent | None:
    """A raw engine event as a :class:`ContainerEvent`, or None when it is not about this box's containers
    (the engine filtered already; this is the second lock on the door)."""
    if not raw or raw.get("Type", "container") != "container":
        return None
    actor = raw.get("Actor") or {}
    attributes = actor.get("Attributes") or {}
    if attributes.get(LABEL_MANAGED) != "true" or attributes.get(LABEL_BOX) != box_id:
        return None
    workspace_id = attributes.get(LABEL_WORKSPACE)
    container_id = actor.get("ID") or raw.get("id")
    action = str(raw.get("Action") or raw.get("status") or "")
    if not workspace_id or not container_id:
        return None
    if action.startswith("health_status"):
        health = action.partition(":")[2].strip() or None
        return ContainerEvent("health", container_id, workspace_id, health=health)
    if action == "die":
        code = attributes.get("exitCode")
        return ContainerEvent("die", container_id, workspace_id,
                              exit_code=int(code) if code is not None and str(code).lstrip("-").isdigit() else None)
    if action in ("start", "oom", "destroy"):
        return ContainerEvent(action, container_id, workspace_id)
    return None


def health_from_status(status: str) -> str | None:
    """The health in a container list's ``Status`` text (``Up 3 minutes (unhealthy)``), if it has one."""
    for health in ("unhealthy", "healthy"):
        if f"({health})" in status:
            return health
    return None
