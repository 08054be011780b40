"""One client connection: hypercorn's ``TCPServer`` with fewer scheduling rounds per request.

The box is one trio loop, and under load every yield to the scheduler queues the
task behind every other runnable one (bench/README.md, "Third round"). Per
request on a kept-alive connection, hypercorn's ``TCPServer`` and a constant app
took 21 task steps (the client's included; counted in
tests/api/test_client_connection.py), and most of them were yields nothing needed:

- it receives through the trio stream, which yields after every successful read;
- it writes the response's head, its body and the empty end of a
  Content-Length body in three ``send_all``\\s, each behind ``send_lock``, and
  each of the two (the lock and the send) yields even when nothing waits;
- it cancels its keep-alive timer task when a request arrives and starts a new
  one through ``nursery.start`` when the response is done, behind a lock of
  its own;
- it hands the request's body, its end and the disconnect to the app through a
  trio memory channel, whose ``send`` and ``receive`` yield even when they need
  not wait.

:class:`Connection` reads and writes the socket's descriptor directly and waits
through trio only when the socket would block, drops empty writes, keeps one
timer task per connection whose deadline it moves, and queues the app's events
in an :class:`AppQueue`: 5 task steps per request. A request the app says it
serves without waiting for a disconnect (``inline``: the heartbeat) runs in the
connection's own task when its body came with its head, one round sooner and
without a task of its own (:class:`AppTaskGroup`). Measured with
bench/a2a_proxy.py (interleaved, "Fourth round" in bench/README.md), the proxy
went from 0.64 to 0.95 of the ceiling. What a request can observe is
unchanged: the same bytes in the same order, the same timeouts (the waits are
trio's, so deadlines and cancellation work as before), the same close on a
broken pipe. Everything else stays hypercorn's; :func:`molecule_box.api.server.serve`
builds one per accepted connection. Written against hypercorn 0.18's
``hypercorn/trio/tcp_server.py`` (the pin in pyproject.toml says why that matters).
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.protocol import ProtocolWrapper
from hypercorn.trio.task_group import TaskGroup, _handle
from hypercorn.trio.tcp_server import MAX_RECV, TCPServer
from hypercorn.typing import ConnectionState
from hypercorn.utils import parse_socket_addr

#: A write at most this large goes straight to the socket when nothing else is writing. Larger ones (a
#: download's chunks) take trio's ``send_all``, which yields, so a fast reader cannot keep the loop busy.
DIRECT_WRITE_MAX = 64 * 1024


class Connection(TCPServer):
    """hypercorn's connection handler, reading and writing a plain TCP socket without needless yields."""

    def __init__(self, app: Any, config: Any, context: Any, state: Any, stream: trio.SocketStream,
                 inline: Callable[[Any], bool] | None = None) -> None:
        super().__init__(app, config, context, state, stream)  # type: ignore[arg-type]  # it is typed for TLS only
        self._apps = AppTaskGroup(inline)
        self.socket = stream.socket
        self.keep_alive = KeepAlive(self)  # in place of TCPServer's idle_task, which nothing here uses

    async def run(self) -> None:
        """hypercorn's ``TCPServer.run`` for plain TCP (the box serves no TLS), with :class:`AppTaskGroup`."""
        socket = self.socket
        try:
            client = parse_socket_addr(socket.family, socket.getpeername())
            server = parse_socket_addr(socket.family, socket.getsockname())
            async with self._apps as task_group:
                self.protocol = ProtocolWrapper(
                    self.app, self.config, self.context, task_group, ConnectionState(self.state), False,
                    client, server, self.protocol_send, "http/1.1")
                await self.protocol.initiate()
                self.keep_alive.start(task_group)
                await self._read_data()
        except OSError:
            pass
        finally:
            await self._close()

    async def protocol_send(self, event: Event) -> None:
        if isinstance(event, RawData):
            await self._write(event.data)
        elif isinstance(event, Updated):
            if event.idle:
                self.keep_alive.idle()
            else:
                self.keep_alive.busy()
        else:
            await super().protocol_send(event)

    async def _write(self, data: bytes) -> None:
        """``data`` to the client, in order after any other task's write; on a broken pipe, hypercorn's close."""
        if not data:  # h11 frames the end of a Content-Length body as nothing at all
            return
        view = memoryview(data)
        if not self.send_lock.locked() and len(data) <= DIRECT_WRITE_MAX:
            fd = self.socket.fileno()
            if fd < 0:  # closed by another task (the keep-alive timer, a shutdown)
                await self.protocol.handle(Closed())
                return
            try:
                view = view[os.write(fd, view):]
            except BlockingIOError:
                pass
            except OSError:  # the client has gone (trio's send_all makes every OSError a broken stream too)
                await self.protocol.handle(Closed())
                return
            if not view:
                return
        # The rest after whatever another task is writing. Shielded from the lock on (hypercorn shields the
        # send only): part of this message may be on the wire already, and a cancelled writer must not leave
        # the client half of it.
        with trio.CancelScope(shield=True):
            async with self.send_lock:
                try:
                    await self.stream.send_all(view)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    await self.protocol.handle(Closed())

    async def _read_data(self) -> None:
        timeout = self.config.read_timeout
        try:
            while True:
                try:
                    if timeout:
                        with trio.fail_after(timeout):
                            data = await self._receive()
                    else:
                        data = await self._receive()
                except (trio.ClosedResourceError, trio.BrokenResourceError, trio.TooSlowError):
                    break
                await self.protocol.handle(RawData(data))
                self._apps.start_waiting()
                if not data:
                    break
            await self.protocol.handle(Closed())
        finally:
            self.keep_alive.cancel()  # the timer has no connection left to close

    async def _receive(self) -> bytes:
        """The next bytes from the client (b"" at its end of stream), waiting through trio only when none are there.

        A read that finds bytes does not yield: the request they carry is handed to a new task for the app,
        and the loop comes back here and waits. A cancellation or deadline is still delivered."""
        socket = self.socket
        while True:
            fd = socket.fileno()
            if fd < 0:
                raise trio.ClosedResourceError
            try:
                data = os.read(fd, MAX_RECV)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(socket)
                continue
            except OSError as exc:  # a reset: a broken stream, as trio's receive_some would say
                raise trio.BrokenResourceError from exc
            await trio.lowlevel.checkpoint_if_cancelled()
            return data


class KeepAlive:
    """hypercorn's keep-alive timer as one task per connection, whose deadline moves.

    hypercorn's ``TrioSingleTask`` cancels the timer task when a request arrives and starts a new one
    through ``nursery.start`` when its response is done, each behind a lock. Here the one task waits
    in a cancel scope that is given a deadline when the connection turns idle and none when a request
    arrives. It closes the connection, as hypercorn's does, when the deadline passes or the server
    stops while the connection is idle; during a request a stopping server lets hypercorn close the
    connection after its response."""

    def __init__(self, server: Connection) -> None:
        self._server = server
        self._scope = trio.CancelScope()
        self._idle = False
        self._done = False

    def start(self, task_group: TaskGroup) -> None:
        """The connection is open and idle: the timer runs in its task group from now on."""
        self.idle()
        task_group.spawn(self._run)

    def idle(self) -> None:
        self._idle = True
        now = trio.current_time()
        stopping = self._server.context.terminated.is_set()
        self._scope.deadline = now if stopping else now + self._server.config.keep_alive_timeout

    def busy(self) -> None:
        self._idle = False
        self._scope.deadline = math.inf

    def cancel(self) -> None:
        """The connection's reads are over: it is closing, and the timer must not hold its task group open."""
        self._done = True
        self._scope.cancel()

    async def _run(self) -> None:
        with self._scope:
            await self._server.context.terminated.wait()
            if not self._idle:  # hypercorn closes it after the response; or the next idle() ends this at once
                await trio.sleep_forever()
        if self._done:
            return
        with trio.CancelScope(shield=True):
            await self._server._initiate_server_close()


class AppTaskGroup(TaskGroup):
    """hypercorn's task group of one connection; the request's events go to the app through an :class:`AppQueue`.

    A request for which ``inline(scope)`` is true is served by the connection's own task when its body
    arrives whole in the read that began it: the app runs from inside the put of the body's end, so it
    starts in the same scheduling round as the read instead of the next one (and no task is spawned). A
    heartbeat is one round shorter (tests/api/test_heartbeat_rounds.py). Such an app must not wait for
    anything only the connection's reads bring (a disconnect): while it runs, nothing reads. A body
    still incomplete when that read has been handled goes to a task of its own, as every other request
    does, so a slow body meets the app's own deadline."""

    def __init__(self, inline: Callable[[Any], bool] | None = None) -> None:
        super().__init__()
        self._inline = inline
        #: Inline candidates whose body has not ended yet; started as tasks by :meth:`start_waiting`.
        self._waiting: list[AppQueue] = []

    async def spawn_app(self, app: Any, config: Any, scope: Any,
                        send: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
        queue = AppQueue(config.max_app_queue_size)
        assert self._nursery is not None
        call = partial(_handle, app, config, scope, queue.receive, send, trio.to_thread.run_sync,
                       trio.from_thread.run)
        if self._inline is not None and self._inline(scope):
            queue.run_inline(call, self._nursery)
            self._waiting.append(queue)
        else:
            self._nursery.start_soon(call, name=_handle)
        return queue.put

    def start_waiting(self) -> None:
        """The read that began these requests is handled: an app that did not run inline gets its task."""
        if self._waiting:
            for queue in self._waiting:
                queue.start()
            self._waiting.clear()


class AppQueue:
    """The request's events on their way to the app: what hypercorn's memory channel does, without its yields.

    A trio channel's ``send`` and ``receive`` yield to the scheduler even when they need not wait; a request
    passes three events (its body, its end, the disconnect). Here a put waits only while ``limit`` events
    are queued, and a receive only while none is; both still deliver a cancellation. For an app to be run
    inline (:class:`AppTaskGroup`), the put that completes the request runs it."""

    __slots__ = ("_app", "_events", "_inline", "_limit", "_nursery", "_putters", "_receivers")

    def __init__(self, limit: int) -> None:
        self._events: deque[Any] = deque()
        self._limit = max(1, limit)
        self._putters = trio.lowlevel.ParkingLot()
        self._receivers = trio.lowlevel.ParkingLot()
        #: The app, not started yet: run by the put that completes its request, or started as a task.
        self._app: Callable[[], Awaitable[None]] | None = None
        self._nursery: trio.Nursery | None = None
        self._inline = False  # the app runs in the putter's task: a receive can never be answered by waiting

    def run_inline(self, app: Callable[[], Awaitable[None]], nursery: trio.Nursery) -> None:
        self._app = app
        self._nursery = nursery

    def start(self) -> None:
        """The app as a task of its own, unless it has already run (or started)."""
        app, self._app = self._app, None
        if app is not None:
            assert self._nursery is not None
            self._nursery.start_soon(app, name=_handle)

    async def put(self, event: Any) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._app is not None:
            if event["type"] == "http.disconnect" or not event.get("more_body", False):
                app, self._app = self._app, None
                self._events.append(event)
                self._inline = True
                try:
                    await app()
                finally:
                    self._inline = False
                return
            if len(self._events) + 1 >= self._limit:  # a body in many pieces: it must not wait on itself
                self.start()
        while len(self._events) >= self._limit:
            await self._putters.park()
        self._events.append(event)
        self._receivers.unpark()

    async def receive(self) -> Any:
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self._events:
            if self._inline:
                raise RuntimeError("an app run inline waited for an event only its connection's reads can bring")
            await self._receivers.park()
        self._putters.unpark()
        return self._events.popleft()
