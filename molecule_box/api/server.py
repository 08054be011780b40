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
rereading ``worker_serve`` against ``serve`` below, and :class:`_Exchange`
against hypercorn's ``H11Protocol._maybe_recycle``.
"""

from __future__ import annotations

import errno
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
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
#: After an early answer, the rest of the request body read (and dropped) to keep the connection: the
#: largest body a route accepts, within DRAIN_DEADLINE. Past either, the connection is closed instead.
DRAIN_LIMIT = 1024 * 1024
DRAIN_DEADLINE = 5.0
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


def _says_close(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    return any(name.lower() == b"connection" and b"close" in value.lower() for name, value in headers)


class _Exchange:
    """One HTTP/1 request between hypercorn and the app: makes the end of its response end it cleanly.

    hypercorn recycles or closes the connection from inside the app's last ``send``.
    Two things went wrong there. (1) It hands ``http.disconnect`` to the app from
    inside that send; quart-trio then cancels its request task, and the
    cancellation landed in hypercorn's close (the socket stayed open: a
    ``Connection: close`` or HTTP/1.0 request was never closed) or in its
    recycling (the keep-alive timer was not restarted). So the last send is
    shielded; it is bounded by itself (hypercorn shields its socket writes
    already; the waits below have deadlines). (2) An early answer (a 401 before
    the body arrived): hypercorn closes the connection, but under (1) it stayed
    open with the rest of the body unparsed, and the next request on it hung. Now
    the rest of the body is read and dropped, up to DRAIN_LIMIT within
    DRAIN_DEADLINE, so the connection serves its next request; past that (or when
    either side said ``Connection: close``) hypercorn closes it, and the app's
    queue is kept moving meanwhile so that close never waits on it.
    """

    __slots__ = ("_receive", "_send", "_reusable", "_complete", "_waiter")

    def __init__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self._receive = receive
        self._send = send
        self._reusable = scope["http_version"] == "1.1" and not _says_close(scope["headers"])
        self._complete = False  # the request's body has ended (or its client has gone)
        self._waiter: trio.CancelScope | None = None

    async def receive(self) -> dict[str, Any]:
        message: dict[str, Any] = await self._receive()
        if message["type"] == "http.disconnect" or not message.get("more_body", False):
            self._complete = True
            if self._waiter is not None:  # the drain waits in another receive (quart reads the body too)
                self._waiter.cancel()
        return message

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and _says_close(message.get("headers", ())):
            self._reusable = False
        if message["type"] != "http.response.body" or message.get("more_body", False):
            await self._send(message)
            return
        with trio.CancelScope(shield=True):
            if self._complete:
                await self._send(message)
            else:
                await self._early_end(message.get("body", b""))

    async def _early_end(self, body: bytes) -> None:
        if body:  # the client gets the whole answer before the drain
            await self._send({"type": "http.response.body", "body": body, "more_body": True})
        if self._reusable:
            await self._read_rest(DRAIN_LIMIT)
        async with trio.open_nursery() as nursery:
            if not self._complete:  # hypercorn closes the connection; its queue to the app must not block it
                nursery.start_soon(self._read_rest, math.inf)
            await self._send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _read_rest(self, limit: float) -> None:
        """Read and drop the body until its end, its client's leaving, ``limit`` bytes or DRAIN_DEADLINE."""
        size = 0
        with trio.move_on_after(DRAIN_DEADLINE) as self._waiter:
            while not self._complete and size <= limit:
                size += len((await self.receive()).get("body", b""))
        self._waiter = None


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


async def serve(
    app: Any,
    config: hypercorn.config.Config,
    *,
    intake: Intake,
    shutdown_trigger: Callable[[], Awaitable[object]],
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the ASGI ``app`` until ``shutdown_trigger`` returns; ``task_status.started(urls)`` once listening.

    On shutdown the listeners close first (new connections are refused, not left
    hanging in the backlog), then open connections get ``config.graceful_timeout``."""
    if config.ssl_enabled:
        raise ValueError("the box serves plain HTTP; put a TLS proxy in front of it")
    config.set_statsd_logger_class(StatsdLogger)

    async def entered(scope: Any, receive: Any, send: Any, sync_spawn: Any, call_soon: Any) -> None:
        """hypercorn's app wrapper signature (what its ASGIWrapper does, plus the intake and :class:`_Exchange`)."""
        reached_app()
        if scope["type"] != "http" or scope["http_version"] not in ("1.0", "1.1"):  # h2 streams end on their own
            await app(scope, receive, send)
            return
        exchange = _Exchange(scope, receive, send)
        await app(scope, exchange.receive, exchange.send)

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
            for sock in config.create_sockets().insecure_sockets:
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
