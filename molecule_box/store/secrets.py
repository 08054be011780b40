"""Secret rows (workspace and global; a global row has ``workspace_id = ''``). Values are ciphertext only."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import sqlite_utils

from ..security.crypto import CURRENT_VERSION, SecretBox, secret_aad

GLOBAL = ""

log = logging.getLogger(__name__)


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


def put(box: SecretBox, workspace_id: str | None, key: str, value: str) -> Callable[[sqlite_utils.Database], None]:
    """Encrypt now (on the loop, cheap) so the op in the writer thread only stores bytes."""
    blob = box.encrypt(value, secret_aad(workspace_id, key))
    now = time.time()

    def op(db: sqlite_utils.Database) -> None:
        db.execute(
            """INSERT INTO secrets (workspace_id, key, value, encryption_version, created_at, updated_at)
               VALUES (?, ?, ?, ?, ?, ?)
               ON CONFLICT (workspace_id, key) DO UPDATE SET value = excluded.value,
                   encryption_version = excluded.encryption_version, updated_at = excluded.updated_at""",
            [workspace_id or GLOBAL, key, blob, CURRENT_VERSION, now, now],
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


def has_plaintext(db: sqlite_utils.Database) -> bool:
    return db.execute("SELECT 1 FROM secrets WHERE encryption_version = 0 LIMIT 1").fetchone() is not None


def seal_plaintext(box: SecretBox) -> Callable[[sqlite_utils.Database], int]:
    """Encrypt every version-0 (plaintext) row in place, bound to its row; returns how many.

    A row that is not UTF-8 text was never readable as a secret: it is left as it is, and is refused like
    any row that does not decrypt."""

    def op(db: sqlite_utils.Database) -> int:
        sealed = 0
        rows = db.execute("SELECT workspace_id, key, value FROM secrets WHERE encryption_version = 0").fetchall()
        for row in rows:
            value = row["value"]
            try:
                plaintext = value if isinstance(value, str) else bytes(value).decode()
            except UnicodeDecodeError:
                log.warning("secret %r of %s is plaintext but not UTF-8 text: left unreadable; set it again",
                            row["key"], row["workspace_id"] or "the box (global)")
                continue
            blob = box.encrypt(plaintext, secret_aad(row["workspace_id"] or None, row["key"]))
            db.execute("UPDATE secrets SET value = ?, encryption_version = ? WHERE workspace_id = ? AND key = ?",
                       [blob, CURRENT_VERSION, row["workspace_id"], row["key"]])
            sealed += 1
        return sealed

    return op
