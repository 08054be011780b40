"""The forwarding client: per-agent keep-alive pools of trio streams with h11 framing.

Why not httpx here: on the A2A hot path httpx caps the proxy at about 0.3 of
the server's ceiling whatever its pool size (its pool does bookkeeping over
every connection on each request), while a LIFO pool of trio streams with h11
reaches 0.7-0.8 (reference perf-notes). httpx stays the client everywhere
else. Each agent gets its own pool, so one slow agent never serialises calls
to another.

Responses are streamed: the caller iterates body chunks as they arrive (SSE
and chunked replies pass through unbuffered). A request on a reused
connection that fails before any response byte arrives is retried once on a
fresh connection (the keep-alive race); nothing else is retried here.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import h11
import trio

MAX_IDLE_PER_AGENT = 64
IDLE_EVICT_SECONDS = 60.0
CONNECT_TIMEOUT = 10.0
READ_CHUNK = 65536


class UpstreamError(Exception):
    """Forwarding failed; ``kind`` tells the proxy how to answer (queue, 502, 504)."""

    def __init__(self, kind: str, detail: str, *, response_started: bool = False) -> None:
        self.kind = kind  # "refused", "reset", "timeout", "protocol"
        self.detail = detail
        self.response_started = response_started
        super().__init__(f"{kind}: {detail}")


@dataclass(eq=False)
class _Conn:
    stream: trio.abc.Stream
    h11: h11.Connection = field(default_factory=lambda: h11.Connection(h11.CLIENT))
    idle_since: float = 0.0

    async def next_event(self) -> Any:
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                data = await self.stream.receive_some(READ_CHUNK)
                self.h11.receive_data(data)
                continue
            return event

    async def close(self) -> None:
        self.close_now()
        await trio.lowlevel.checkpoint()

    def close_now(self) -> None:
        """Close the socket synchronously (no TLS close_notify): used for idle and failed connections."""
        stream = self.stream
        while isinstance(stream, trio.SSLStream):
            stream = stream.transport_stream
        if isinstance(stream, trio.SocketStream):
            stream.socket.close()


@dataclass
class UpstreamResponse:
    status: int
    headers: list[tuple[bytes, bytes]]
    _conn: _Conn
    _done: bool = False

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives."""
        while not self._done:
            try:
                event = await self._conn.next_event()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, h11.RemoteProtocolError) as exc:
                raise UpstreamError("reset", str(exc) or type(exc).__name__, response_started=True) from None
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self._done = True
            elif isinstance(event, h11.ConnectionClosed):
                raise UpstreamError("reset", "agent closed the connection mid-response", response_started=True)

    async def read(self, limit: int) -> bytes:
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
                stream: trio.abc.Stream = await trio.open_tcp_stream(self.connect_host, self.port)
                if self.scheme == "https":
                    tls = trio.SSLStream(stream, ssl.create_default_context(), server_hostname=self.server_name,
                                         https_compatible=True)
                    await tls.do_handshake()
                    stream = tls
        except trio.TooSlowError:
            raise UpstreamError("timeout", "connecting to the agent timed out") from None
        except ConnectionRefusedError as exc:
            raise UpstreamError("refused", str(exc)) from None
        except OSError as exc:
            raise UpstreamError("refused", str(exc) or type(exc).__name__) from None
        except trio.BrokenResourceError as exc:
            raise UpstreamError("reset", f"TLS handshake failed: {exc}") from None
        self.opened += 1
        return _Conn(stream)

    def _take_idle(self) -> _Conn | None:
        now = trio.current_time()
        while self._idle:
            conn = self._idle.pop()
            if now - conn.idle_since < IDLE_EVICT_SECONDS:
                return conn
            conn.close_now()  # evicted after sitting idle too long
        return None

    def _release(self, conn: _Conn) -> None:
        if conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE:
            conn.h11.start_next_cycle()
            if len(self._idle) < MAX_IDLE_PER_AGENT:
                conn.idle_since = trio.current_time()
                self._idle.append(conn)
                return
        conn.close_now()

    @asynccontextmanager
    async def post(self, path: str, headers: list[tuple[bytes, bytes]], body: bytes
                   ) -> AsyncIterator[UpstreamResponse]:
        """Send ``body``; yield the response once its head arrived. The body is read through ``chunks()``."""
        host = self.server_name if self.port in (80, 443) else f"{self.server_name}:{self.port}"
        request = h11.Request(method="POST", target=path or "/", headers=[
            (b"host", host.encode()), (b"content-length", str(len(body)).encode()), *headers])
        conn = self._take_idle()
        reused = conn is not None
        for attempt in (0, 1):
            if conn is None:
                conn = await self._open()
            try:
                data = conn.h11.send(request) + conn.h11.send(h11.Data(data=body)) + conn.h11.send(h11.EndOfMessage())
                await conn.stream.send_all(data)
                event = await conn.next_event()
                while isinstance(event, h11.InformationalResponse):
                    event = await conn.next_event()
                if isinstance(event, h11.ConnectionClosed):
                    raise trio.BrokenResourceError("agent closed the connection")
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
        response = UpstreamResponse(event.status_code, list(event.headers), conn)
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
