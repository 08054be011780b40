"""Secret rows (workspace and global; a global row has ``workspace_id = ''``). Values are ciphertext only.

The store keeps bytes and the version of the cipher that made them; only the vault knows the cipher, so it
encrypts before a row comes here and decrypts after it leaves.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import sqlite_utils

GLOBAL = ""


def listing(db: sqlite_utils.Database, workspace_id: str | None) -> list[dict[str, Any]]:
    rows = db.execute(
        "SELECT key, created_at, updated_at FROM secrets WHERE workspace_id = ? ORDER BY key",
        [workspace_id or GLOBAL],
    ).fetchall()
    return [dict(row) for row in rows]


def encrypted_rows(db: sqlite_utils.Database, workspace_id: str | None) -> list[dict[str, Any]]:
    rows = db.execute(
        "SELECT workspace_id, key, value, encryption_version FROM secrets WHERE workspace_id = ? ORDER BY key",
        [workspace_id or GLOBAL],
    ).fetchall()
    return [dict(row) for row in rows]


def overriding(db: sqlite_utils.Database, key: str) -> set[str]:
    """The workspaces with a secret ``key`` of their own, which a global ``key`` does not reach."""
    rows = db.execute("SELECT workspace_id FROM secrets WHERE key = ? AND workspace_id != ?", [key, GLOBAL])
    return {row[0] for row in rows}


def put(workspace_id: str | None, key: str, ciphertext: bytes,
        version: int) -> Callable[[sqlite_utils.Database], None]:
    now = time.time()

    def op(db: sqlite_utils.Database) -> None:
        db.execute(
            """INSERT INTO secrets (workspace_id, key, value, encryption_version, created_at, updated_at)
               VALUES (?, ?, ?, ?, ?, ?)
               ON CONFLICT (workspace_id, key) DO UPDATE SET value = excluded.value,
                   encryption_version = excluded.encryption_version, updated_at = excluded.updated_at""",
            [workspace_id or GLOBAL, key, ciphertext, version, now, now],
        )

    return op


def delete(workspace_id: str | None, key: str) -> Callable[[sqlite_utils.Database], bool]:
    def op(db: sqlite_utils.Database) -> bool:
        cursor = db.execute("DELETE FROM secrets WHERE workspace_id = ? AND key = ?", [workspace_id or GLOBAL, key])
        return cursor.rowcount > 0

    return op


def delete_workspace(workspace_ids: list[str]) -> Callable[[sqlite_utils.Database], None]:
    def op(db: sqlite_utils.Database) -> None:
        for wid in workspace_ids:
            db.execute("DELETE FROM secrets WHERE workspace_id = ?", [wid])

    return op


def plaintext_rows(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """The version-0 rows (plaintext, as the platform stored them without a key)."""
    return [dict(row) for row in db.execute(
        "SELECT workspace_id, key, value FROM secrets WHERE encryption_version = 0").fetchall()]


def seal(rows: list[tuple[str, str, bytes]], version: int) -> Callable[[sqlite_utils.Database], int]:
    """The op that replaces version-0 rows, given as (stored workspace_id, key, ciphertext), by their
    ciphertext; returns how many it replaced."""

    def op(db: sqlite_utils.Database) -> int:
        sealed = 0
        for workspace_id, key, ciphertext in rows:
            sealed += db.execute("UPDATE secrets SET value = ?, encryption_version = ? "
                                 "WHERE workspace_id = ? AND key = ? AND encryption_version = 0",
                                 [ciphertext, version, workspace_id, key]).rowcount
        return sealed

    return op


def first_encrypted(db: sqlite_utils.Database) -> dict[str, Any] | None:
    """One encrypted row, to try a key on (a plaintext row needs none), and how many rows there are."""
    row = db.execute("SELECT workspace_id, key, value, encryption_version FROM secrets "
                     "WHERE encryption_version != 0 LIMIT 1").fetchone()
    count = db.execute("SELECT count(*) FROM secrets").fetchone()[0]
    return dict(row) | {"count": count} if row else None
