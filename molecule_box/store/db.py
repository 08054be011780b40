"""The store: one SQLite file in WAL mode, written by exactly one task with group commit.

Why this shape:

* Every write is a small synchronous function (an *op*) submitted to the
  writer. The writer runs whatever ops accumulated while its previous commit
  was in flight as one transaction, each op inside its own SAVEPOINT, then
  commits and wakes the submitters. So a reply is never sent before its data
  is committed, yet under load one fsync covers many requests (reference
  perf-notes: 0.91 of the ceiling with ``synchronous=FULL`` against 0.66 for
  a commit per request). An op that raises fails only its own submitter; a
  failed COMMIT fails every op of the batch.
* The batch runs in a worker thread on its own connection, so an fsync never
  stalls the trio loop; reads use a second connection on the loop (WAL lets
  readers see the last commit without waiting for the writer).
* ``synchronous=FULL``: whatever a client was told succeeded survives a power
  loss, not only a process crash.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

import sqlite_utils
import trio

from ..errors import StoreUnavailable
from . import migrations

log = logging.getLogger(__name__)

T = TypeVar("T")
Op = Callable[[sqlite_utils.Database], T]

#: Longest a submitter waits for its commit before answering 503.
WRITE_DEADLINE = 30.0


class Write(Generic[T]):
    """A submitted op; ``await write.wait()`` returns its result once committed."""

    __slots__ = ("fn", "done", "result", "error")

    def __init__(self, fn: Op[T]) -> None:
        self.fn = fn
        self.done = trio.Event()
        self.result: Any = None
        self.error: BaseException | None = None

    async def wait(self) -> T:
        with trio.move_on_after(WRITE_DEADLINE):
            await self.done.wait()
        if not self.done.is_set():
            raise StoreUnavailable("commit did not finish in time")
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[no-any-return]


def _connect(path: Path, *, thread_shared: bool = False) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=not thread_shared)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


class Store:
    """The box's one SQLite file. Read through :attr:`db`; write only through :meth:`write` / :meth:`submit`."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        writer = _connect(self.path, thread_shared=True)
        mode = writer.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise StoreUnavailable(f"cannot put {self.path} in WAL mode (got {mode})")
        self._wconn = writer
        self._wdb = sqlite_utils.Database(writer)
        self._migrate()
        self._rconn = _connect(self.path)
        #: Read-only handle for queries on the trio loop.
        self.db = sqlite_utils.Database(self._rconn)
        self._pending: list[Write[Any]] = []
        self._has_work = trio.Event()
        self._closed = False
        self.batches = 0
        self.commit_seconds = 0.0

    @classmethod
    def open(cls, path: Path) -> Store:
        return cls(path)

    def _migrate(self) -> None:
        found = self._wconn.execute("PRAGMA user_version").fetchone()[0]
        migrations.check_version(found)
        for version in range(found + 1, migrations.SCHEMA_VERSION + 1):
            log.info("applying store migration %d", version)
            self._wconn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _statements(migrations.MIGRATIONS[version - 1]):
                    self._wconn.execute(statement)
                self._wconn.execute(f"PRAGMA user_version = {version}")
                self._wconn.execute("COMMIT")
            except BaseException:
                self._wconn.execute("ROLLBACK")
                raise

    @property
    def schema_version(self) -> int:
        return int(self._rconn.execute("PRAGMA user_version").fetchone()[0])

    # -- writing -----------------------------------------------------------------------------

    def submit(self, fn: Op[T]) -> Write[T]:
        """Queue an op for the next batch; await ``.wait()`` on the result for its commit."""
        if self._closed:
            raise StoreUnavailable("store is closed")
        write: Write[T] = Write(fn)
        self._pending.append(write)
        self._has_work.set()
        return write

    async def write(self, fn: Op[T]) -> T:
        return await self.submit(fn).wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer task. On cancellation it still commits everything already submitted."""
        task_status.started()
        try:
            while True:
                await self._has_work.wait()
                # One scheduling round lets requests that arrived together share a commit.
                await trio.sleep(0)
                await self._flush()
        finally:
            with trio.CancelScope(shield=True):
                while self._pending:
                    await self._flush()

    async def _flush(self) -> None:
        batch, self._pending = self._pending, []
        self._has_work = trio.Event()
        if not batch:
            return
        started = time.perf_counter()
        await trio.to_thread.run_sync(self._apply, batch)
        self.commit_seconds += time.perf_counter() - started
        self.batches += 1
        for write in batch:
            write.done.set()

    def _apply(self, batch: list[Write[Any]]) -> None:
        conn = self._wconn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            log.error("store: cannot begin a transaction: %s", exc)
            for write in batch:
                write.error = StoreUnavailable(str(exc))
            return
        for write in batch:
            conn.execute("SAVEPOINT op")
            try:
                write.result = write.fn(self._wdb)
            except Exception as exc:  # the op's own failure: undo it alone
                conn.execute("ROLLBACK TO op")
                write.error = exc
            conn.execute("RELEASE op")
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            log.error("store: commit failed, %d writes lost: %s", len(batch), exc)
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            for write in batch:
                write.error = StoreUnavailable(str(exc))

    # -- maintenance -------------------------------------------------------------------------

    def checkpoint(self) -> None:
        """Fold the WAL back into the main file so it does not grow without bound.

        Runs on a connection of its own (any connection may checkpoint a WAL database), so it never shares
        the writer's connection across threads; PASSIVE never blocks the writer or readers."""
        conn = _connect(self.path)
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            conn.close()

    def close(self) -> None:
        """Close both connections; call after the writer task has finished."""
        self._closed = True
        for conn in (self._rconn, self._wconn):
            try:
                conn.close()
            except sqlite3.Error:
                pass


def _statements(script: str) -> list[str]:
    """Split a migration script on statement boundaries (sqlite3.complete_statement knows quoting)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            if current.strip():
                statements.append(current.strip())
            current = ""
    if current.strip():
        statements.append(current.strip())
    return statements
