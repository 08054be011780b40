"""The persisted event history (``events``) and the actor-failure log."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import sqlite_utils

from ..models import Event

#: A recorded event keeps its payload whole up to this size. Beyond it, each top-level value over OMIT_OVER is
#: recorded as ``{"omitted_bytes": n}``: the live event carried it whole, and the workspace row holds the current
#: agent card (200 card updates of one agent otherwise added 127 MB of history).
STORED_PAYLOAD_LIMIT = 16 * 1024
OMIT_OVER = 1024


def _encode(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def stored_payload(payload: dict[str, Any]) -> str:
    """The payload as recorded in ``events`` (see STORED_PAYLOAD_LIMIT)."""
    text = _encode(payload)
    if len(text) <= STORED_PAYLOAD_LIMIT:
        return text
    slim = {}
    for key, value in payload.items():
        encoded = _encode(value)
        slim[key] = value if len(encoded) <= OMIT_OVER else {"omitted_bytes": len(encoded)}
    text = _encode(slim)
    return text if len(text) <= STORED_PAYLOAD_LIMIT else _encode({"omitted_bytes": len(text)})


def insert(event: Event) -> Callable[[sqlite_utils.Database], int]:
    payload = stored_payload(event.payload)

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
