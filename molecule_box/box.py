"""The box: assembles store, event bus, backends, supervisor and HTTP server into one trio process.

Lifetimes nest so shutdown runs in the right order: the HTTP server stops
first (in-flight requests get the grace period), then actors and backends are
cancelled, then the writer commits what was already submitted, then the store
closes. Workloads are never stopped on the way out: restarting the box
restarts no agent.
"""

from __future__ import annotations

import logging
import os
import secrets
import sqlite3
import stat
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import trio

from ._version import __version__
from .actors import Supervisor
from .actors.commands import Observed
from .actors.deps import ActorDeps
from .authz import Sessions, authorize
from .backends.base import (
    BackendContext,
    BackendError,
    BackendEvent,
    BackendFactory,
    BackendNotInstalled,
    BackendSettings,
)
from .backends.loader import BackendRegistry
from .bus import EventBus
from .config import Settings
from .errors import ConfigError, leaves
from .metrics import BoxMetrics
from .ops import ports
from .ops.fsutil import atomic_write
from .ops.lock import DataDirLock
from .proxy.service import A2AProxy
from .security import tokens as tk
from .security.crypto import SecretBox, load_key
from .store import Store, box_facts, retention
from .store import workspaces as workspace_rows
from .vault import Vault

log = logging.getLogger(__name__)

#: The orphan sweep runs ``ORPHAN_GRACE_SECONDS`` after start, then this often.
ORPHAN_SWEEP_INTERVAL = 60.0
#: Longest one orphan's removal may take before the sweep moves on (it is retried at the next sweep).
ORPHAN_DESTROY_DEADLINE = 60.0


class AdminAuth:
    """The admin credential: ``ADMIN_TOKEN``, or a generated token kept only as its sha256."""

    def __init__(self, digest: bytes) -> None:
        self._digest = digest

    def check(self, token: str | None) -> bool:
        return token is not None and tk.digest_matches(token, self._digest)


class Box:
    """Everything one running box owns. Handlers reach the box's parts through this object."""

    def __init__(self, settings: Settings, store: Store, *, now: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.store = store
        self.now = now
        self.bus = EventBus(streams_per_holder=settings.streams_per_token, streams_total=settings.streams_total,
                            stream_buffer=settings.stream_buffer)
        self.metrics = BoxMetrics()
        store.observe_commit = self.metrics.sqlite_commit.observe
        store.observe_checkpoint = self.metrics.sqlite_checkpoint.observe
        self.vault = Vault(store, SecretBox(load_key(settings)))
        self.box_id = ""
        self.admin = AdminAuth(b"")
        self.sessions = Sessions(now)  # the dashboard's logins (memory only: a restart ends them)
        self.backends: BackendRegistry = None  # type: ignore[assignment]  # set by open_box
        self.supervisor: Supervisor = None  # type: ignore[assignment]
        self.proxy: A2AProxy = None  # type: ignore[assignment]  # set by open_box, once the supervisor is
        self.urls: list[str] = []
        self.started_at = time.time()
        self.restored = 0
        self.restore_seconds = 0.0
        self.shutdown_requested = trio.Event()
        self.metrics.bind_sampler(self._sample)

    async def _init_box_id(self) -> None:
        box_id = box_facts.get(self.store.db, "box_id")
        if box_id is None:
            box_id = secrets.token_hex(6)
            await self.store.write(box_facts.put("box_id", box_id))
        self.box_id = box_id

    async def _init_admin(self, announce: Callable[[str], None]) -> None:
        """The admin credential; generated (and shown) only once nothing else can fail the start.

        Called last by ``_open_box``, after the port is bound, the backends are loaded and every actor is
        restored: a start that fails after the token was shown would leave it shown, stored, and lost.
        ``ADMIN_TOKEN`` replaces the stored hash, so it is also how a lost token is recovered: the lost one
        does not come back when ``ADMIN_TOKEN`` is later removed from the environment."""
        stored = box_facts.get(self.store.db, "admin_token_sha256")
        if self.settings.admin_token is not None:
            digest = tk.hash_token(self.settings.admin_token)
            if stored != digest.hex():
                await self.store.write(box_facts.put("admin_token_sha256", digest.hex()))
            self.admin = AdminAuth(digest)
            return
        if stored is None:
            token = tk.mint()
            announce(token.plaintext)  # first: a token that could not be shown must not be the one kept
            await self.store.write(box_facts.put("admin_token_sha256", token.digest.hex()))
            stored = token.digest.hex()
        self.admin = AdminAuth(bytes.fromhex(stored))

    def report(self, event: BackendEvent) -> None:
        """Backends push what they observe to the workspace's actor; unknown workspaces are ignored."""
        if self.supervisor is not None:
            self.supervisor.tell(event.workspace_id, Observed(event))

    def _sample(self) -> dict[str, dict[str, float]]:
        counts: dict[str, float] = {}
        if self.supervisor is not None:
            for ws in self.supervisor.records():
                counts[ws.status.value] = counts.get(ws.status.value, 0) + 1
        return {
            "workspaces": counts,
            "single": {
                "actors": float(len(self.supervisor.slots) if self.supervisor else 0),
                "event_subscribers": float(self.bus.subscriber_count),
                "events_dropped": float(self.bus.dropped),
                "event_streams": float(self.bus.stream_count),
                "event_streams_refused": float(self.bus.refused),
                "event_streams_fell_behind": float(self.bus.fell_behind),
                "store_batches": float(self.store.batches),
                "store_commit_seconds": self.store.commit_seconds,
                "store_bytes": float(self.store.size()),
                "restore_seconds": self.restore_seconds,
            },
        }

    def status_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for ws in self.supervisor.records():
            counts[ws.status.value] = counts.get(ws.status.value, 0) + 1
        return counts

    # -- orphan sweep (workloads of this box with no workspace; Nomad's reconcile_dangling) ----------

    async def _orphan_sweep(self) -> None:
        """Remove, after a grace period and then every minute, the workloads this box manages that belong to
        no workspace it supervises (a delete interrupted by a crash, a store restored from an older backup)."""
        await trio.sleep(self.settings.orphan_grace_seconds)
        while True:
            await self.sweep_orphans()
            await trio.sleep(ORPHAN_SWEEP_INTERVAL)

    async def sweep_orphans(self) -> int:
        """One sweep over every loaded lifecycle backend; returns how many orphans it removed.

        Only workloads labelled with this box's id are listed (``list_managed``), so another box's are never
        touched; a workload younger than ``ORPHAN_GRACE_SECONDS`` is left alone (its create may still be on the
        way); a workspace with an actor cleans up its own workloads.
        """
        removed = 0
        grace = self.settings.orphan_grace_seconds
        for name, backend in sorted(self.backends.loaded().items()):
            if not backend.capabilities().lifecycle:
                continue
            try:
                handles = await backend.list_managed()
            except BackendError as exc:
                log.warning("orphan sweep: %s cannot list its workloads (%s)", name, exc.reason)
                continue
            for handle in handles:
                workspace_id = str(handle.get("workspace_id") or "")
                if workspace_id and workspace_id in self.supervisor.slots:
                    continue
                created = handle.get("created")
                if isinstance(created, (int, float)) and time.time() - created < grace:
                    continue
                log.warning("orphan sweep: removing %s workload %s of unknown workspace %s", name,
                            handle.get("name") or handle.get("container_id") or "?", workspace_id or "?")
                with trio.move_on_after(ORPHAN_DESTROY_DEADLINE):
                    try:
                        await backend.destroy(handle)
                        removed += 1
                        self.metrics.orphans_removed.labels(name).inc()
                    except BackendError as exc:
                        log.warning("orphan sweep: could not remove it (%s); retrying at the next sweep", exc.reason)
        return removed


ADMIN_TOKEN_FILE = "admin-token"


def _announce_admin_token(data_dir: Path, token: str) -> None:
    """Show a generated admin token to the operator once, and to no one else.

    On a terminal it is printed, never logged. Anywhere else (systemd's journal, CI, ``docker logs``)
    stderr is a log that shippers and other users read, so the token goes to a 0600 file in the data
    directory and the log says only where it is."""
    if sys.stderr.isatty():
        print(
            "\n  molecule-box generated an admin token (shown only this once; only its hash is stored):\n\n"
            f"    ADMIN_TOKEN={token}\n\n"
            "  Keep it in your env file or password manager, and give it to the CLI in another terminal:\n"
            "  molecule-box login   (paste it when asked; it is kept in ~/.config/molecule-box/admin-token)\n",
            file=sys.stderr,
            flush=True,
        )
        return
    path = data_dir / ADMIN_TOKEN_FILE
    atomic_write(path, f"{token}\n".encode(), mode=0o600)
    log.warning("generated an admin token (stderr is not a terminal, so it is not shown): it is in %s (mode 0600); "
                "give it to the CLI with `molecule-box login < %s`, keep it in your env file or password manager, "
                "then delete that file", path, path)


@asynccontextmanager
async def open_box(
    settings: Settings,
    *,
    extra_backends: Mapping[str, BackendFactory] | None = None,
    now: Callable[[], float] = time.time,
    announce: Callable[[str], None] | None = None,
) -> AsyncIterator[Box]:
    """Open the store, restore every workspace's actor and start the backends; yield the running box.

    Holds the data directory's lock (:mod:`molecule_box.ops.lock`) throughout: a second box or a
    ``molecule-box restore`` on the same directory is refused with :class:`ConfigError`. ``announce``
    receives a generated admin token (default: the terminal, else a 0600 file in the data directory).
    """
    with _claim_data_dir(settings.data_dir):
        async with _open_box(settings, extra_backends=extra_backends, now=now, announce=announce) as box:
            yield box


@contextmanager
def _claim_data_dir(data_dir: Path) -> Iterator[None]:
    """Make the data directory owner-only and hold its lock for the box's life."""
    _private_data_dir(data_dir)
    with DataDirLock.acquire(data_dir):
        yield


def _private_data_dir(data_dir: Path) -> None:
    """The data directory is the owner's alone (0700) whatever the umask, also when it existed already
    (systemd's ``StateDirectory=`` makes it 0755 unless told otherwise)."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ConfigError([f"cannot create the data directory {data_dir} ({exc.strerror}): set MOLECULE_BOX_DATA "
                           "to a directory this user can write"]) from None
    if stat.S_IMODE(data_dir.stat().st_mode) != 0o700:
        try:
            data_dir.chmod(0o700)
        except OSError as exc:
            raise ConfigError([f"{data_dir}: cannot make the data directory owner-only ({exc.strerror}); "
                               "chmod 700 it"]) from None


@contextmanager
def _bound(settings: Settings, config: Any) -> Iterator[Any]:
    """The API's listening sockets, bound before the store opens.

    A port that is taken (or a ``BIND_ADDR`` that does not resolve) then fails the start before anything is
    written, in one line that says what to change; the sockets start listening once the box serves."""
    try:
        sockets = config.create_sockets()
    except OSError as exc:
        problem, fix = ports.bind_problem(settings.bind_addr, settings.port, exc)
        raise ConfigError([f"{problem}: {fix}"]) from None
    try:
        yield sockets
    finally:
        for sock in sockets.insecure_sockets:
            sock.close()


@asynccontextmanager
async def _open_box(
    settings: Settings,
    *,
    extra_backends: Mapping[str, BackendFactory] | None,
    now: Callable[[], float],
    announce: Callable[[str], None] | None,
) -> AsyncIterator[Box]:
    try:
        store = Store(settings.store_path)
    except (OSError, sqlite3.Error) as exc:
        raise ConfigError([f"cannot open the store {settings.store_path} ({exc}): make the data directory "
                           "writable by this user, or set MOLECULE_BOX_DATA to one that is"]) from None
    try:
        async with trio.open_nursery() as writer_nursery:
            await writer_nursery.start(store.run)
            box = Box(settings, store, now=now)
            await box._init_box_id()
            await box.vault.seal_plaintext()
            async with trio.open_nursery() as core:
                context = BackendContext(box_id=box.box_id, settings=BackendSettings(), report=box.report,
                                         platform_url=settings.platform_url, bind_addr=settings.bind_addr)
                box.backends = BackendRegistry(context, core, extra=extra_backends, settings=settings.backends,
                                               fix=settings.not_installed_fix)
                await box.backends.get("external")
                await _load_backends_in_use(box)
                box.supervisor = Supervisor(ActorDeps(
                    store=store, bus=box.bus, backends=box.backends, settings=settings, metrics=box.metrics,
                    vault=box.vault, now=now))
                box.proxy = _proxy(box)
                began = time.perf_counter()
                box.restored = await core.start(box.supervisor.run)
                box.restore_seconds = time.perf_counter() - began
                log.info("restored %d workspace actors in %.3fs", box.restored, box.restore_seconds)
                await core.start(box.proxy.run)
                core.start_soon(box._orphan_sweep)
                core.start_soon(retention.run, store, settings)
                await box._init_admin(announce or partial(_announce_admin_token, settings.data_dir))
                yield box
                core.cancel_scope.cancel()
            writer_nursery.cancel_scope.cancel()
    finally:
        store.close()


def _proxy(box: Box) -> A2AProxy:
    """The A2A proxy, given the parts of the box it uses (a peer of the API: it is given the caller check that
    every route's ``caller`` tier runs, so its refusals are counted like the API's)."""
    return A2AProxy(store=box.store, bus=box.bus, settings=box.settings, supervisor=box.supervisor,
                    authorize=partial(authorize, box, "caller"), is_remote=box.backends.is_remote, now=box.now)


async def _load_backends_in_use(box: Box) -> None:
    """Start every backend some workspace uses, plus the default one; a missing plugin is logged, not fatal."""
    wanted = {box.settings.default_backend}
    wanted.update(workspace_rows.backends_in_use(box.store.db))
    for name in sorted(wanted):
        try:
            await box.backends.get(name)
        except BackendNotInstalled as exc:
            log.warning("%s", exc)
        except Exception as exc:  # an installed plugin that does not import, or whose serve() fails to start
            # A backend's own settings problem (from its serve(), so inside an exception group) is said as is.
            problems = [problem for error in leaves(exc, ConfigError) for problem in error.problems]
            if problems:
                raise ConfigError(problems) from None
            log.debug("backend %s failed to load", name, exc_info=True)
            fix = "reinstall or remove the plugin (`molecule-box doctor` lists every backend)"
            if name == box.settings.default_backend:
                fix += ", or set CONTAINER_BACKEND to another backend"
            raise ConfigError([f"backend plugin {name!r} fails to load ({type(exc).__name__}: {exc}): {fix}"]) from None


async def serve(
    settings: Settings,
    *,
    task_status: trio.TaskStatus[Box] = trio.TASK_STATUS_IGNORED,
    extra_backends: Mapping[str, BackendFactory] | None = None,
    now: Callable[[], float] = time.time,
    announce: Callable[[str], None] | None = None,
    on_ready: Callable[[Box], Any] | None = None,
) -> None:
    """Run the box until ``box.shutdown_requested`` is set; ``task_status.started(box)`` once it serves."""
    from .api import create_asgi, server
    from .api.hot import A2A_PATH

    config = server.hypercorn_config(settings)
    with _claim_data_dir(settings.data_dir), _bound(settings, config) as sockets:
        async with _open_box(settings, extra_backends=extra_backends, now=now, announce=announce) as box:
            app = create_asgi(box, hot={("POST", A2A_PATH): box.proxy.handle})
            intake = server.Intake(settings.connection_intake, head_timeout=settings.head_timeout_seconds)
            async with trio.open_nursery() as nursery:
                box.urls = await nursery.start(partial(
                    server.serve, app, config, intake=intake, sockets=sockets, inline=app.runs_inline,
                    shutdown_trigger=box.shutdown_requested.wait,
                ))
                log.info("molecule-box %s serving on %s (data: %s, pid %d)", __version__, ", ".join(box.urls),
                         settings.data_dir, os.getpid())
                if on_ready is not None:
                    on_ready(box)
                task_status.started(box)
            log.info("HTTP server stopped; closing the store")
