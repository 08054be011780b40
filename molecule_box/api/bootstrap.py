"""``POST /admin/workspaces/:id/bootstrap-failed``: the control plane reports a workspace's runtime crashed
while its instance booted (its bootstrap watcher reads ``RUNTIME CRASHED`` in the console).

The control plane authenticates with the tenant's admin token (the one the box sends it as
``X-Molecule-Admin-Token``), so the route is the ``admin`` tier. The workspace's actor decides (only actors
change status): a workspace still provisioning becomes failed with the error and the log tail as its
``failure_reason``; any other gets ``no_change``. The answer is always 200 for a known workspace, as on the
platform, so the control plane does not retry a report that changed nothing.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint

from ..actors import commands as c
from ..schemas import BootstrapFailed
from .routing import Call, box, respond, route

bp = Blueprint("bootstrap", __name__)

#: The failure reason is capped at this many bytes (the platform's cap on ``error`` plus the log tail).
REASON_CAP = 8192


def failure_reason(body: BootstrapFailed) -> str:
    """``error`` then the log tail's last lines, within :data:`REASON_CAP` bytes (the tail is cut, not the
    error)."""
    error = body.error.strip() or "the runtime crashed while booting"
    reason = f"bootstrap failed: {error}"
    tail = body.log_tail.strip()
    if tail:
        room = REASON_CAP - len(reason.encode()) - 1
        cut = tail.encode()[-room:].decode(errors="ignore") if room > 0 else ""
        reason = f"{reason}\n{cut}" if cut else reason
    return reason.encode()[:REASON_CAP].decode(errors="ignore")


@route(bp, "/admin/workspaces/<raw_id>/bootstrap-failed", "POST",
       summary="The control plane reports the workspace's runtime crashed while booting", auth="admin",
       body=BootstrapFailed, load="live", responses={200: "Recorded, or no_change", 404: "Unknown workspace"})
async def bootstrap_failed(call: Call[BootstrapFailed]) -> Any:
    return respond(await box().supervisor.ask(call.workspace_id, c.BootstrapFailed(failure_reason(call.body))))
