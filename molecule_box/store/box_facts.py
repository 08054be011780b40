"""Small key/value facts of this box (its id, the admin token's digest), in the ``box_settings`` table: not the
box's settings, which come from the environment (``config.py``)."""

from __future__ import annotations

from collections.abc import Callable

import sqlite_utils


def get(db: sqlite_utils.Database, key: str) -> str | None:
    row = db.execute("SELECT value FROM box_settings WHERE key = ?", [key]).fetchone()
    return None if row is None else str(row[0])


def put(key: str, value: str) -> Callable[[sqlite_utils.Database], None]:
    def op(db: sqlite_utils.Database) -> None:
        db.execute(
            "INSERT INTO box_settings (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [key, value],
        )

    return op
