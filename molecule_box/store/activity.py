"""``activity``: the per-workspace log of A2A traffic, notifications and agent reports; also the poll inbox.

Ids are AUTOINCREMENT, so they only grow and are never reused after pruning:
the SDK's ``since_id`` cursor stays valid, and a cursor below the prune
watermark is answered 410 instead of silently restarting from zero.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import sqlite_utils

from . import box_facts

COLUMNS = ("workspace_id", "activity_type", "source_id", "target_id", "method", "summary", "request_body",
           "response_body", "duration_ms", "status", "error_detail", "created_at", "inbox")
WATERMARK = "activity_pruned_below"

log = logging.getLogger(__name__)


#: How much of a request or response body a log row keeps (an inbox row keeps its message whole).
LOGGED_BODY_LIMIT = 65536


def _text(value: Any, limit: int | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        text = value.decode("utf-8", "replace")
    elif isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, separators=(",", ":"), default=str)
    return text if limit is None else text[:limit]


def insert(*, body_limit: int | None = LOGGED_BODY_LIMIT, **fields: Any) -> Callable[[sqlite_utils.Database], int]:
    """``body_limit=None`` for a row whose body is the message itself (the poll inbox): it is never cut."""
    fields.setdefault("created_at", time.time())
    for name in ("request_body", "response_body"):
        fields[name] = _text(fields.get(name), body_limit)
    values = [fields.get(name) for name in COLUMNS]

    def op(db: sqlite_utils.Database) -> int:
        cursor = db.execute(f"INSERT INTO activity ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                            values)
        return int(cursor.lastrowid or 0)

    return op


def insert_each(ops: list[Callable[[sqlite_utils.Database], int]]) -> Callable[[sqlite_utils.Database], int]:
    """One op for many ``insert`` ops, each on its own: a bad row (its workspace just deleted) is logged and
    skipped, never dropping the rest. Returns how many were written."""
    def op(db: sqlite_utils.Database) -> int:
        written = 0
        for insert_row in ops:
            try:
                insert_row(db)
                written += 1
            except sqlite3.Error as exc:
                log.warning("activity row not written: %s", exc)
        return written

    return op


def query(db: sqlite_utils.Database, workspace_id: str, *, activity_type: str | None = None,
          since_id: int | None = None, before_ts: float | None = None, peer_id: str | None = None,
          exclude_source: str | None = None, source: str | None = None, limit: int = 100,
          newest_first: bool = False, expired: tuple[int, float] | None = None) -> list[dict[str, Any]]:
    """``expired=(fetched_through, expire_before)`` leaves out the inbox messages that expired unfetched."""
    where = ["workspace_id = ?"]
    args: list[Any] = [workspace_id]
    if activity_type:
        where.append("activity_type = ?")
        args.append(activity_type)
    if since_id is not None:
        where.append("id > ?")
        args.append(since_id)
    if before_ts is not None:
        where.append("created_at < ?")
        args.append(before_ts)
    if peer_id:
        where.append("source_id = ?")
        args.append(peer_id)
    if exclude_source:
        where.append("(source_id IS NULL OR source_id != ?)")
        args.append(exclude_source)
    if expired is not None:
        where.append("NOT (inbox IS 'open' AND id > ? AND created_at < ?)")
        args.extend(expired)
    if source == "canvas":
        where.append("source_id IS NULL")
    elif source == "agent":
        where.append("source_id IS NOT NULL")
    order = "DESC" if newest_first or since_id is None else "ASC"
    sql = f"SELECT * FROM activity WHERE {' AND '.join(where)} ORDER BY id {order} LIMIT ?"
    rows = [dict(row) for row in db.execute(sql, [*args, limit]).fetchall()]
    if since_id is None and not newest_first:
        rows.reverse()  # the newest ``limit`` rows, handed over oldest first
    return rows


def exists(db: sqlite_utils.Database, activity_id: int) -> bool:
    return db.execute("SELECT 1 FROM activity WHERE id = ?", [activity_id]).fetchone() is not None


def pruned_below(db: sqlite_utils.Database) -> int:
    return int(box_facts.get(db, WATERMARK) or 0)


def prune(older_than: float) -> Callable[[sqlite_utils.Database], int]:
    def op(db: sqlite_utils.Database) -> int:
        row = db.execute("SELECT max(id) FROM activity WHERE created_at < ?", [older_than]).fetchone()
        top = row[0]
        if top is None:
            return 0
        cursor = db.execute("DELETE FROM activity WHERE id <= ?", [top])
        box_facts.put(WATERMARK, str(top))(db)
        return int(cursor.rowcount)

    return op
