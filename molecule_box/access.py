"""Who may talk to whom: the platform's ``CanCommunicate`` and its peer set (siblings, parent, children)."""

from __future__ import annotations

from collections.abc import Callable

from .models import Workspace, WorkspaceStatus

#: Caller ids of the platform's own senders: no request may claim one (``X-Workspace-ID``).
SYSTEM_PREFIXES = ("webhook:", "system:", "channel:", "test:")

Lookup = Callable[[str], Workspace | None]
MAX_HOPS = 32


def _live(lookup: Lookup, workspace_id: str | None) -> Workspace | None:
    if not workspace_id:
        return None
    ws = lookup(workspace_id)
    return None if ws is None or ws.status is WorkspaceStatus.REMOVED else ws


def _ancestors(lookup: Lookup, ws: Workspace) -> list[str]:
    chain: list[str] = []
    seen = {ws.id}
    parent = ws.parent_id
    while parent and parent not in seen and len(chain) < MAX_HOPS:
        chain.append(parent)
        seen.add(parent)
        node = lookup(parent)
        parent = node.parent_id if node else None
    return chain


def can_communicate(lookup: Lookup, caller_id: str, target_id: str) -> bool:
    """Self, siblings, any two roots, and any ancestor/descendant pair; nothing else (no cousins, no uncles)."""
    caller, target = _live(lookup, caller_id), _live(lookup, target_id)
    if caller is None or target is None:
        return False
    if caller.id == target.id:
        return True
    if caller.parent_id == target.parent_id:  # siblings, or both roots
        return True
    return caller.id in _ancestors(lookup, target) or target.id in _ancestors(lookup, caller)


def peers(records: list[Workspace], ws: Workspace) -> list[Workspace]:
    """Siblings (for a root: every other root), direct children and the direct parent."""
    out = []
    for other in records:
        if other.id == ws.id or other.status is WorkspaceStatus.REMOVED:
            continue
        if other.parent_id == ws.parent_id or other.parent_id == ws.id or other.id == ws.parent_id:
            out.append(other)
    return out
