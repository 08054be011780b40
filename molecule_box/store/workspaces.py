"""Reads and write ops for the ``workspaces`` table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlite_utils

from ..models import WORKSPACE_COLUMNS, Workspace, WorkspaceStatus
from .tokens import invalidate

#: The columns a record is decoded from, by position (Workspace.from_columns).
_SELECT = f"SELECT {', '.join(WORKSPACE_COLUMNS)} FROM workspaces"


def get(db: sqlite_utils.Database, workspace_id: str) -> Workspace | None:
    row = db.execute(f"{_SELECT} WHERE id = ?", [workspace_id]).fetchone()
    return Workspace.from_columns(row) if row else None


def all_live(db: sqlite_utils.Database) -> list[Workspace]:
    """Every workspace not removed, oldest first (the list order and the restore order)."""
    rows = db.execute(f"{_SELECT} WHERE status != 'removed' ORDER BY created_at, id").fetchall()
    return [Workspace.from_columns(row) for row in rows]


def _unique(rows: list[Any], workspace_id: str) -> list[str]:
    """The first column's ids in order, each once and never ``workspace_id`` itself (a cycle's way back)."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.setdefault(row[0], None)
    seen.pop(workspace_id, None)
    return list(seen)


def descendants(db: sqlite_utils.Database, workspace_id: str) -> list[str]:
    """Ids of every non-removed descendant, nearest first (a recursive CTE, bounded against cycles)."""
    rows = db.execute(
        """
        WITH RECURSIVE tree(id, depth) AS (
            SELECT id, 1 FROM workspaces WHERE parent_id = ? AND status != 'removed'
            UNION
            SELECT w.id, tree.depth + 1 FROM workspaces w JOIN tree ON w.parent_id = tree.id
            WHERE w.status != 'removed' AND tree.depth < 64
        )
        SELECT id FROM tree ORDER BY depth
        """,
        [workspace_id],
    ).fetchall()
    return _unique(rows, workspace_id)


def ancestors(db: sqlite_utils.Database, workspace_id: str) -> list[str]:
    """Ids of the workspace's ancestors, parent first (bounded against cycles)."""
    rows = db.execute(
        """
        WITH RECURSIVE up(id, depth) AS (
            SELECT parent_id, 1 FROM workspaces WHERE id = ? AND parent_id IS NOT NULL
            UNION
            SELECT w.parent_id, up.depth + 1 FROM workspaces w JOIN up ON w.id = up.id
            WHERE w.parent_id IS NOT NULL AND up.depth < 64
        )
        SELECT id FROM up ORDER BY depth
        """,
        [workspace_id],
    ).fetchall()
    return _unique(rows, workspace_id)


def backends_in_use(db: sqlite_utils.Database) -> set[str]:
    """The backends some workspace not removed runs on (each is started with the box)."""
    return {row[0] for row in db.execute("SELECT DISTINCT backend FROM workspaces WHERE status != 'removed'")}


def children(db: sqlite_utils.Database, workspace_id: str) -> list[dict[str, Any]]:
    rows = db.execute(
        "SELECT id, name FROM workspaces WHERE parent_id = ? AND status != 'removed' ORDER BY created_at",
        [workspace_id],
    ).fetchall()
    return [dict(row) for row in rows]


def insert(workspace: Workspace) -> Callable[[sqlite_utils.Database], None]:
    row = workspace.to_row()

    def op(db: sqlite_utils.Database) -> None:
        names = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        db.execute(f"INSERT INTO workspaces ({names}) VALUES ({marks})", list(row.values()))

    return op


def save(workspace: Workspace) -> Callable[[sqlite_utils.Database], None]:
    """Write every column of ``workspace`` (the actor's whole record) in one UPDATE."""
    row = workspace.to_row()
    wid = row.pop("id")
    removed = workspace.status is WorkspaceStatus.REMOVED

    def op(db: sqlite_utils.Database) -> None:
        if removed:  # its tokens stop working with it (the token lookup joins the workspace's status)
            invalidate(db, [wid])
        assignments = ", ".join(f"{name} = ?" for name in row)
        db.execute(f"UPDATE workspaces SET {assignments} WHERE id = ?", [*row.values(), wid])

    return op


#: The tables whose rows belong to one workspace (``workspace_id``) and go with it when it is purged.
OWNED_BY_WORKSPACE = ("tokens", "register_bootstrap", "secrets", "activity", "inbox_cursors", "events",
                      "actor_failures", "plugin_installs", "plugin_allowlist",
                      "workspace_config", "workspace_memory")


def purge(family: list[str]) -> Callable[[sqlite_utils.Database], None]:
    """The op that hard-deletes the workspaces of ``family`` and every row they own (their children outside it
    become roots). Their actors must have exited: nothing may write for them while it runs."""
    def op(db: sqlite_utils.Database) -> None:
        marks = ",".join("?" for _ in family)
        db.execute(f"UPDATE workspaces SET parent_id = NULL WHERE parent_id IN ({marks})", family)
        for table in OWNED_BY_WORKSPACE:
            db.execute(f"DELETE FROM {table} WHERE workspace_id IN ({marks})", family)
        db.execute(f"DELETE FROM workspaces WHERE id IN ({marks})", family)

    return op
