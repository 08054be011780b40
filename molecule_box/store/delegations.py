"""``delegations``: a task one workspace handed another, and what became of it.

A delegation is sent as a message on the target's busy queue (``a2a_queue.delegation_id`` names it); the
delivery of that queue row, and no other, settles it. ``idempotency_key`` makes a retried delegation find the
first one (unless that one failed, when the retry replaces it).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import sqlite_utils

#: Most delegations one listing returns (newest first).
LISTED = 200


def by_key(db: sqlite_utils.Database, source_id: str, target_id: str, idempotency_key: str) -> dict[str, Any] | None:
    """The delegation a retry with the same idempotency key finds: its id and status."""
    row = db.execute("SELECT id, status FROM delegations WHERE source_id = ? AND target_id = ? AND idempotency_key = ?",
                     [source_id, target_id, idempotency_key]).fetchone()
    return dict(row) if row else None


def delete(delegation_id: str) -> Callable[[sqlite_utils.Database], None]:
    def op(db: sqlite_utils.Database) -> None:
        db.execute("DELETE FROM delegations WHERE id = ?", [delegation_id])

    return op


def insert(delegation_id: str, source_id: str, target_id: str, task: str, idempotency_key: str | None,
           now: float) -> Callable[[sqlite_utils.Database], None]:
    def op(db: sqlite_utils.Database) -> None:
        db.execute("""INSERT INTO delegations (id, source_id, target_id, task, idempotency_key, status, created_at,
                      updated_at) VALUES (?, ?, ?, ?, ?, 'delegated', ?, ?)""",
                   [delegation_id, source_id, target_id, task, idempotency_key, now, now])

    return op


def listing(db: sqlite_utils.Database, workspace_id: str) -> list[dict[str, Any]]:
    """The delegations a workspace sent or received, newest first."""
    rows = db.execute("SELECT * FROM delegations WHERE source_id = ? OR target_id = ? ORDER BY created_at DESC LIMIT ?",
                      [workspace_id, workspace_id, LISTED]).fetchall()
    return [dict(row) for row in rows]


def sent_as(db: sqlite_utils.Database, delegation_id: str, source_id: str, target_id: str) -> dict[str, Any] | None:
    """The delegation a delivered queue row settles: only if its source and target are the row's caller and
    workspace too (a message id alone proves nothing: any caller may reuse a broadcast delegation id)."""
    row = db.execute("SELECT id, source_id FROM delegations WHERE id = ? AND source_id = ? AND target_id = ?",
                     [delegation_id, source_id, target_id]).fetchone()
    return dict(row) if row else None


def settle(delegation_id: str, status: str, result: str) -> Callable[[sqlite_utils.Database], None]:
    """``status`` ``completed`` or ``failed``; ``result`` the JSON text of the answer or the error."""
    def op(db: sqlite_utils.Database) -> None:
        db.execute("UPDATE delegations SET status = ?, result = ?, updated_at = ? WHERE id = ?",
                   [status, result, time.time(), delegation_id])

    return op
