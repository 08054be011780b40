"""The store: one SQLite file in WAL mode, written by exactly one task with group commit.

Why this shape:

* Every write is a small synchronous function (an *op*) submitted to the
  writer. The writer runs whatever ops accumulated while its previous commit
  was in flight as one transaction, each op inside its own SAVEPOINT, then
  commits and wakes the submitters. So a reply is never sent before its data
  is committed, yet under load one fsync covers many requests (measured on
  this stack: 0.91 of the ceiling with ``synchronous=FULL`` against 0.66 for
  a commit per request). An op that raises fails only its own submitter; a
  failed COMMIT fails every op of the batch.
* The ops run on the trio loop and only the COMMIT (the fsync) runs in a
  worker thread, so an fsync never stalls the loop. Running the ops in the
  thread too was measured to cost more than it saved: every SQLite call
  releases the GIL, and under load the thread waited up to the interpreter's
  5 ms switch interval to take it back, three or more times per op, which
  held heartbeats waiting for their commit for hundreds of ms while the
  proxy kept the loop busy. An op that may touch many rows (retention,
  cascaded deletes) is submitted with ``bulk=True``; its batch runs whole in
  the thread so the loop never stalls on it.
* Reads use a second connection on the loop (WAL lets readers see the last
  commit without waiting for the writer).
* The writer never checkpoints (``wal_autocheckpoint=0``): SQLite's automatic
  checkpoint runs inside the COMMIT that crosses 1,000 WAL pages, and every
  write of that batch (heartbeats included) waited for it, 80-250 ms under
  proxy load. A checkpointer task folds the WAL back every
  CHECKPOINT_EVERY instead, PASSIVE, on its own connection in a thread,
  concurrently with the writer's commits.
* ``synchronous=FULL``: whatever a client was told succeeded survives a power
  loss, not only a process crash.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

import outcome
import sqlite_utils
import trio

from . import migrations
from .errors import StoreUnavailable
from .tokens import TokenCache

log = logging.getLogger(__name__)

T = TypeVar("T")
Op = Callable[[sqlite_utils.Database], T]

#: Longest a submitter waits for its commit before it is told StoreUnavailable.
WRITE_DEADLINE = 30.0
#: How long a connection waits for a lock another process holds (for the writer: its thread path only).
BUSY_TIMEOUT_MS = 5000
#: How often the WAL is folded back into the database file while there are commits.
CHECKPOINT_EVERY = 1.0


class Write(Generic[T]):
    """A submitted op; ``await write.wait()`` returns its result once committed.

    ``on_commit`` is the submitter's continuation, run with the op's result the moment the commit is known
    durable, before the submitter resumes: from the commit thread's delivery, so what it sets (an actor's
    record, the reply to the request that asked) is seen a scheduling round earlier than after the writer
    task and then the submitter had each been scheduled. It runs only while the submitter still waits (not
    after it gave up on the deadline or was cancelled), and its exception is raised by ``wait()``, as if the
    submitter had run it."""

    __slots__ = ("abandoned", "bulk", "done", "error", "fn", "on_commit", "result")

    def __init__(self, fn: Op[T], bulk: bool = False, on_commit: Callable[[T], None] | None = None) -> None:
        self.fn = fn
        self.bulk = bulk
        self.on_commit = on_commit
        self.done = trio.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.abandoned = False

    def finish(self) -> None:
        """The batch is over (committed, or ``error`` says why not): run the continuation, wake the submitter."""
        if self.error is None and self.on_commit is not None and not self.abandoned:
            try:
                self.on_commit(self.result)
            except Exception as exc:  # the submitter's own code: it fails the submitter, never the writer
                self.error = exc
        self.done.set()

    async def wait(self) -> T:
        """The deadline is the disk's, so it is counted in real seconds: on trio's clock alone, a test's
        MockClock jumps past it while the COMMIT runs in its thread (the loop looks idle then), and the write
        failed though the disk was merely slow. On a real clock the two are the same."""
        started = time.monotonic()
        try:
            while not self.done.is_set():
                with trio.move_on_after(WRITE_DEADLINE):
                    await self.done.wait()
                if not self.done.is_set() and time.monotonic() - started >= WRITE_DEADLINE:
                    raise StoreUnavailable("commit did not finish in time")
        finally:
            self.abandoned = not self.done.is_set()
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[no-any-return]


def _connect(path: Path, *, thread_shared: bool = False) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=not thread_shared)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


def make_private(path: Path) -> None:
    """Create ``path`` if needed and make it owner-only (0600), whatever the umask.

    The store holds every token hash and secret ciphertext. SQLite creates a new database file 0644 (less the
    umask) and gives its ``-wal`` and ``-shm`` the database file's mode, so the mode is set here, before SQLite
    opens it, and on every start (a store of an older box, or one copied in with ``cp``)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


class _WriterDatabase(sqlite_utils.Database):
    """The writer's handle, as ops receive it: it also carries the in-memory state that follows the commits
    (the token cache, which the ops ending a token invalidate)."""

    def __init__(self, conn: sqlite3.Connection, token_cache: TokenCache) -> None:
        super().__init__(conn)
        self.token_cache = token_cache


class Store:
    """The box's one SQLite file. Read through :attr:`db`; write only through :meth:`write` / :meth:`submit`."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        make_private(self.path)
        writer = _connect(self.path, thread_shared=True)
        mode = writer.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise StoreUnavailable(f"cannot put {self.path} in WAL mode (got {mode})")
        for leftover in (Path(f"{self.path}-wal"), Path(f"{self.path}-shm")):  # as an older box left them
            if leftover.exists():
                os.chmod(leftover, 0o600)
        writer.execute("PRAGMA wal_autocheckpoint = 0")  # the checkpointer task does it, off the commit path
        self._wconn = writer
        #: Live token rows by digest, exact: see store.tokens.TokenCache (settled after every commit).
        self.token_cache = TokenCache()
        self._wdb = _WriterDatabase(writer, self.token_cache)
        self._migrate()
        # From here the writer never waits for a lock on the loop: only the thread path (_apply) does.
        writer.execute("PRAGMA busy_timeout = 0")
        self._rconn = _connect(self.path)
        #: Read-only handle for queries on the trio loop.
        self.db = sqlite_utils.Database(self._rconn)
        self._pending: list[Write[Any]] = []
        self._has_work = trio.Event()
        self._committed = trio.Event()  # set by each commit, cleared by the checkpointer
        self._closed = False
        self.batches = 0
        self.commit_seconds = 0.0
        #: Called (from a worker thread) with the seconds SQLite spent in each COMMIT and each checkpoint.
        self.observe_commit: Callable[[float], None] | None = None
        self.observe_checkpoint: Callable[[float], None] | None = None

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

    def submit(self, fn: Op[T], *, bulk: bool = False, on_commit: Callable[[T], None] | None = None) -> Write[T]:
        """Queue an op for the next batch; await ``.wait()`` on the result for its commit.

        ``bulk=True`` for an op whose cost grows with the data (it runs off the loop, see the module doc);
        ``on_commit``: see :class:`Write`."""
        if self._closed:
            raise StoreUnavailable("store is closed")
        write: Write[T] = Write(fn, bulk, on_commit)
        self._pending.append(write)
        self._has_work.set()
        return write

    async def write(self, fn: Op[T], *, bulk: bool = False, on_commit: Callable[[T], None] | None = None) -> T:
        return await self.submit(fn, bulk=bulk, on_commit=on_commit).wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer task and its checkpointer. On cancellation it still commits everything already submitted."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._checkpointer)
                task_status.started()
                while True:
                    # Whatever was submitted since the last commit started shares the next one, at once: a
                    # scheduling round here to gather more measured as pure latency under load, and so does
                    # the one Event.wait() takes when the event is already set (under load it always is).
                    if self._has_work.is_set():
                        await trio.lowlevel.checkpoint_if_cancelled()
                    else:
                        await self._has_work.wait()
                    await self._flush()
        finally:
            with trio.CancelScope(shield=True):
                while self._pending:
                    await self._flush()

    async def _checkpointer(self) -> None:
        """At most one checkpoint per CHECKPOINT_EVERY, and none while nothing is written (no idle wakeups)."""
        while True:
            await self._committed.wait()
            await trio.sleep(CHECKPOINT_EVERY)  # the commits of the next second share this checkpoint
            self._committed = trio.Event()
            try:
                await trio.to_thread.run_sync(self.checkpoint)
            except sqlite3.Error as exc:  # a failed checkpoint loses nothing: the WAL keeps the data
                log.warning("store checkpoint failed: %s", exc)

    async def _flush(self) -> None:
        batch, self._pending = self._pending, []
        self._has_work = trio.Event()
        if not batch:
            return
        started = time.perf_counter()
        if not any(write.bulk for write in batch) and self._begin_now():
            self._run_ops(batch)
            await _commit_thread(self._commit, batch, self._deliver)
        else:
            await trio.to_thread.run_sync(self._apply, batch)
            self._deliver(batch)
        self.commit_seconds += time.perf_counter() - started
        self.batches += 1
        self._committed.set()

    def _deliver(self, batch: list[Write[Any]]) -> None:
        """Tell each submitter of a finished batch; never raises (it may run in trio's callback task)."""
        self.token_cache.settle()  # before any submitter hears of its commit
        for write in batch:
            write.finish()

    def _begin_now(self) -> bool:
        """BEGIN IMMEDIATE on the loop without ever waiting for the lock (the writer's busy_timeout is 0).
        False when another process holds it (an operator's sqlite3 shell): the batch then goes to the
        thread, which waits up to BUSY_TIMEOUT_MS."""
        try:
            self._wconn.execute("BEGIN IMMEDIATE")
            return True
        except sqlite3.Error:
            return False

    def _apply(self, batch: list[Write[Any]]) -> None:
        """The whole batch in the worker thread: bulk ops, or the write lock was not free at once."""
        conn = self._wconn
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        try:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                log.error("store: cannot begin a transaction: %s", exc)
                for write in batch:
                    write.error = StoreUnavailable(str(exc))
                return
            self._run_ops(batch)
            self._commit(batch)
        finally:
            conn.execute("PRAGMA busy_timeout = 0")

    def _run_ops(self, batch: list[Write[Any]]) -> None:
        conn = self._wconn
        for write in batch:
            conn.execute("SAVEPOINT op")
            try:
                write.result = write.fn(self._wdb)
            except Exception as exc:  # the op's own failure: undo it alone
                conn.execute("ROLLBACK TO op")
                write.error = exc
            conn.execute("RELEASE op")

    def _commit(self, batch: list[Write[Any]]) -> None:
        conn = self._wconn
        try:
            began = time.perf_counter()
            conn.execute("COMMIT")
            if self.observe_commit is not None:
                self.observe_commit(time.perf_counter() - began)
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
            began = time.perf_counter()
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            if self.observe_checkpoint is not None:
                self.observe_checkpoint(time.perf_counter() - began)
        finally:
            conn.close()

    def size(self) -> int:
        """Bytes the store takes on disk: the database file and its WAL (what retention and checkpoints bound)."""
        total = 0
        for path in (self.path, self.path.with_name(self.path.name + "-wal")):
            try:
                total += path.stat().st_size
            except FileNotFoundError:
                pass
        return total

    def close(self) -> None:
        """Close both connections; call after the writer task has finished."""
        self._closed = True
        for conn in (self._rconn, self._wconn):
            try:
                conn.close()
            except sqlite3.Error:
                pass


async def _commit_thread(fn: Callable[[list[Write[Any]]], None], batch: list[Write[Any]],
                         deliver: Callable[[list[Write[Any]]], None]) -> None:
    """Run the COMMIT in a worker thread and wait for it, not cancellable (a half-seen commit has no meaning).

    Not ``trio.to_thread.run_sync``: its capacity limiter costs a scheduling round before the thread starts,
    and under load every round is long; this path is taken by every commit (measured in bench/a2a_proxy with
    2,000 calls in flight: heartbeat p99 70-101 ms -> 33-50 ms, and the proxy's CPU per request -20 %). For
    the same reason ``deliver`` (the submitters told) runs in the callback that brings the result back to the
    loop, not in this task once rescheduled: one round fewer between a commit and each submitter."""
    task = trio.lowlevel.current_task()
    token = trio.lowlevel.current_trio_token()

    def back_on_the_loop(result: outcome.Outcome[None]) -> None:
        if isinstance(result, outcome.Value):
            try:
                deliver(batch)
            except BaseException as exc:  # this callback must not raise into trio's run loop
                result = outcome.Error(exc)
        trio.lowlevel.reschedule(task, result)

    def report(result: outcome.Outcome[None]) -> None:  # in the worker thread
        token.run_sync_soon(back_on_the_loop, result)

    trio.lowlevel.start_thread_soon(lambda: fn(batch), report)
    await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)


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
