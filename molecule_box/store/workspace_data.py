"""What a workspace keeps on the box for itself: its JSON config and its key/value memory.

Both are the workspace's own (its token or the admin reads them, never another workspace). A memory entry has
a version that grows by one at each write, so a writer can say which version it read (``if_match_version``)
and lose to a concurrent writer instead of overwriting it; an entry with a TTL is gone once it expires
(reads skip it, and the next write of its key starts again at version 1).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import sqlite_utils

from .errors import VersionMismatch


def config(db: sqlite_utils.Database, workspace_id: str) -> dict[str, Any]:
    row = db.execute("SELECT data FROM workspace_config WHERE workspace_id = ?", [workspace_id]).fetchone()
    data = json.loads(row[0]) if row else {}
    return data if isinstance(data, dict) else {}


def merge_config(workspace_id: str, changes: dict[str, Any]) -> Callable[[sqlite_utils.Database], dict[str, Any]]:
    """The op that shallow-merges ``changes`` into the stored config (a key set to null stays, as null: the
    platform's JSONB ``||``) and returns the result."""

    def op(db: sqlite_utils.Database) -> dict[str, Any]:
        data = config(db, workspace_id) | changes
        db.execute("""INSERT INTO workspace_config (workspace_id, data, updated_at) VALUES (?, ?, ?)
                      ON CONFLICT (workspace_id) DO UPDATE SET data = excluded.data,
                          updated_at = excluded.updated_at""",
                   [workspace_id, json.dumps(data, separators=(",", ":")), time.time()])
        return data

    return op


def _entry(row: Any) -> dict[str, Any]:
    return {"key": row["key"], "value": json.loads(row["value"]), "version": row["version"],
            "expires_at": row["expires_at"], "created_at": row["created_at"], "updated_at": row["updated_at"]}


def memory(db: sqlite_utils.Database, workspace_id: str, key: str | None = None) -> list[dict[str, Any]]:
    """The workspace's live entries (one, or none, when ``key`` is given), by key."""
    sql = ("SELECT key, value, version, expires_at, created_at, updated_at FROM workspace_memory "
           "WHERE workspace_id = ? AND (expires_at IS NULL OR expires_at > ?)")
    args: list[Any] = [workspace_id, time.time()]
    if key is not None:
        sql += " AND key = ?"
        args.append(key)
    return [_entry(row) for row in db.execute(sql + " ORDER BY key", args).fetchall()]


def put_memory(workspace_id: str, key: str, value: Any, *, ttl_seconds: float | None,
               if_match_version: int | None) -> Callable[[sqlite_utils.Database], dict[str, Any]]:
    """The op that writes one entry (raising :class:`VersionMismatch` when ``if_match_version`` is not the
    live version) and returns it."""
    now = time.time()
    expires_at = now + ttl_seconds if ttl_seconds is not None else None

    def op(db: sqlite_utils.Database) -> dict[str, Any]:
        found = memory(db, workspace_id, key)
        current = found[0]["version"] if found else 0
        if if_match_version is not None and if_match_version != current:
            raise VersionMismatch(current)
        created_at = found[0]["created_at"] if found else now
        db.execute("""INSERT INTO workspace_memory (workspace_id, key, value, version, expires_at, created_at,
                          updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)
                      ON CONFLICT (workspace_id, key) DO UPDATE SET value = excluded.value,
                          version = excluded.version, expires_at = excluded.expires_at,
                          created_at = excluded.created_at, updated_at = excluded.updated_at""",
                   [workspace_id, key, json.dumps(value, separators=(",", ":")), current + 1, expires_at,
                    created_at, now])
        return {"key": key, "value": value, "version": current + 1, "expires_at": expires_at,
                "created_at": created_at, "updated_at": now}

    return op


def delete_memory(workspace_id: str, key: str) -> Callable[[sqlite_utils.Database], bool]:
    """The op that deletes one entry; True when a live one was there."""

    def op(db: sqlite_utils.Database) -> bool:
        live = bool(memory(db, workspace_id, key))
        db.execute("DELETE FROM workspace_memory WHERE workspace_id = ? AND key = ?", [workspace_id, key])
        return live

    return op
