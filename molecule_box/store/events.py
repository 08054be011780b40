"""The persisted event history (``events``) and the actor-failure log."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import sqlite_utils

from ..models import Event


def insert(event: Event) -> Callable[[sqlite_utils.Database], int]:
    payload = json.dumps(event.payload, separators=(",", ":"), default=str)

    def op(db: sqlite_utils.Database) -> int:
        cursor = db.execute(
            "INSERT INTO events (event_type, workspace_id, payload, created_at) VALUES (?, ?, ?, ?)",
            [event.type, event.workspace_id, payload, event.timestamp],
        )
        return int(cursor.lastrowid or 0)

    return op


def recent(db: sqlite_utils.Database, workspace_id: str | None = None, limit: int = 100) -> list[Event]:
    if workspace_id is None:
        rows = db.execute("SELECT * FROM events ORDER BY id DESC LIMIT ?", [limit]).fetchall()
    else:
        rows = db.execute(
            "SELECT * FROM events WHERE workspace_id = ? ORDER BY id DESC LIMIT ?", [workspace_id, limit]
        ).fetchall()
    return [
        Event(row["event_type"], row["workspace_id"], json.loads(row["payload"]), row["created_at"], row["id"])
        for row in rows
    ]


def record_actor_failure(workspace_id: str, error: str) -> Callable[[sqlite_utils.Database], None]:
    def op(db: sqlite_utils.Database) -> None:
        db.execute(
            "INSERT INTO actor_failures (workspace_id, error, created_at) VALUES (?, ?, ?)",
            [workspace_id, error[:4000], time.time()],
        )

    return op


def actor_failures(db: sqlite_utils.Database, workspace_id: str, limit: int = 20) -> list[dict[str, Any]]:
    rows = db.execute(
        "SELECT error, created_at FROM actor_failures WHERE workspace_id = ? ORDER BY id DESC LIMIT ?",
        [workspace_id, limit],
    ).fetchall()
    return [dict(row) for row in rows]
