"""An actor's commit writes only the columns that changed since its last commit, and the whole row again after
a write that failed (which may or may not have reached the row)."""

from __future__ import annotations

import sqlite3

import httpx

from molecule_box.store import workspaces as workspace_rows

from ..conftest import BoxRunner, bearer, joined


async def test_after_a_failed_write_the_next_save_writes_the_whole_row(runner: BoxRunner) -> None:
    box = await runner.start()
    async with httpx.AsyncClient(base_url=box.urls[0], timeout=30) as client:
        wid, token = await joined(client, "saved")

        async def beat() -> int:
            response = await client.post("/registry/heartbeat", json={"workspace_id": wid, "uptime_seconds": 5},
                                         headers=bearer(token))
            return response.status_code

        def name() -> str | None:
            row = workspace_rows.get(box.store.db, wid)
            return None if row is None else row.name

        # A column written behind the actor's back stays as it is: a heartbeat writes only what it changed.
        await box.store.write(lambda db: db.execute("UPDATE workspaces SET name = 'elsewhere' WHERE id = ?", [wid]))
        assert await beat() == 200
        assert name() == "elsewhere"
        # A write that fails: another process holds the write lock past the store's busy timeout.
        other = sqlite3.connect(box.store.path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            assert await beat() == 503
        finally:
            other.execute("ROLLBACK")
            other.close()
        # The next commit does not trust the row to hold the record: it writes every column.
        assert await beat() == 200
        assert name() == "saved"
        row = workspace_rows.get(box.store.db, wid)
        assert row is not None and row.uptime_seconds == 5 and row.status.value == "online"
