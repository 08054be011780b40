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

The intake: a new connection holds one of ``limit`` places from its start
until its first request reaches the app or ``INTAKE_HOLD`` has passed. The
hold is what frees the place of a client that connects and sends nothing (a
preconnect, a port check): such a connection lives on until its head
deadline. While every place is held, accepted connections wait in the
intake's queue, one line per client address, and the places go to the lines
in turn: 1,000 idle connections from one address delay a newcomer from another
by one turn, not by 1,000 holds (25 s with four places). One address may fill
at most half the queue (its further connections are closed at once); while the
queue is full, newer connections wait in the kernel's listen backlog. Keep-alive
connections are not paced again: a heartbeat's connection is paced once, when
it is opened. Measured under that burst, the first request of a connection
reached the app 6 ms after its accept at p50 and 23 ms at p99, well inside the
hold.

Every connection must deliver its first request head within the head timeout
of its accept (queue time included), or it is closed; between requests,
the keep-alive timeout closes it (connection.py).

Each connection is served by :class:`~molecule_box.api.connection.Connection`,
hypercorn's ``TCPServer`` with its socket reads and writes, keep-alive timer and
app queue made cheaper (connection.py says why). Everything else is
hypercorn's: the HTTP/1.1 and h2 protocols, ``Lifespan`` and ``WorkerContext``,
used the way its ``hypercorn.trio.run.worker_serve`` uses them (hypercorn
offers no way to give it listeners or an accept loop). They are internal
modules, so pyproject.toml pins the hypercorn minor this was written against;
moving the pin means rereading ``worker_serve`` against ``serve`` below,
:class:`_Exchange` against hypercorn's ``H11Protocol._maybe_recycle``, and
connection.py against ``hypercorn/trio/tcp_server.py`` and ``task_group.py``.
"""

from __future__ import annotations

import errno
import ipaddress
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
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import ShutdownError, raise_shutdown, repr_socket_addr

from ..config import Settings
from .connection import Connection

log = logging.getLogger(__name__)

#: Longest a new connection holds an intake place before its first request reaches the app.
INTAKE_HOLD = 0.1
#: Accepted connections waiting for an intake place; one client address may fill half of it.
INTAKE_QUEUE = 4096
#: Connections the kernel queues for us while the intake's queue is full (Linux caps it at net.core.somaxconn).
LISTEN_BACKLOG = 4096
#: The default head timeout (MOLECULE_BOX_HEAD_TIMEOUT).
HEAD_TIMEOUT = 10.0
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
    __slots__ = ("_intake", "head", "held", "since")

    def __init__(self, intake: Intake, since: float, head_deadline: float) -> None:
        self._intake = intake
        self.since = since
        self.held = True
        #: Around the connection's task until its first request reaches the app.
        self.head = trio.CancelScope(deadline=head_deadline)

    def release(self) -> None:
        if self.held:
            self.held = False
            self._intake._released()


class Intake:
    """Places for new connections between their start and their first request reaching the app.

    Accepted connections wait in one line per client address; the places go to the lines in turn."""

    def __init__(self, limit: int, hold: float = INTAKE_HOLD, *, head_timeout: float = HEAD_TIMEOUT,
                 queue: int = INTAKE_QUEUE) -> None:
        if limit < 1:
            raise ValueError("the intake needs at least one place")
        self._free = limit
        self._hold = hold
        self._head_timeout = head_timeout
        self._queue = queue
        self._held: deque[_Place] = deque()  # in start order; released ones are dropped lazily
        #: Connections waiting for a place (and their head deadlines), by client address; dict order is the turn order.
        self._lines: dict[str, deque[tuple[trio.SocketStream, float]]] = {}
        self._waiting = 0
        self._wake = trio.lowlevel.ParkingLot()  # the dispatcher: a place was freed or a connection arrived
        self._room = trio.lowlevel.ParkingLot()  # the accept loops: the queue has room again

    async def room(self) -> None:
        """Wait while the queue is full: newer connections then wait in the kernel's listen backlog."""
        while self._waiting >= self._queue:
            await self._room.park()

    def arrive(self, stream: trio.SocketStream) -> bool:
        """Queue an accepted connection for a place; False if its address already fills its share of the queue."""
        line = self._lines.setdefault(client_key(stream), deque())
        if len(line) >= max(1, self._queue // 2):
            return False
        line.append((stream, trio.current_time() + self._head_timeout))
        self._waiting += 1
        self._wake.unpark()
        return True

    async def dispatch(self, start: Callable[[trio.SocketStream, _Place], None]) -> None:
        """Give waiting connections their places, one client address after another, for as long as it runs."""
        try:
            while True:
                now = trio.current_time()
                self._expire(now)
                if self._free > 0 and self._waiting:
                    stream, head_deadline = self._next()
                    if head_deadline <= now:  # it waited its whole head timeout: it gets no place
                        stream.socket.close()
                        continue
                    self._free -= 1
                    place = _Place(self, now, head_deadline)
                    self._held.append(place)
                    start(stream, place)
                    continue
                wake_at = self._held[0].since + self._hold if self._free == 0 else math.inf
                with trio.move_on_at(wake_at):
                    await self._wake.park()
        finally:
            self._close_waiting()

    def _next(self) -> tuple[trio.SocketStream, float]:
        address, line = next(iter(self._lines.items()))
        del self._lines[address]
        waiting = line.popleft()
        if line:
            self._lines[address] = line  # to the end of the turn order
        self._waiting -= 1
        self._room.unpark_all()
        return waiting

    def _close_waiting(self) -> None:
        """A stopping server refuses the connections it has not started, as it refuses those in the backlog."""
        for line in self._lines.values():
            for stream, _ in line:
                stream.socket.close()
        self._lines.clear()
        self._waiting = 0

    def _released(self) -> None:
        self._free += 1
        self._wake.unpark()

    def _expire(self, now: float) -> None:
        held = self._held
        while held and (not held[0].held or held[0].since + self._hold <= now):
            held.popleft().release()


def client_key(stream: trio.SocketStream) -> str:
    """The line a connection waits in: its IPv4 address, or its IPv6 /64 (one host's usual share)."""
    try:
        host = str(stream.socket.getpeername()[0])
    except OSError:  # the client is already gone
        return ""
    if ":" not in host:
        return host
    address = ipaddress.IPv6Address(host.partition("%")[0])
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, 64), strict=False))


def reached_app() -> None:
    """The current connection's request is in the app: its head arrived, its intake place is free."""
    place = _arriving.get()
    if place is not None and place.head.deadline != math.inf:
        place.release()
        place.head.deadline = math.inf


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

    __slots__ = ("_complete", "_receive", "_reusable", "_send", "_waiter")

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
    config.accesslog = None  # 13 % of the hot path (bench/README.md); requests are counted in /metrics instead
    config.graceful_timeout = settings.shutdown_grace_seconds
    config.keep_alive_timeout = settings.keep_alive_timeout_seconds
    config.include_server_header = False
    config.backlog = LISTEN_BACKLOG
    return config


async def serve(
    app: Any,
    config: hypercorn.config.Config,
    *,
    intake: Intake,
    shutdown_trigger: Callable[[], Awaitable[object]],
    sockets: hypercorn.config.Sockets | None = None,
    inline: Callable[[Any], bool] | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the ASGI ``app`` until ``shutdown_trigger`` returns; ``task_status.started(urls)`` once listening.

    ``sockets``: already bound by the caller (the box binds before it opens the store), else bound here.
    ``inline``: the requests ``app`` serves without waiting for a disconnect, run in their connection's
    task when their body comes whole (connection.py's ``AppTaskGroup``: one scheduling round less).

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
        _arriving.set(place)  # the tasks hypercorn spawns for its requests copy this task's context
        try:
            with place.head:
                await Connection(entered, config, context, state, stream, inline)
        finally:
            place.release()
            with trio.CancelScope(shield=True):  # a cancellation (the head deadline) cuts hypercorn's own close
                await stream.aclose()

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
                    nursery.start_soon(intake.dispatch,
                                       lambda stream, place: server_nursery.start_soon(connection, stream, place))
                    for listener in listeners:
                        nursery.start_soon(_accept, listener, intake)
            except BaseExceptionGroup as error:
                _, other_errors = error.split((ShutdownError, KeyboardInterrupt))
                if other_errors is not None:
                    # The subgroup keeps its own tracebacks; chaining it to the group it came from prints them twice.
                    raise other_errors from None
            finally:
                with trio.CancelScope(shield=True):
                    for listener in listeners:
                        await listener.aclose()
                await context.terminated.set()
                server_nursery.cancel_scope.deadline = trio.current_time() + config.graceful_timeout

        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()


async def _accept(listener: trio.SocketListener, intake: Intake) -> None:
    """One listener's accept loop: accepted connections queue in the intake while it has room."""
    while True:
        await intake.room()
        try:
            stream = await listener.accept()
        except OSError as exc:
            if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                raise
            log.error("accept failed (%s); retrying in %.1fs", errno.errorcode.get(exc.errno or 0, exc), _ACCEPT_RETRY)
            await trio.sleep(_ACCEPT_RETRY)
            continue
        if not intake.arrive(stream):  # its address fills its share of the queue already
            stream.socket.close()
