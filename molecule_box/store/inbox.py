"""The poll inbox's delivery state: where a poll-mode agent's poll resumes, and what became of each message.

A poll-mode agent reads its inbox (its ``a2a_receive`` activity) with ``since_id``; the platform's SDK starts
without one, and starts again without one after every restart that lost its cursor file. Two marks per
workspace make that safe:

- ``fetched_through``: the highest row the agent's own poll was handed. Rows up to it read ``fetched``.
- ``taken_through``: the highest ``since_id`` the agent's own poll sent. The SDK moves its cursor past a row only
  once its handler ran, so ``since_id`` is the agent saying it took every row up to it. A poll without
  ``since_id`` resumes after this mark, oldest first: a page handed out just before a crash is handed out again
  (the SDK is at-least-once and its handlers idempotent), and no row is ever skipped.

A message's state: ``queued`` (not yet handed to its agent), ``fetched``, ``replied`` (the agent answered the
message's sender, see :func:`mark_replied`) or ``expired`` (not fetched within ``INBOX_TTL_DAYS``: no longer
handed out; retention deletes it later with the rest of the activity).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from ..models import rfc3339

DAY = 86400.0
STATES = ("queued", "fetched", "replied", "expired")
#: The event a message's change of state is published as, once committed: ``queued`` where the message is
#: stored, ``fetched`` by its agent's poll, ``replied`` where its answer is marked. ``expired`` is no act of the
#: box (a message's age passes ``INBOX_TTL_DAYS``): the ``queued`` event carries the moment, ``expires_at``.
EVENT = "INBOX_MESSAGE"


@dataclass(frozen=True)
class Cursor:
    fetched_through: int = 0
    taken_through: int = 0


def cursor(db: sqlite_utils.Database, workspace_id: str) -> Cursor:
    row = db.execute("SELECT fetched_through, taken_through FROM inbox_cursors WHERE workspace_id = ?",
                     [workspace_id]).fetchone()
    return Cursor(row[0], row[1]) if row else Cursor()


def advance(workspace_id: str, *, fetched: int, taken: int,
            expire_before: float) -> Callable[[sqlite_utils.Database], None]:
    """Marks only move forward (read in the op itself: two polls' ops commit in the order they were read). The
    messages the poll passed over because they had expired are stored as expired: once the mark is beyond
    them, only their row can say they were never handed out."""

    def op(db: sqlite_utils.Database) -> None:
        old = cursor(db, workspace_id)
        through = max(old.fetched_through, fetched, taken)
        db.execute("""UPDATE activity SET inbox = 'expired' WHERE workspace_id = ? AND activity_type = 'a2a_receive'
                      AND id > ? AND id <= ? AND inbox = 'open' AND created_at < ?""",
                   [workspace_id, old.fetched_through, through, expire_before])
        db.execute("INSERT OR REPLACE INTO inbox_cursors (workspace_id, fetched_through, taken_through) "
                   "VALUES (?, ?, ?)", [workspace_id, through, max(old.taken_through, taken)])

    return op


def state(row: dict[str, Any], at: Cursor, expire_before: float) -> str | None:
    """The state of an activity row that is an inbox message (None for any other row)."""
    if row.get("inbox") is None:
        return None
    if row["inbox"] != "open":
        return str(row["inbox"])
    if row["id"] <= at.fetched_through:
        return "fetched"
    return "expired" if row["created_at"] < expire_before else "queued"


def event_payload(workspace_id: str, row_id: int, state: str, source_id: str | None, *,
                  expires_at: float | None = None) -> dict[str, Any]:
    """What :data:`EVENT` says of one message (its sender is ``source_id``, None for the operator)."""
    payload: dict[str, Any] = {"activity_id": row_id, "state": state, "source_id": source_id,
                               "target_id": workspace_id}
    if expires_at is not None:
        payload["expires_at"] = rfc3339(expires_at)
    return payload


def expire_before(ttl_days: float, now: float) -> float:
    return now - ttl_days * DAY


#: The inbox messages of a workspace with their state (what :func:`state` says), for counting and listing.
_MESSAGES = """SELECT id, source_id, method, summary, created_at,
                      CASE WHEN inbox != 'open' THEN inbox WHEN id <= :fetched THEN 'fetched'
                           WHEN created_at < :expire_before THEN 'expired' ELSE 'queued' END AS state
               FROM activity WHERE workspace_id = :wid AND activity_type = 'a2a_receive' AND inbox IS NOT NULL"""


def counts(db: sqlite_utils.Database, workspace_id: str, at: Cursor, expire_before: float) -> dict[str, int]:
    found = dict(db.execute(f"SELECT state, count(*) FROM ({_MESSAGES}) GROUP BY state",
                            {"fetched": at.fetched_through, "expire_before": expire_before,
                             "wid": workspace_id}).fetchall())
    return {name: int(found.get(name, 0)) for name in STATES}


def messages(db: sqlite_utils.Database, workspace_id: str, at: Cursor, expire_before: float, *,
             only: str | None, limit: int) -> list[dict[str, Any]]:
    """The newest ``limit`` inbox messages (in state ``only``, if given), newest first, without their bodies."""
    rows = db.execute(
        f"""SELECT * FROM ({_MESSAGES}) WHERE :only IS NULL OR state = :only ORDER BY id DESC LIMIT :limit""",
        {"fetched": at.fetched_through, "expire_before": expire_before, "wid": workspace_id, "only": only,
         "limit": limit}).fetchall()
    return [dict(row) for row in rows]


def task_row(db: sqlite_utils.Database, workspace_id: str, row_id: int) -> dict[str, Any] | None:
    row = db.execute("SELECT * FROM activity WHERE id = ? AND workspace_id = ? AND inbox IS NOT NULL",
                     [row_id, workspace_id]).fetchone()
    return dict(row) if row else None


def mark_replied(workspace_id: str, source_id: str | None, reply: dict[str, Any],
                 row_id: int | None = None) -> Callable[[sqlite_utils.Database], int | None]:
    """The agent of ``workspace_id`` answered ``source_id`` (None: its user): the message it answers is the
    one named (``row_id``, when the reply names its task) or else the oldest it fetched from that sender and
    has not answered yet (the SDK handles and answers its inbox in order). Returns that row's id, or None."""
    encoded = json.dumps(reply, separators=(",", ":"))

    def op(db: sqlite_utils.Database) -> int | None:
        named, args = ("AND id = ?", [row_id]) if row_id is not None else ("", [])
        found = db.execute(f"""
            SELECT id FROM activity WHERE workspace_id = ? AND activity_type = 'a2a_receive' AND inbox = 'open'
            AND source_id IS ? {named}
            AND id <= coalesce((SELECT fetched_through FROM inbox_cursors WHERE workspace_id = ?), 0)
            ORDER BY id LIMIT 1""", [workspace_id, source_id, *args, workspace_id]).fetchone()
        if found is None:
            return None
        db.execute("UPDATE activity SET inbox = 'replied', response_body = ? WHERE id = ?", [encoded, found[0]])
        return int(found[0])

    return op
