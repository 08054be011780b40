"""The SQLite store: migrations, schema guard, group commit semantics, durability of acknowledged writes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio

from molecule_box.errors import ConfigError
from molecule_box.models import WORKSPACE_COLUMNS, Workspace, WorkspaceStatus
from molecule_box.store import Store
from molecule_box.store import workspaces as workspace_rows
from molecule_box.store.migrations import MIGRATIONS, SCHEMA_VERSION, STATUSES


async def test_migrations_and_pragmas(tmp_path: Path, nursery: trio.Nursery) -> None:
    store = Store(tmp_path / "box.db")
    assert store.schema_version == SCHEMA_VERSION
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._wconn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert set(store.db.table_names()) >= {"workspaces", "tokens", "secrets", "events", "activity"}
    store.close()


def test_status_check_constraint_has_all_ten_states(tmp_path: Path) -> None:
    store = Store(tmp_path / "box.db")
    sql = store.db.execute("SELECT sql FROM sqlite_master WHERE name = 'workspaces'").fetchone()[0]
    assert len(STATUSES) == 10 and all(f"'{s}'" in sql for s in STATUSES)
    with pytest.raises(sqlite3.IntegrityError):
        store._wconn.execute("INSERT INTO workspaces (id, name, status, runtime, backend, created_at, updated_at) "
                             "VALUES ('x', 'n', 'bogus', 'r', 'b', 0, 0)")
    store.close()


async def test_a_record_reads_back_from_its_row_as_it_was_written(tmp_path: Path, nursery: trio.Nursery) -> None:
    """Records are decoded by column position (Workspace.from_columns): every field, its JSON, its enum and its
    booleans come back as written, by get and by the restore's all_live alike, and the record's fields are
    exactly the table's columns (a column the record lacked would be read into the wrong field, or not at all)."""
    store = Store(tmp_path / "box.db")
    await nursery.start(store.run)
    columns = [row[1] for row in store.db.execute("PRAGMA table_info(workspaces)").fetchall()]
    assert sorted(columns) == sorted(WORKSPACE_COLUMNS)
    full = Workspace(
        id="w1", name="every field", status=WorkspaceStatus.PAUSED, runtime="langgraph", backend="docker",
        created_at=1.5, updated_at=2.5, role="planner", tier=2, agent_card={"name": "a", "skills": [{"id": "s"}]},
        url="http://127.0.0.1:9", url_from_backend=True, parent_id=None, last_heartbeat_at=3.5, last_error_rate=0.25,
        last_sample_error="boom", active_tasks=2, uptime_seconds=7, current_task="t", runtime_state="wedged",
        runtime_metadata={"capabilities": {"status_mgmt": True}}, monthly_spend=11, budget_limit=99,
        max_concurrent_tasks=3, workspace_dir="/srv/w", workspace_access="read_only", config={"model": "m"},
        backend_state={"container": "c1"}, failure_reason="oom", last_outbound_at=4.5, x=1.0, y=-2.0, collapsed=True,
        status_changed_at=5.5, last_seen_at=6.5)
    child = Workspace(id="w2", name="defaults", status=WorkspaceStatus.ONLINE, runtime="external",
                      backend="external", created_at=8.0, updated_at=8.0, parent_id="w1")
    await store.write(lambda db: [workspace_rows.insert(full)(db), workspace_rows.insert(child)(db)])
    got = workspace_rows.get(store.db, "w1")
    assert got == full
    # == takes 1 for True and "paused" for the enum member: the types are checked apart
    assert got is not None and got.url_from_backend is True and got.collapsed is True
    assert got.status is WorkspaceStatus.PAUSED
    assert workspace_rows.get(store.db, "w2") == child
    assert workspace_rows.all_live(store.db) == [full, child]
    assert workspace_rows.get(store.db, "nobody") is None


def older_store(path: Path, version: int) -> sqlite3.Connection:
    """A store as a box of schema ``version`` left it (autocommit: what the caller inserts is kept)."""
    conn = sqlite3.connect(path, isolation_level=None)
    for script in MIGRATIONS[:version]:
        conn.executescript(script)
    conn.execute(f"PRAGMA user_version = {version}")
    return conn


def test_a_store_of_an_older_box_is_upgraded_in_place(tmp_path: Path) -> None:
    """Schema 2 (the first release with the proxy) gains last_seen_at; its rows are kept as they were."""
    path = tmp_path / "box.db"
    conn = older_store(path, 2)
    conn.execute("INSERT INTO workspaces (id, name, status, runtime, backend, last_heartbeat_at, created_at, "
                 "updated_at) VALUES ('w1', 'old', 'online', 'external', 'external', 5.0, 1.0, 2.0)")
    conn.close()
    store = Store(path)
    assert store.schema_version == SCHEMA_VERSION
    old = workspace_rows.get(store.db, "w1")
    assert old is not None and old.name == "old" and old.last_heartbeat_at == 5.0 and old.last_seen_at is None
    store.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "box.db"
    Store(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(ConfigError, match="newer than this molecule-box"):
        Store(path)


async def test_group_commit_isolates_failing_ops(tmp_path: Path, nursery: trio.Nursery) -> None:
    store = Store(tmp_path / "box.db")
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
    store = Store(tmp_path / "box.db")
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        write = store.submit(lambda db: db.execute("INSERT INTO box_settings VALUES ('late', 'v')"))
        nursery.cancel_scope.cancel()
    assert write.done.is_set() and write.error is None
    store.close()
    assert sqlite3.connect(tmp_path / "box.db").execute("SELECT value FROM box_settings").fetchone()[0] == "v"


def put(key: str):  # type: ignore[no-untyped-def]
    def op(db):  # type: ignore[no-untyped-def]
        db.execute("INSERT INTO box_settings (key, value) VALUES (?, 'v')", [key])
        return key
    return op


async def test_a_writes_continuation_runs_once_committed_before_its_submitter_resumes(
        tmp_path: Path, nursery: trio.Nursery) -> None:
    """on_commit runs with the op's result once the row is durable, on the thread path too, and not for an op
    that failed or a commit that failed; its own exception is the submitter's, and the writer goes on."""
    store = Store(tmp_path / "box.db")
    await nursery.start(store.run)
    seen: list[tuple[str, int]] = []

    def note(result: str) -> None:
        rows = sqlite3.connect(tmp_path / "box.db").execute("SELECT count(*) FROM box_settings").fetchone()[0]
        seen.append((result, rows))

    assert await store.write(put("a"), on_commit=note) == "a"
    assert seen == [("a", 1)]  # before the submitter resumed, and already visible to another connection
    assert await store.write(put("b"), bulk=True, on_commit=note) == "b"
    assert seen[-1] == ("b", 2)

    with pytest.raises(sqlite3.IntegrityError):
        await store.write(put("a"), on_commit=note)  # the op itself fails: no continuation
    assert len(seen) == 2

    def broken(_: str) -> None:
        raise RuntimeError("the submitter's own bug")

    with pytest.raises(RuntimeError, match="own bug"):
        await store.write(put("c"), on_commit=broken)
    assert await store.write(put("d"), on_commit=note) == "d"  # the writer is unharmed
    assert seen[-1] == ("d", 4)
    store.close()


async def test_a_writes_continuation_does_not_run_once_its_submitter_stopped_waiting(
        tmp_path: Path, nursery: trio.Nursery) -> None:
    """A cancelled submitter has moved on: the commit still happens, its continuation must not run behind it."""
    store = Store(tmp_path / "box.db")
    await nursery.start(store.run)
    ran: list[str] = []
    write = store.submit(put("gone"), on_commit=ran.append)
    with trio.CancelScope() as scope:
        scope.cancel()
        await write.wait()
    assert write.abandoned
    with trio.fail_after(10):
        await write.done.wait()
    assert ran == [] and write.error is None
    assert sqlite3.connect(tmp_path / "box.db").execute(
        "SELECT count(*) FROM box_settings WHERE key = 'gone'").fetchone()[0] == 1
    store.close()


async def test_what_waited_for_a_commit_in_flight_runs_in_the_round_after_that_commit_ends(
        tmp_path: Path, nursery: trio.Nursery) -> None:
    """Under load a write is mostly submitted while the previous batch's COMMIT is in its thread. Once that
    commit is back on the loop (trio's callback task delivers it), the writer runs the next batch in the very
    next round. It took a round more when the writer's loop waited on its already set event (Event.wait()
    yields even then). Counted in the loop's batches of task steps."""
    import threading

    store = Store(tmp_path / "box.db")
    await nursery.start(store.run)
    hold, holding = threading.Event(), threading.Event()

    def observe(seconds: float) -> None:  # in the commit thread, after the first COMMIT
        if not holding.is_set():
            holding.set()
            hold.wait(10)

    class Rounds(trio.abc.Instrument):
        batches = 0

        def before_io_wait(self, timeout: float) -> None:
            self.batches += 1

    rounds = Rounds()
    marks: list[int] = []  # the round of the first commit's delivery, then the round the second op ran in

    def second_op(db):  # type: ignore[no-untyped-def]
        marks.append(rounds.batches)
        return put("second")(db)

    store.observe_commit = observe
    first = store.submit(put("first"), on_commit=lambda _: marks.append(rounds.batches))
    await trio.to_thread.run_sync(holding.wait, 10)
    second = store.submit(second_op)  # waits for the commit in flight
    trio.lowlevel.add_instrument(rounds)
    try:
        hold.set()
        with trio.fail_after(10):
            await first.wait()
            await second.wait()
    finally:
        trio.lowlevel.remove_instrument(rounds)
    delivered, ran = marks
    assert ran - delivered == 1, marks
    store.close()


async def test_ops_run_on_the_loop_and_bulk_ops_in_the_thread(tmp_path: Path, nursery: trio.Nursery) -> None:
    """Small ops run on the loop (no GIL hand-offs per statement); only COMMIT waits in the thread. An op marked
    bulk runs, with its whole batch, in the worker thread so a large delete never stalls the loop."""
    import threading

    store = Store(tmp_path / "box.db")
    await nursery.start(store.run)
    loop_thread = threading.get_ident()

    def where(key: str):  # type: ignore[no-untyped-def]
        def op(db):  # type: ignore[no-untyped-def]
            db.execute("INSERT INTO box_settings (key, value) VALUES (?, 'v')", [key])
            return threading.get_ident()
        return op

    assert await store.write(where("small")) == loop_thread
    assert await store.write(where("bulk"), bulk=True) != loop_thread
    fresh = sqlite3.connect(tmp_path / "box.db")
    assert fresh.execute("SELECT count(*) FROM box_settings").fetchone()[0] == 2
    fresh.close()


async def test_write_lock_held_by_another_process_is_waited_for_off_the_loop(tmp_path: Path,
                                                                            nursery: trio.Nursery) -> None:
    """An operator's sqlite3 shell holding the write lock must neither stall the trio loop nor lose writes."""
    store = Store(tmp_path / "box.db")
    await nursery.start(store.run)
    other = sqlite3.connect(tmp_path / "box.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    write = store.submit(lambda db: db.execute("INSERT INTO box_settings VALUES ('waited', 'v')"))
    ticks = 0
    with trio.move_on_after(0.5):
        while True:  # the loop keeps running while the writer waits for the lock
            await trio.sleep(0.01)
            ticks += 1
    assert ticks > 20 and not write.done.is_set()
    other.execute("ROLLBACK")
    other.close()
    with trio.fail_after(10):
        await write.wait()
    fresh = sqlite3.connect(tmp_path / "box.db")
    assert fresh.execute("SELECT value FROM box_settings WHERE key = 'waited'").fetchone()[0] == "v"
    fresh.close()
    store.close()


async def test_wal_is_folded_back_by_the_checkpointer_not_by_commits(tmp_path: Path, nursery: trio.Nursery) -> None:
    """Commits never checkpoint (a write waiting for a checkpoint stalled heartbeats); the store's checkpointer
    moves the WAL's pages into the database file within about a second instead."""
    path = tmp_path / "box.db"
    store = Store(path)
    await nursery.start(store.run)
    assert store._wconn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    size_before = path.stat().st_size
    blob = "x" * 4000
    for chunk in range(10):  # ~2 MB over 10 commits: well past the 1,000 pages SQLite would checkpoint at
        await store.write(lambda db, c=chunk: db.conn.executemany(
            "INSERT INTO box_settings (key, value) VALUES (?, ?)", [(f"k{c}-{i}", blob) for i in range(50)]))
    assert path.stat().st_size < size_before + 1_000_000  # the commits themselves left it all in the WAL
    with trio.fail_after(10):
        while path.stat().st_size < size_before + 1_500_000:
            await trio.sleep(0.1)
    store.close()
