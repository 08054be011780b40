"""The store file seen from outside a running box: a read-only look at it, and a consistent copy of it.

Backup, restore and ``doctor`` run beside the box (or instead of it), so they open the file themselves, read-only,
and never through the writer. Errors are ``sqlite3.Error``: a file that is not a store says so to its caller.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import sqlite_utils

from . import secrets as secret_rows
from .db import BUSY_TIMEOUT_MS


def _open_ro(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return conn


def inspect(path: Path) -> dict[str, Any]:
    """Integrity, schema version and workspace count of a store file (``workspaces`` None when it has no such
    table)."""
    conn = _open_ro(path)
    try:
        integrity = [row[0] for row in conn.execute("PRAGMA integrity_check").fetchall()]
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        try:
            workspaces = int(conn.execute("SELECT count(*) FROM workspaces WHERE status != 'removed'").fetchone()[0])
        except sqlite3.Error:
            workspaces = None
    finally:
        conn.close()
    return {"integrity": "ok" if integrity == ["ok"] else "; ".join(integrity[:5]),
            "schema_version": version, "workspaces": workspaces}


def copy(path: Path, dest: Path) -> None:
    """Copy the store at ``path`` into the new file ``dest`` while its box may be writing: the whole file in
    one step (pages=-1), under one read transaction, so a consistent snapshot (WAL lets the writer carry on).
    The copy is one self-contained file, with no ``-wal`` beside it."""
    source = _open_ro(path)
    try:
        target = sqlite3.connect(dest)
        try:
            source.backup(target, pages=-1)
            target.execute("PRAGMA journal_mode = DELETE")
        finally:
            target.close()
    finally:
        source.close()


def encrypted_secret(path: Path) -> dict[str, Any] | None:
    """One encrypted secret row of a store file and how many rows there are (``count``), for a key to be tried
    on; None when it has none or cannot be read."""
    if not path.exists():
        return None
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        conn.row_factory = sqlite3.Row
        return secret_rows.first_encrypted(sqlite_utils.Database(conn))
    except sqlite3.Error:
        return None
    finally:
        conn.close()
