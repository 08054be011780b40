"""Agent plugin rows: a workspace's recorded installs, and an org's plugin allowlist (by its root workspace)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import sqlite_utils

from ..models import Event
from . import events


def installed(db: sqlite_utils.Database, workspace_id: str) -> list[dict[str, Any]]:
    rows = db.execute("SELECT name, source, installed_at FROM plugin_installs WHERE workspace_id = ? ORDER BY name",
                      [workspace_id]).fetchall()
    return [dict(row) for row in rows]


def record_install(workspace_id: str, name: str, source: str, event: Event) -> Callable[[sqlite_utils.Database], None]:
    """The install row (replacing an earlier one of the same plugin) and its event, in one transaction."""
    now = time.time()
    record = events.insert(event)

    def op(db: sqlite_utils.Database) -> None:
        db.execute("""INSERT INTO plugin_installs (workspace_id, name, source, installed_at) VALUES (?, ?, ?, ?)
                      ON CONFLICT (workspace_id, name) DO UPDATE SET source = excluded.source,
                          installed_at = excluded.installed_at""", [workspace_id, name, source, now])
        record(db)

    return op


def remove_install(workspace_id: str, name: str, event: Event) -> Callable[[sqlite_utils.Database], bool]:
    """Delete the install row; the event is recorded only when there was one (an uninstall is idempotent)."""
    record = events.insert(event)

    def op(db: sqlite_utils.Database) -> bool:
        removed = db.execute("DELETE FROM plugin_installs WHERE workspace_id = ? AND name = ?",
                             [workspace_id, name]).rowcount > 0
        if removed:
            record(db)
        return removed

    return op


def allowlist(db: sqlite_utils.Database, org_id: str) -> list[dict[str, Any]]:
    rows = db.execute("SELECT plugin_name, enabled_by, enabled_at FROM plugin_allowlist WHERE workspace_id = ? "
                      "ORDER BY plugin_name", [org_id]).fetchall()
    return [dict(row) for row in rows]


def allows(db: sqlite_utils.Database, org_id: str, name: str) -> bool:
    """Whether the org lets ``name`` in: its list is empty, or names it."""
    row = db.execute("SELECT count(*), sum(plugin_name = ?) FROM plugin_allowlist WHERE workspace_id = ?",
                     [name, org_id]).fetchone()
    return row[0] == 0 or bool(row[1])


def replace_allowlist(org_id: str, names: list[str], enabled_by: str) -> Callable[[sqlite_utils.Database], None]:
    now = time.time()

    def op(db: sqlite_utils.Database) -> None:
        db.execute("DELETE FROM plugin_allowlist WHERE workspace_id = ?", [org_id])
        for name in dict.fromkeys(names):
            db.execute("INSERT INTO plugin_allowlist (workspace_id, plugin_name, enabled_by, enabled_at) "
                       "VALUES (?, ?, ?, ?)", [org_id, name, enabled_by, now])

    return op
