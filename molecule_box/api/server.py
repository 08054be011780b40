"""The HTTP server: hypercorn's connection handling behind the box's own accept loop.

Why our own accept loop: the box is one trio loop, and trio runs every runnable
task once per scheduling round. A heartbeat's reply takes about twenty rounds
(hypercorn reading the request and writing the reply, the actor, the group
commit). When a burst of clients connects at once (2,000 agents calling
through the proxy), every new connection is runnable while hypercorn reads and
parses its first request, and so is everything the request then starts; the
rounds grew to 4-7 ms of 50 steps each, and a heartbeat waits for twenty of
them. Admission control (proxy/admission.py) cannot help: this work happens
before the app is called. Measured with bench/a2a_proxy.py, 2,000 concurrent
calls: heartbeat p99 55-87 ms with hypercorn's own accept loop; 22-34 ms with
an intake of 2-4 places, 30-66 ms with 32.

The intake: a new connection holds one of ``limit`` places from its accept
until its first request reaches the app or ``INTAKE_HOLD`` has passed. The
hold is what frees the place of a client that connects and sends nothing (a
preconnect, a port check): hypercorn keeps such a connection's task alive for
its keep-alive timeout even after the client has gone. While every place is
held, the accept loop waits; newer connections wait in the kernel's listen
backlog, which is why the backlog is large. Keep-alive connections are not
paced again: a heartbeat's connection is paced once, when it is opened.
Measured under that burst, the first request of a connection reached the app
6 ms after its accept at p50 and 23 ms at p99, well inside the hold.

Everything else is hypercorn's: ``TCPServer`` (HTTP/1.1, h2, keep-alive,
timeouts), ``Lifespan`` and ``WorkerContext``, used the way its
``hypercorn.trio.run.worker_serve`` uses them (hypercorn offers no way to give
it listeners or an accept loop). They are internal modules, so pyproject.toml
pins the hypercorn minor this was written against; moving the pin means
rereading ``worker_serve`` against ``serve`` below.
"""

from __future__ import annotations

import errno
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import hypercorn.config
import trio
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.statsd import StatsdLogger
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import ShutdownError, raise_shutdown, repr_socket_addr

from ..config import Settings

log = logging.getLogger(__name__)

#: Longest a new connection holds an intake place before its first request reaches the app.
INTAKE_HOLD = 0.1
#: Connections the kernel queues for us while the intake is full (Linux caps it at net.core.somaxconn).
LISTEN_BACKLOG = 4096
#: accept() errors that mean "out of file descriptors or memory for now", as trio.serve_listeners treats them.
_ACCEPT_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
_ACCEPT_RETRY = 0.1

#: The intake place of the connection a task serves (inherited by the tasks hypercorn spawns for its requests).
_arriving: ContextVar[_Place | None] = ContextVar("molecule_box_intake_place", default=None)


class _Place:
    __slots__ = ("_intake", "since", "held")

    def __init__(self, intake: Intake, since: float) -> None:
        self._intake = intake
        self.since = since
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self._intake._released()


class Intake:
    """Places for new connections between their accept and their first request reaching the app."""

    def __init__(self, limit: int, hold: float = INTAKE_HOLD) -> None:
        if limit < 1:
            raise ValueError("the intake needs at least one place")
        self._free = limit
        self._hold = hold
        self._held: deque[_Place] = deque()  # in accept order; released ones are dropped lazily
        self._lot = trio.lowlevel.ParkingLot()

    async def take(self) -> _Place:
        """A place for the next connection; waits while all are held, at most until the oldest one expires."""
        while True:
            now = trio.current_time()
            self._expire(now)
            if self._free > 0:
                break
            with trio.move_on_at(self._held[0].since + self._hold):
                await self._lot.park()
        self._free -= 1
        place = _Place(self, now)
        self._held.append(place)
        return place

    def _released(self) -> None:
        self._free += 1
        self._lot.unpark()

    def _expire(self, now: float) -> None:
        held = self._held
        while held and (not held[0].held or held[0].since + self._hold <= now):
            held.popleft().release()


def reached_app() -> None:
    """The current connection's request is in the app: its intake place is free for the next connection."""
    place = _arriving.get()
    if place is not None and place.held:
        place.release()


def hypercorn_config(settings: Settings) -> hypercorn.config.Config:
    config = hypercorn.config.Config()
    host = f"[{settings.bind_addr}]" if ":" in settings.bind_addr else settings.bind_addr
    config.bind = [f"{host}:{settings.port}"]
    config.errorlog = logging.getLogger("hypercorn.error")
    config.accesslog = None  # 13 % of the hot path (perf-notes); requests are counted in /metrics instead
    config.graceful_timeout = settings.shutdown_grace_seconds
    config.keep_alive_timeout = 75
    config.include_server_header = False
    config.backlog = LISTEN_BACKLOG
    return config


def shield_sends(app: Any, draining: trio.Event) -> Any:
    """During a graceful stop, let hypercorn finish closing connections whose last response went out.

    hypercorn hands ``http.disconnect`` to the app from *inside* the app's final
    ``send``; quart-trio then cancels its request task, and that cancellation lands
    in hypercorn's connection close, leaving the socket open. While draining, such a
    connection would hold the stop for the whole grace period. hypercorn shields its
    socket writes already, so shielding the rest of ``send`` adds no way to hang.
    Only while draining: outside it the same race leaves a ``Connection: close``
    socket open until the client closes it, which clients do after the response.
    """
    async def shielded(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return

        async def send_shielded(message: Any) -> None:
            if not draining.is_set():
                await send(message)
                return
            with trio.CancelScope(shield=True):
                await send(message)

        await app(scope, receive, send_shielded)

    return shielded


async def serve(
    app: Any,
    config: hypercorn.config.Config,
    *,
    intake: Intake,
    shutdown_trigger: Callable[[], Awaitable[object]],
    sockets: hypercorn.config.Sockets | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the ASGI ``app`` until ``shutdown_trigger`` returns; ``task_status.started(urls)`` once listening.

    ``sockets``: already bound by the caller (the box binds before it opens the store), else bound here.

    On shutdown the listeners close first (new connections are refused, not left
    hanging in the backlog), then open connections get ``config.graceful_timeout``."""
    if config.ssl_enabled:
        raise ValueError("the box serves plain HTTP; put a TLS proxy in front of it")
    config.set_statsd_logger_class(StatsdLogger)

    async def entered(scope: Any, receive: Any, send: Any, sync_spawn: Any, call_soon: Any) -> None:
        """hypercorn's app wrapper signature (what its ASGIWrapper does, plus freeing the intake place)."""
        reached_app()
        await app(scope, receive, send)

    lifespan_state: dict[str, Any] = {}
    lifespan = Lifespan(entered, config, lifespan_state)
    context = WorkerContext(None)
    state = ConnectionState(lifespan_state.copy())

    async def connection(stream: trio.SocketStream, place: _Place) -> None:
        try:
            await TCPServer(entered, config, context, state, stream)  # type: ignore[arg-type]
        finally:
            place.release()

    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()

        async with trio.open_nursery() as server_nursery:
            listeners: list[trio.SocketListener] = []
            urls: list[str] = []
            for sock in (sockets or config.create_sockets()).insecure_sockets:
                sock.listen(config.backlog)
                listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
                urls.append(f"http://{repr_socket_addr(sock.family, sock.getsockname())}")
            task_status.started(urls)
            try:
                async with trio.open_nursery(strict_exception_groups=True) as nursery:
                    nursery.start_soon(raise_shutdown, shutdown_trigger)
                    nursery.start_soon(raise_shutdown, context.terminate.wait)
                    for listener in listeners:
                        nursery.start_soon(_accept, listener, intake, connection, server_nursery)
            except BaseExceptionGroup as error:
                _, other_errors = error.split((ShutdownError, KeyboardInterrupt))
                if other_errors is not None:
                    raise other_errors
            finally:
                with trio.CancelScope(shield=True):
                    for listener in listeners:
                        await listener.aclose()
                await context.terminated.set()
                server_nursery.cancel_scope.deadline = trio.current_time() + config.graceful_timeout

        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()


async def _accept(listener: trio.SocketListener, intake: Intake,
                  connection: Callable[[trio.SocketStream, _Place], Awaitable[None]],
                  handlers: trio.Nursery) -> None:
    """One listener's accept loop: a connection is accepted only once it has an intake place."""
    while True:
        place = await intake.take()
        try:
            stream = await listener.accept()
        except OSError as exc:
            place.release()
            if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                raise
            log.error("accept failed (%s); retrying in %.1fs", errno.errorcode.get(exc.errno or 0, exc), _ACCEPT_RETRY)
            await trio.sleep(_ACCEPT_RETRY)
            continue
        except BaseException:
            place.release()
            raise
        _arriving.set(place)  # the connection's task copies this task's context when it is spawned
        handlers.start_soon(connection, stream, place)
