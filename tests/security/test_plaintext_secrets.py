"""Plaintext (version-0) secret rows, as a platform store without a key holds them (issue #10 item 11): encrypted
at start, and never read as plaintext after."""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from pathlib import Path

import httpx

from ..conftest import BoxRunner, bearer, joined


def insert_plaintext(db: Path, workspace_id: str, key: str, value: str) -> None:
    with closing(sqlite3.connect(db)) as conn, conn:
        now = time.time()
        conn.execute("INSERT INTO secrets (workspace_id, key, value, encryption_version, created_at, updated_at) "
                     "VALUES (?, ?, ?, 0, ?, ?)", [workspace_id, key, value.encode(), now, now])


def stored(db: Path, workspace_id: str, key: str) -> tuple[bytes, int]:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        value, version = conn.execute("SELECT value, encryption_version FROM secrets WHERE workspace_id = ? "
                                      "AND key = ?", [workspace_id, key]).fetchone()
    return bytes(value), int(version)


async def test_plaintext_rows_are_encrypted_at_start_and_still_read_by_their_owner(runner: BoxRunner) -> None:
    box = await runner.start()
    async with httpx.AsyncClient(base_url=box.urls[0], timeout=10) as client:
        wid, token = await joined(client, "legacy")
    await runner.stop()
    db = runner.data_dir / "molecule-box.db"
    insert_plaintext(db, wid, "LEGACY_KEY", "sk-legacy-plaintext")
    insert_plaintext(db, "", "LEGACY_GLOBAL", "global-plaintext")

    box = await runner.start()
    for owner, key, value in ((wid, "LEGACY_KEY", "sk-legacy-plaintext"), ("", "LEGACY_GLOBAL", "global-plaintext")):
        blob, version = stored(db, owner, key)
        assert version == 2 and value.encode() not in blob
    async with httpx.AsyncClient(base_url=box.urls[0], timeout=10) as client:
        values = await client.get(f"/workspaces/{wid}/secrets/values", headers=bearer(token))
        assert values.status_code == 200, values.text
        assert values.json() == {"LEGACY_KEY": "sk-legacy-plaintext", "LEGACY_GLOBAL": "global-plaintext"}

        # A plaintext row written behind the running box's back is refused, not served as it stands.
        insert_plaintext(db, wid, "SNUCK_IN", "planted-value")
        refused = await client.get(f"/workspaces/{wid}/secrets/values", headers=bearer(token))
        assert refused.status_code == 500 and refused.json()["failed_keys"] == ["workspace:SNUCK_IN"]
        assert "planted-value" not in refused.text
