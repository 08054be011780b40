"""Event streams as an attacker with one agent token sees them (issue #10, items 5 and 7): what a workspace's
/ws carries of other workspaces, streams ended by revocation, deletion and rotation, the caps on open
streams, and a client that stops reading."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import trio
import wsproto
import wsproto.events as we
from trio_websocket import WebSocketConnection, open_websocket_url

from molecule_box.backends import Capabilities, Workload, WorkloadSpec
from molecule_box.box import Box

from ..actors.stubs import LifecycleStub
from ..conftest import ADMIN, ADMIN_TOKEN, BoxRunner, bearer, joined

#: The issue's bound: a revoked token's streams are closed within a second.
CLOSE_WITHIN = 1.0


def ws_url(box: Box) -> str:
    return box.urls[0].replace("http://", "ws://") + "/ws"


def as_workspace(wid: str, token: str) -> list[tuple[bytes, bytes]]:
    return [(b"X-Workspace-ID", wid.encode()), (b"Authorization", f"Bearer {token}".encode())]


AS_ADMIN = [(b"Authorization", f"Bearer {ADMIN_TOKEN}".encode())]


async def metric(client: httpx.AsyncClient, name: str) -> float:
    for line in (await client.get("/metrics")).text.splitlines():
        if line.startswith(f"molecule_box_{name} "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


async def frames_until(ws: WebSocketConnection, done: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    with trio.fail_after(10):
        while not frames or not done(frames[-1]):
            frames.append(json.loads(await ws.get_message()))
    return frames


class RawWebSocket:
    """A wsproto client on a plain trio socket. trio-websocket 0.12 never closes its socket when the server
    closes first or refuses the handshake, and these tests also need a client that stops reading."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        self.messages = 0

    async def handshake(self, headers: list[tuple[bytes, bytes]]) -> we.Event:
        """The box's answer: AcceptConnection, or RejectConnection with its status and headers."""
        await self.stream.send_all(self.ws.send(we.Request(host="localhost", target="/ws",
                                                           extra_headers=headers)))
        with trio.fail_after(5):
            while True:
                self.ws.receive_data(await self.stream.receive_some(4096))
                for event in self.ws.events():
                    if isinstance(event, (we.AcceptConnection, we.RejectConnection)):
                        return event

    async def closed(self) -> tuple[int, str]:
        """Read to the box's close frame (counting the messages before it): its code and reason."""
        while True:
            data = await self.stream.receive_some(65536)
            assert data, "connection ended without a close frame"
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, we.TextMessage) and event.message_finished:
                    self.messages += 1
                elif isinstance(event, we.CloseConnection):
                    return event.code, event.reason


@asynccontextmanager
async def raw_ws(box: Box, headers: list[tuple[bytes, bytes]], *,
                 receive_buffer: int | None = None) -> AsyncIterator[tuple[RawWebSocket, we.Event]]:
    """A raw WebSocket client and the box's answer to its handshake; ``receive_buffer`` shrinks its TCP
    window, so the box's writes block once a few KB are unread."""
    async with await connect(box, receive_buffer) as stream:
        client = RawWebSocket(stream)
        yield client, await client.handshake(headers)


async def connect(box: Box, receive_buffer: int | None = None) -> trio.SocketStream:
    host, port = box.urls[0].removeprefix("http://").rsplit(":", 1)
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    await sock.connect((host, int(port)))
    return trio.SocketStream(sock)


async def refused(box: Box, headers: list[tuple[bytes, bytes]]) -> tuple[int, dict[bytes, bytes]]:
    async with raw_ws(box, headers) as (_, answer):
        assert isinstance(answer, we.RejectConnection), answer
        return answer.status_code, dict(answer.headers)


class SSE:
    """An SSE client (httpx) reading in the background: its lines, and whether the box ended the stream."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.started = trio.Event()
        self.ended = trio.Event()

    async def read(self, client: httpx.AsyncClient, path: str, token: str) -> None:
        async with client.stream("GET", path, headers=bearer(token), timeout=None) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                self.lines.append(line)
                if line == ": ping":
                    self.started.set()
        self.ended.set()


@asynccontextmanager
async def sse(client: httpx.AsyncClient, path: str, token: str) -> AsyncIterator[SSE]:
    reader = SSE()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader.read, client, path, token)
        with trio.fail_after(5):
            await reader.started.wait()
        yield reader
        nursery.cancel_scope.cancel()


# -- item 5: what a workspace's /ws carries --------------------------------------------------------------


async def test_workspace_ws_carries_no_conversation_it_is_not_part_of(box: Box, client: httpx.AsyncClient) -> None:
    me, my_tok = await joined(client, "me")
    peer, peer_tok = await joined(client, "peer")  # roots: each may talk to the other
    third, _ = await joined(client, "third")
    async with open_websocket_url(ws_url(box), extra_headers=as_workspace(me, my_tok)) as ws:
        as_peer = bearer(peer_tok)
        # The peer's own conversations, task and errors: none of it is mine to read.
        await client.post(f"/workspaces/{peer}/notify", json={"message": "peer-notify-secret"}, headers=as_peer)
        await client.post(f"/workspaces/{peer}/delegate", json={"task": "peer-to-third-task", "target_id": third},
                          headers=as_peer)
        await client.post(f"/workspaces/{peer}/activity", json={
            "activity_type": "a2a_send", "target_id": third, "summary": "peer-to-third-summary"}, headers=as_peer)
        await client.post("/registry/heartbeat", json={
            "workspace_id": peer, "current_task": "peer-task-secret", "error_rate": 0.9,
            "sample_error": "peer-sample-error"}, headers=as_peer)
        # Its lifecycle and the conversations I am a party to: those I see.
        await client.post("/registry/update-card", json={"workspace_id": peer, "agent_card": {"name": "peer-2"}},
                          headers=as_peer)
        await client.post(f"/workspaces/{peer}/delegate", json={"task": "peer-to-me-task", "target_id": me},
                          headers=as_peer)
        await client.post(f"/workspaces/{peer}/activity", json={
            "activity_type": "a2a_send", "target_id": me, "summary": "peer-to-me-summary"}, headers=as_peer)
        await client.post(f"/workspaces/{me}/notify", json={"message": "sentinel"}, headers=bearer(my_tok))
        frames = await frames_until(ws, lambda f: f["payload"].get("message") == "sentinel")
    text = json.dumps(frames)
    for secret in ("peer-notify-secret", "peer-to-third", "peer-task-secret", "peer-sample-error"):
        assert secret not in text
    of_peer = {(f["event"], json.dumps(f["payload"], sort_keys=True)) for f in frames if f["workspace_id"] == peer}
    assert ("WORKSPACE_DEGRADED", "{}") in of_peer  # the status, not its error text
    assert ("AGENT_CARD_UPDATED", json.dumps({"agent_card": {"name": "peer-2"}})) in of_peer
    kinds = {kind for kind, _ in of_peer}
    assert kinds <= {"WORKSPACE_DEGRADED", "AGENT_CARD_UPDATED", "DELEGATION_SENT", "DELEGATION_FAILED",
                     "ACTIVITY_LOGGED"}
    assert "peer-to-me-task" in text and "peer-to-me-summary" in text
    assert not [f for f in frames if f["workspace_id"] == third]


# -- item 5: revocation, deletion and rotation end a token's streams ------------------------------------


async def test_revoking_a_token_closes_the_streams_it_opened(box: Box, client: httpx.AsyncClient) -> None:
    wid, first = await joined(client, "revoked")
    minted = (await client.post(f"/workspaces/{wid}/tokens", headers=bearer(first))).json()
    second, second_id = minted["auth_token"], minted["id"]
    async with raw_ws(box, as_workspace(wid, second)) as (doomed, _), \
            open_websocket_url(ws_url(box), extra_headers=as_workspace(wid, first)) as kept, \
            sse(client, f"/workspaces/{wid}/events/stream", second) as doomed_sse:
        response = await client.delete(f"/workspaces/{wid}/tokens/{second_id}", headers=bearer(first))
        assert response.status_code == 200
        with trio.fail_after(CLOSE_WITHIN):
            assert await doomed.closed() == (1008, "token revoked")
            await doomed_sse.ended.wait()
        assert doomed_sse.lines[-3:-1] == ["event: closed", 'data: {"reason": "token revoked"}']
        # The workspace's other token keeps its stream.
        await client.post("/registry/heartbeat", json={"workspace_id": wid}, headers=bearer(first))
        frames = await frames_until(kept, lambda f: f["event"] == "WORKSPACE_HEARTBEAT")
        assert frames[-1]["workspace_id"] == wid


async def test_deleting_a_workspace_closes_its_streams(box: Box, client: httpx.AsyncClient) -> None:
    wid, token = await joined(client, "deleted")
    async with raw_ws(box, as_workspace(wid, token)) as (ws, _), \
            sse(client, f"/workspaces/{wid}/events/stream", token) as stream:
        assert (await client.delete(f"/workspaces/{wid}", headers=ADMIN)).status_code == 200
        with trio.fail_after(CLOSE_WITHIN):
            assert await ws.closed() == (1008, "workspace removed")
            await stream.ended.wait()
        assert 'data: {"reason": "workspace removed"}' in stream.lines


async def test_rotating_tokens_closes_the_old_tokens_streams(runner: BoxRunner) -> None:
    handed: list[str] = []

    class Rotating(LifecycleStub):
        """A lifecycle backend that hands each workload a fresh token, as the docker backend does."""

        def capabilities(self) -> Capabilities:
            return Capabilities(lifecycle=True, prewrites_token=True)

        async def start(self, spec: WorkloadSpec) -> Workload:
            assert spec.auth_token is not None
            handed.append(spec.auth_token)
            return Workload(handle={"workspace_id": spec.workspace_id})

    box = await runner.start(extra_backends={"rotating": Rotating})
    async with httpx.AsyncClient(base_url=runner.url, timeout=10) as client:
        created = await client.post("/workspaces", json={"name": "rotated", "backend": "rotating"}, headers=ADMIN)
        assert created.status_code == 201, created.text
        wid = created.json()["id"]
        with trio.fail_after(5):
            while not handed:
                await trio.sleep(0.01)
        async with raw_ws(box, as_workspace(wid, handed[0])) as (ws, answer):
            assert isinstance(answer, we.AcceptConnection)
            assert (await client.post(f"/workspaces/{wid}/restart", headers=ADMIN)).status_code == 200
            with trio.fail_after(CLOSE_WITHIN):
                assert await ws.closed() == (1008, "token revoked")


# -- item 7: caps on open streams ------------------------------------------------------------------------


async def test_streams_are_capped_per_token_and_in_total(runner: BoxRunner) -> None:
    box = await runner.start(MOLECULE_BOX_STREAMS_PER_TOKEN="2", MOLECULE_BOX_STREAMS_TOTAL="3")
    async with httpx.AsyncClient(base_url=runner.url, timeout=10) as client:
        wid, token = await joined(client, "greedy")
        other, other_tok = await joined(client, "other")
        extra = (await client.post(f"/workspaces/{wid}/tokens", headers=bearer(token))).json()["auth_token"]
        async with open_websocket_url(ws_url(box), extra_headers=as_workspace(wid, token)), \
                open_websocket_url(ws_url(box), extra_headers=as_workspace(wid, token)) as second:
            for attempt in (token, extra):  # a freshly minted token does not buy more
                status, headers = await refused(box, as_workspace(wid, attempt))
                assert status == 429 and headers[b"retry-after"] == b"5"
            sse_refused = await client.get(f"/workspaces/{wid}/events/stream", headers=bearer(extra))
            assert sse_refused.status_code == 429 and sse_refused.headers["retry-after"] == "5"
            async with open_websocket_url(ws_url(box), extra_headers=as_workspace(other, other_tok)):
                # The box is full: the admin counts too.
                full = await client.get("/events/stream", headers=ADMIN)
                assert full.status_code == 429 and "retry later" in full.json()["error"]
            assert await metric(client, "event_streams_refused") == 4
            await second.aclose()
            with trio.fail_after(5):  # a closed stream gives its place back
                while await metric(client, "event_streams") > 1:
                    await trio.sleep(0.01)
            async with open_websocket_url(ws_url(box), extra_headers=as_workspace(wid, extra)) as again:
                await client.post(f"/workspaces/{wid}/notify", json={"message": "hi"}, headers=bearer(token))
                assert (await frames_until(again, lambda f: True))[0]["event"] == "AGENT_MESSAGE"


# -- item 7: a client that stops reading -------------------------------------------------------------------

BIG = "x" * 60_000
PUBLISHED = 100  # 6 MB: more than a stalled connection's socket buffers (a 4 MiB send buffer at most) and its queue


async def flood_while_stalled(box: Box, client: httpx.AsyncClient, wid: str, token: str) -> None:
    """Publish many big events of ``wid`` while a subscriber does not read; another subscriber gets every
    one and a heartbeat is answered meanwhile: nobody waits for the stalled one."""
    other, other_tok = await joined(client, "bystander")
    seen: list[dict[str, Any]] = []

    async def watch(watcher: WebSocketConnection) -> None:
        seen.extend(await frames_until(watcher, lambda f: f["event"] == "WORKSPACE_HEARTBEAT"))

    async with open_websocket_url(ws_url(box), extra_headers=AS_ADMIN, max_message_size=2**20) as watcher, \
            trio.open_nursery() as nursery:
        nursery.start_soon(watch, watcher)
        for n in range(PUBLISHED):
            response = await client.post(f"/workspaces/{wid}/notify", json={"message": f"{n} {BIG}"},
                                         headers=bearer(token))
            assert response.status_code == 200
        beat = await client.post("/registry/heartbeat", json={"workspace_id": other}, headers=bearer(other_tok))
        assert beat.status_code == 200
    assert [f["payload"]["message"].split()[0] for f in seen if f["event"] == "AGENT_MESSAGE"] == [
        str(n) for n in range(PUBLISHED)]


async def test_a_websocket_client_that_stops_reading_is_dropped_with_a_reconnect_hint(runner: BoxRunner) -> None:
    box = await runner.start(MOLECULE_BOX_STREAM_BUFFER="4")
    async with httpx.AsyncClient(base_url=runner.url, timeout=10) as client:
        wid, token = await joined(client, "slow-reader")
        async with raw_ws(box, as_workspace(wid, token), receive_buffer=4096) as (slow, answer):
            assert isinstance(answer, we.AcceptConnection)
            await flood_while_stalled(box, client, wid, token)  # meanwhile this client reads nothing
            with trio.fail_after(10):
                assert await slow.closed() == (1013, "fell behind: reconnect")
        assert slow.messages < PUBLISHED
        assert await metric(client, "event_streams_fell_behind") == 1


async def test_an_sse_client_that_stops_reading_is_dropped_with_a_reconnect_hint(runner: BoxRunner) -> None:
    box = await runner.start(MOLECULE_BOX_STREAM_BUFFER="4")
    async with httpx.AsyncClient(base_url=runner.url, timeout=10) as client:
        wid, token = await joined(client, "slow-sse")
        async with await connect(box, receive_buffer=4096) as stream:
            await stream.send_all(f"GET /workspaces/{wid}/events/stream HTTP/1.1\r\nHost: localhost\r\n"
                                  f"Authorization: Bearer {token}\r\n\r\n".encode())
            received = b""
            with trio.fail_after(5):
                while b": ping" not in received:
                    received += await stream.receive_some(4096)
            await flood_while_stalled(box, client, wid, token)
            with trio.fail_after(10):
                while b"event: reconnect" not in received or not received.endswith(b"0\r\n\r\n"):
                    received += await stream.receive_some(65536)
        tail = received[received.index(b"event: reconnect"):]
        assert tail.startswith(b'event: reconnect\nretry: 1000\ndata: {"reason": "fell behind"}\n\n')
        assert received.count(b'"type": "AGENT_MESSAGE"') < PUBLISHED
        assert await metric(client, "event_streams_fell_behind") == 1
