"""The SQLite store: migrations, schema guard, group commit semantics, durability of acknowledged writes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio

from molecule_box.errors import ConfigError
from molecule_box.store import Store
from molecule_box.store.migrations import SCHEMA_VERSION, STATUSES


async def test_migrations_and_pragmas(tmp_path: Path, nursery: trio.Nursery) -> None:
    store = Store.open(tmp_path / "box.db")
    assert store.schema_version == SCHEMA_VERSION
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._wconn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert set(store.db.table_names()) >= {"workspaces", "tokens", "secrets", "events", "activity"}
    store.close()


def test_status_check_constraint_has_all_ten_states(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "box.db")
    sql = store.db.execute("SELECT sql FROM sqlite_master WHERE name = 'workspaces'").fetchone()[0]
    assert len(STATUSES) == 10 and all(f"'{s}'" in sql for s in STATUSES)
    with pytest.raises(sqlite3.IntegrityError):
        store._wconn.execute("INSERT INTO workspaces (id, name, status, runtime, backend, created_at, updated_at) "
                             "VALUES ('x', 'n', 'bogus', 'r', 'b', 0, 0)")
    store.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "box.db"
    Store.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(ConfigError, match="newer than this molecule-box"):
        Store.open(path)


async def test_group_commit_isolates_failing_ops(tmp_path: Path, nursery: trio.Nursery) -> None:
    store = Store.open(tmp_path / "box.db")
    await nursery.start(store.run)

    def put(key: str):  # type: ignore[no-untyped-def]
        return lambda db: db.execute("INSERT INTO box_settings (key, value) VALUES (?, 'v')", [key])

    writes = [store.submit(put(f"k{i}")) for i in range(50)]
    duplicate = store.submit(put("k7"))
    for write in writes:
        await write.wait()
    with pytest.raises(sqlite3.IntegrityError):
        await duplicate.wait()
    assert store.batches <= 3  # 51 submissions shared a few commits
    # Acknowledged writes are visible to a brand-new connection (committed, not just buffered).
    fresh = sqlite3.connect(tmp_path / "box.db")
    assert fresh.execute("SELECT count(*) FROM box_settings").fetchone()[0] == 50
    fresh.close()


async def test_writer_commits_pending_writes_on_cancel(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "box.db")
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        write = store.submit(lambda db: db.execute("INSERT INTO box_settings VALUES ('late', 'v')"))
        nursery.cancel_scope.cancel()
    assert write.done.is_set() and write.error is None
    store.close()
    assert sqlite3.connect(tmp_path / "box.db").execute("SELECT value FROM box_settings").fetchone()[0] == "v"
