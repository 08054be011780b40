"""``a2a_queue``: messages for busy agents, committed before the caller hears 202.

At most one active row per (workspace, messageId): a retried call finds its
first enqueue instead of queuing twice. Rows left ``dispatched`` by a crash
are queued again at start (an agent dedups by messageId, the box by the row).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import sqlite_utils

from .errors import QueueFull

MAX_ATTEMPTS = 5
#: Most rows one listing of a workspace's queue returns (newest first).
LISTED = 200


def enqueue(workspace_id: str, caller_id: str | None, message_id: str, method: str, body: bytes,
            headers: dict[str, str], limit: int, *,
            delegation_id: str | None = None) -> Callable[[sqlite_utils.Database], tuple[int, int, bool]]:
    """Returns (queue id, queue depth, whether it was already queued).

    A workspace holds at most ``limit`` queued messages: beyond that a new one raises QueueFull (a caller
    looping on a stuck agent must not fill the disk); a retry of one already queued still finds it.
    ``delegation_id`` marks the row a delegation enqueued: its delivery, and no other, settles the delegation."""
    encoded = json.dumps(headers)

    def op(db: sqlite_utils.Database) -> tuple[int, int, bool]:
        existing = db.execute(
            "SELECT id FROM a2a_queue WHERE workspace_id = ? AND message_id = ? AND status IN ('queued', 'dispatched')",
            [workspace_id, message_id]).fetchone()
        duplicate = existing is not None
        if duplicate:
            queue_id = int(existing[0])
        else:
            queued = db.execute("SELECT count(*) FROM a2a_queue WHERE workspace_id = ? AND status = 'queued'",
                                [workspace_id]).fetchone()[0]
            if queued >= limit:
                raise QueueFull(int(queued))
            cursor = db.execute(
                """INSERT INTO a2a_queue (workspace_id, caller_id, message_id, method, body, headers, status,
                   enqueued_at, delegation_id) VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?)""",
                [workspace_id, caller_id, message_id, method, body, encoded, time.time(), delegation_id])
            queue_id = int(cursor.lastrowid or 0)
        depth = db.execute("SELECT count(*) FROM a2a_queue WHERE workspace_id = ? AND status = 'queued'",
                           [workspace_id]).fetchone()[0]
        return queue_id, int(depth), duplicate

    return op


def claim(workspace_id: str, n: int) -> Callable[[sqlite_utils.Database], list[dict[str, Any]]]:
    """The ``n`` oldest queued messages of the workspace, marked dispatched, oldest first.

    Several in one op: a drain that has room for its agent's whole spare capacity claims it in one commit."""
    def op(db: sqlite_utils.Database) -> list[dict[str, Any]]:
        rows = db.execute("SELECT * FROM a2a_queue WHERE workspace_id = ? AND status = 'queued' ORDER BY id LIMIT ?",
                          [workspace_id, n]).fetchall()
        now = time.time()
        items = []
        for row in rows:
            db.execute("UPDATE a2a_queue SET status = 'dispatched', dispatched_at = ?, attempts = attempts + 1 "
                       "WHERE id = ?", [now, row["id"]])
            item = dict(row)
            item["attempts"] += 1
            items.append(item)
        return items

    return op


def finish(queue_id: int, *, ok: bool, error: str | None = None, attempts: int = 0,
           busy: bool = False) -> Callable[[sqlite_utils.Database], str]:
    """The outcome of one delivery: ``completed``, or ``queued`` again (``failed`` after MAX_ATTEMPTS).

    ``busy``: the agent said it had no room (or the message was never sent): back to ``queued`` without using
    up an attempt, so a message waits out a busy agent however long it stays busy."""
    def op(db: sqlite_utils.Database) -> str:
        if ok:
            status = "completed"
        else:
            status = "failed" if attempts >= MAX_ATTEMPTS and not busy else "queued"
        db.execute("UPDATE a2a_queue SET status = ?, last_error = ?, completed_at = ?, attempts = attempts - ? "
                   "WHERE id = ?", [status, error, time.time() if status != "queued" else None,
                                    int(busy and not ok), queue_id])
        return status

    return op


def requeue_dispatched(db: sqlite_utils.Database) -> None:
    db.execute("UPDATE a2a_queue SET status = 'queued' WHERE status = 'dispatched'")


def pending_counts(db: sqlite_utils.Database) -> dict[str, int]:
    rows = db.execute("SELECT workspace_id, count(*) FROM a2a_queue WHERE status = 'queued' GROUP BY workspace_id")
    return {row[0]: int(row[1]) for row in rows}


def listing(db: sqlite_utils.Database, workspace_id: str) -> list[dict[str, Any]]:
    """A workspace's queue and each message's delivery state, newest first (bodies and headers left out)."""
    rows = db.execute(
        """SELECT id, caller_id, message_id, method, status, attempts, last_error, enqueued_at, completed_at
           FROM a2a_queue WHERE workspace_id = ? ORDER BY id DESC LIMIT ?""", [workspace_id, LISTED]).fetchall()
    return [dict(row) for row in rows]
