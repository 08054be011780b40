"""The forwarding client: per-agent keep-alive pools of trio streams, HTTP/1.1 framed by hand or by h11.

Why not httpx here: on the A2A hot path httpx caps the proxy at about 0.3 of
the server's ceiling whatever its pool size (its pool does bookkeeping over
every connection on each request), while a LIFO pool of trio streams with h11
reaches 0.7-0.8, and parsing only what is needed 0.83 (bench/README.md, "What this stack reaches").
So the request is written by hand (head and body in one send) and a reply
with a Content-Length is framed here; anything else (chunked, close-delimited,
1xx, 204/304, an unusual head) is handed to h11 from its first byte. httpx
stays the client everywhere else. Each agent gets its own pool, so one slow
agent never serialises calls to another.

Responses are streamed: the caller iterates body chunks as they arrive (SSE
and chunked replies pass through unbuffered). A request on a reused
connection that fails before any response byte arrives is retried once on a
fresh connection (the keep-alive race); nothing else is retried here.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import h11
import trio

MAX_IDLE_PER_AGENT = 64
IDLE_EVICT_SECONDS = 60.0
CONNECT_TIMEOUT = 10.0
#: How long post() waits for an answer before calling ``waiting`` (see post()).
QUICK_ANSWER = 0.005
READ_CHUNK = 65536
#: Linux's TCP_QUICKACK (None elsewhere): see _Conn.received.
QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


class UpstreamError(Exception):
    """Forwarding failed; ``kind`` tells the proxy how to answer (queue, 502, 504)."""

    def __init__(self, kind: str, detail: str, *, response_started: bool = False) -> None:
        self.kind = kind  # "refused", "tls", "reset", "timeout", "protocol"
        self.detail = detail
        self.response_started = response_started
        super().__init__(f"{kind}: {detail}")


_TARGET_OK = re.compile(rb"[\x21-\x7e]+")  # a request target h11 accepts: visible ASCII, no spaces
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")  # a header name
_MAX_HEAD = 64 * 1024


@dataclass(eq=False)
class _Conn:
    stream: trio.abc.Stream
    #: Bytes read but not consumed yet (the fast path reads the head, and maybe some body, in one go).
    buf: bytearray = field(default_factory=bytearray)
    #: Set only while a response is parsed by h11 (chunked or close-delimited replies).
    h11: h11.Connection | None = None
    idle_since: float = 0.0
    reusable: bool = False
    #: The TCP socket under the stream (under TLS too), for the ACK after each read.
    sock: trio.socket.SocketType | None = None
    #: The plain-TCP socket's descriptor, read and written directly (see :meth:`receive`); None under TLS.
    fd: int | None = None

    async def receive(self) -> bytes | bytearray:
        """The next bytes from the agent (b"" at its end of stream).

        On plain TCP this reads the descriptor directly and waits for it only when nothing is there: a
        trio stream yields to the scheduler after every successful send and receive, and under load each
        such yield queues the call behind every other runnable task (bench/README.md, "Third round": the
        proxy's CPU per request fell by a tenth with the send and the receive done this way). The waits
        are trio's, so deadlines and cancellation work as before, and so does a close from another task
        (``close_now`` closes the socket, which wakes the wait with ClosedResourceError)."""
        fd = self.fd
        if fd is None:
            return await self.stream.receive_some(READ_CHUNK)
        while True:
            try:
                return os.read(fd, READ_CHUNK)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(fd)

    async def send(self, data: bytes) -> None:
        """All of ``data`` to the agent; on plain TCP straight to the descriptor, as :meth:`receive` reads."""
        fd = self.fd
        if fd is None:
            await self.stream.send_all(data)
            return
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(fd, view):]
            except BlockingIOError:
                await trio.lowlevel.wait_writable(fd)

    async def fill(self, *, ack: bool = True) -> bool:
        """Read more into ``buf``; ``ack=False``: the caller decides whether to :meth:`received` (see there)."""
        data = await self.receive()
        if not data:
            return False
        if ack:
            self.received()
        self.buf += data
        return True

    def received(self) -> None:
        """Acknowledge what was just read at once instead of after the delayed-ACK timer (up to 40 ms).

        An agent whose server writes a response's head and body in two writes without TCP_NODELAY (Python's
        http.server does) holds the body back under Nagle's rule until its head is acknowledged. On a kept-alive
        connection Linux delays that ACK, so every such reply took about 44 ms through the pool against 0.6 ms
        on a fresh connection. TCP_QUICKACK is not sticky: the kernel may go back to delaying, so it is set
        again after every read that leaves the reply incomplete (one setsockopt). A read that brought the whole
        reply needs none: nothing more is held back, and the next request carries the ACK."""
        if self.sock is not None and QUICKACK is not None:
            try:
                self.sock.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)
            except OSError:  # the socket is already closed: the read that follows tells the caller
                self.sock = None

    async def next_event(self) -> Any:
        assert self.h11 is not None
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                data = await self.receive()
                self.received()
                self.h11.receive_data(data)  # type: ignore[arg-type]  # a bytearray is fine for h11; copying it is not
                continue
            return event

    async def close(self) -> None:
        self.close_now()
        await trio.lowlevel.checkpoint()

    def close_now(self) -> None:
        """Close the socket synchronously (no TLS close_notify): used for idle and failed connections."""
        self.reusable = False
        self.fd = None  # its number may be reused at once: from here on the (closed) stream answers
        stream = self.stream
        while isinstance(stream, trio.SSLStream):
            stream = stream.transport_stream
        if isinstance(stream, trio.SocketStream):
            stream.socket.close()


def _parse_head(head: bytes) -> tuple[int, list[tuple[bytes, bytes]], bool] | None:
    """(status, headers with lower-case names, HTTP/1.1) of a plain response head (without its final
    CRLFCRLF); None for anything unusual (obs-fold, odd spacing, other versions), which h11 then parses."""
    lines = head.split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    if version not in (b"HTTP/1.1", b"HTTP/1.0") or len(rest) < 3 or not rest[:3].isdigit():
        return None
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or not _TOKEN.fullmatch(name):
            return None
        headers.append((name.lower(), value.strip(b" \t")))
    return int(rest[:3]), headers, version == b"HTTP/1.1"


@dataclass
class UpstreamResponse:
    status: int
    headers: list[tuple[bytes, bytes]]
    _conn: _Conn
    _done: bool = False
    #: Body bytes still to come on the fast path (a Content-Length reply); None: h11 reads the body.
    _remaining: int | None = None
    _keep_alive: bool = True

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives."""
        if self._remaining is not None:
            conn = self._conn
            while self._remaining > 0:
                if not conn.buf:
                    try:
                        more = await conn.fill()
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                        raise UpstreamError("reset", str(exc) or type(exc).__name__,
                                            response_started=True) from None
                    if not more:
                        raise UpstreamError("reset", "agent closed the connection mid-response",
                                            response_started=True)
                take = min(len(conn.buf), self._remaining)
                chunk = bytes(conn.buf[:take])
                del conn.buf[:take]
                self._remaining -= take
                yield chunk
            self._body_ended()
            return
        while not self._done:
            try:
                event = await self._conn.next_event()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, h11.RemoteProtocolError) as exc:
                raise UpstreamError("reset", str(exc) or type(exc).__name__, response_started=True) from None
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self._done = True
                state = self._conn.h11
                self._conn.reusable = state is not None and state.our_state is h11.DONE and \
                    state.their_state is h11.DONE and not state.trailing_data[0]
            elif isinstance(event, h11.ConnectionClosed):
                raise UpstreamError("reset", "agent closed the connection mid-response", response_started=True)

    def _body_ended(self) -> None:
        """A Content-Length body read whole: the connection may be kept, unless bytes came past the body."""
        self._done = True
        self._conn.reusable = self._keep_alive and not self._conn.buf

    async def read(self, limit: int) -> bytes:
        remaining = self._remaining
        if remaining is not None and not self._done and len(self._conn.buf) >= remaining:
            # The whole body came with the head (the common case): taken at once, without the async generator.
            if remaining > limit:
                raise UpstreamError("protocol", f"agent response over {limit} bytes", response_started=True)
            buf = self._conn.buf
            body = bytes(buf[:remaining])
            del buf[:remaining]
            self._remaining = 0
            self._body_ended()
            return body
        out = bytearray()
        async for chunk in self.chunks():
            out += chunk
            if len(out) > limit:
                raise UpstreamError("protocol", f"agent response over {limit} bytes", response_started=True)
        return bytes(out)


class AgentPool:
    """Idle connections to one agent (scheme, address, port), reused last-in first-out."""

    def __init__(self, scheme: str, connect_host: str, port: int, server_name: str) -> None:
        self.scheme = scheme
        self.connect_host = connect_host
        self.port = port
        self.server_name = server_name
        self._idle: list[_Conn] = []
        self.opened = 0

    async def _open(self) -> _Conn:
        try:
            with trio.fail_after(CONNECT_TIMEOUT):
                tcp = await trio.open_tcp_stream(self.connect_host, self.port)
                stream: trio.abc.Stream = tcp
                if self.scheme == "https":
                    tls = trio.SSLStream(tcp, ssl.create_default_context(), server_hostname=self.server_name,
                                         https_compatible=True)
                    try:
                        await tls.do_handshake()
                    except (trio.BrokenResourceError, OSError) as exc:
                        # Not "reset" (which queues the call as if the agent were busy): an agent whose TLS
                        # fails (an untrusted or expired certificate, plain HTTP on an https URL) fails the
                        # same way on every retry, so the caller is told now.
                        tcp.socket.close()
                        raise UpstreamError("tls", f"TLS handshake with the agent failed: {exc.__cause__ or exc}"
                                            ) from None
                    stream = tls
        except trio.TooSlowError:
            raise UpstreamError("timeout", "connecting to the agent timed out") from None
        except OSError as exc:
            raise UpstreamError("refused", str(exc) or type(exc).__name__) from None
        self.opened += 1
        return _Conn(stream, sock=tcp.socket, fd=None if stream is not tcp else tcp.socket.fileno())

    def _take_idle(self) -> _Conn | None:
        now = trio.current_time()
        while self._idle:
            conn = self._idle.pop()
            if now - conn.idle_since < IDLE_EVICT_SECONDS:
                return conn
            conn.close_now()  # evicted after sitting idle too long
        return None

    def _release(self, conn: _Conn) -> None:
        if conn.reusable and len(self._idle) < MAX_IDLE_PER_AGENT:
            conn.h11 = None
            conn.reusable = False
            conn.idle_since = trio.current_time()
            self._idle.append(conn)
            return
        conn.close_now()

    async def _head(self, conn: _Conn, request: Callable[[], h11.Request], body: bytes,
                    waiting: Callable[[], None] | None) -> UpstreamResponse:
        """Read the response head. A Content-Length reply is framed here (the common case, no h11);
        chunked, close-delimited and 1xx replies are handed to h11, which is fed what was read so far.

        ``waiting`` is called once the agent has not answered within QUICK_ANSWER (receiving is cancel-safe)."""
        end = conn.buf.find(b"\r\n\r\n")
        while end < 0:
            if len(conn.buf) > _MAX_HEAD:
                raise h11.RemoteProtocolError("response head too large")
            filled: bool | None = None
            if waiting is not None:
                with trio.move_on_after(QUICK_ANSWER):
                    filled = await conn.fill(ack=False)
                if filled is None:
                    waiting()
                    waiting = None
            if filled is None:
                filled = await conn.fill(ack=False)
            if not filled:
                raise trio.BrokenResourceError("agent closed the connection")
            end = conn.buf.find(b"\r\n\r\n")
            if end < 0:
                conn.received()  # the head is not complete: its rest may wait for our ACK
        parsed = _parse_head(bytes(conn.buf[:end]))
        status, headers, http11 = parsed or (0, [], False)
        lengths = [v for k, v in headers if k == b"content-length"]
        chunked = any(k == b"transfer-encoding" for k, _ in headers)
        if 200 <= status and status not in (204, 304) and not chunked and len(lengths) == 1 and \
                lengths[0].isdigit():
            del conn.buf[:end + 4]
            keep_alive = http11 and not any(k == b"connection" and b"close" in v.lower() for k, v in headers)
            remaining = int(lengths[0])
            if remaining > len(conn.buf):
                conn.received()  # the body's rest may wait for our ACK (a head and body written apart)
            return UpstreamResponse(status, headers, conn, _remaining=remaining, _keep_alive=keep_alive,
                                    _done=False)
        conn.received()  # the general case: no telling what is still to come
        # The general case: let h11 parse this reply from the start.
        conn.h11 = state = h11.Connection(h11.CLIENT)
        state.send(request())
        state.send(h11.Data(data=body))
        state.send(h11.EndOfMessage())
        state.receive_data(bytes(conn.buf))
        conn.buf.clear()
        event = await conn.next_event()
        while isinstance(event, h11.InformationalResponse):
            event = await conn.next_event()
        if isinstance(event, h11.ConnectionClosed):
            raise trio.BrokenResourceError("agent closed the connection")
        return UpstreamResponse(event.status_code, list(event.headers), conn)

    @asynccontextmanager
    async def post(self, path: str, headers: list[tuple[bytes, bytes]], body: bytes,
                   waiting: Callable[[], None] | None = None) -> AsyncIterator[UpstreamResponse]:
        """Send ``body``; yield the response once its head arrived. The body is read through ``chunks()``.

        ``waiting`` is called before a wait on the network: a new connection, or an answer that did not come
        within QUICK_ANSWER (a fast agent's answer is awaited in place): the proxy's admission control leaves
        its work slot there."""
        host = (self.server_name if self.port in (80, 443) else f"{self.server_name}:{self.port}").encode()
        target = (path or "/").encode()
        all_headers = [(b"host", host), (b"content-length", str(len(body)).encode()), *headers]

        def request() -> h11.Request:
            return h11.Request(method="POST", target=target, headers=all_headers)

        if not _TARGET_OK.fullmatch(target):
            request()  # h11 says what is wrong with it (LocalProtocolError)
        # The request bytes by hand, head and body in one send: the target is checked above, and the
        # forwarded headers were parsed (and validated) by our own HTTP server on the way in.
        data = b"".join([b"POST ", target, b" HTTP/1.1\r\n", *(b"%s: %s\r\n" % kv for kv in all_headers),
                         b"\r\n", body])
        conn = self._take_idle()
        reused = conn is not None
        for attempt in (0, 1):
            if conn is None:
                if waiting is not None:
                    waiting()
                conn = await self._open()
            try:
                await conn.send(data)
                response = await self._head(conn, request, body, waiting)
                break
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, h11.RemoteProtocolError,
                    h11.LocalProtocolError) as exc:
                conn.close_now()
                conn = None
                if reused and attempt == 0:
                    reused = False
                    continue  # a keep-alive connection the agent had already closed: retry once, fresh
                raise UpstreamError("reset", str(exc) or type(exc).__name__) from None
            except BaseException:  # cancelled (a deadline) mid-request: the connection is in an unknown state
                conn.close_now()
                raise
        assert conn is not None
        try:
            yield response
        except BaseException:
            conn.close_now()
            raise
        if response._done:
            self._release(conn)
        else:
            conn.close_now()

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close_now()


class Pools:
    """One :class:`AgentPool` per agent address."""

    def __init__(self) -> None:
        self._pools: dict[tuple[str, str, int, str], AgentPool] = {}

    def get(self, scheme: str, connect_host: str, port: int, server_name: str) -> AgentPool:
        key = (scheme, connect_host, port, server_name)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = AgentPool(scheme, connect_host, port, server_name)
        return pool

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
