"""Events over SSE and WebSocket, with the box's auth (no anonymous streams)."""

from __future__ import annotations

import json

import httpx
import trio
from trio_websocket import open_websocket_url

from molecule_box.box import Box

from ..conftest import ADMIN, ADMIN_TOKEN, bearer, create_external, joined


async def read_sse(box: Box, path: str, token: str, until: str, started: trio.Event) -> list[dict[str, object]]:
    """A plain socket client: what the box writes on the wire, frame by frame, as it arrives."""
    host, port = box.urls[0].removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
                              "Connection: close\r\n\r\n".encode())
        buffer, frames = "", []
        while True:
            chunk = await stream.receive_some(65536)
            assert chunk, "stream ended early"
            buffer += chunk.decode()
            if ": ping" in buffer:
                started.set()
            *lines, buffer = buffer.split("\n")
            for line in lines:
                if line.startswith("data: "):
                    frames.append(json.loads(line[6:]))
                    if frames[-1]["type"] == until:
                        return frames


async def test_sse_stream_of_one_workspace(box: Box, client: httpx.AsyncClient) -> None:
    wid, token = await joined(client, "streamer")
    other, other_tok = await joined(client, "other")
    result: list[list[dict[str, object]]] = []
    started = trio.Event()

    async def reader() -> None:
        result.append(await read_sse(box, f"/workspaces/{wid}/events/stream", token, "WORKSPACE_HEARTBEAT", started))

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await started.wait()
            await client.post("/registry/heartbeat", json={"workspace_id": other}, headers=bearer(other_tok))
            await client.post("/registry/heartbeat", json={"workspace_id": wid, "current_task": "t"},
                              headers=bearer(token))
    frames = result[0]
    assert [f["type"] for f in frames] == ["TASK_UPDATED", "WORKSPACE_HEARTBEAT"]
    assert isinstance(frames[0]["timestamp"], int) and frames[0]["data"] == {"current_task": "t", "active_tasks": 0}
    assert (await client.get(f"/workspaces/{wid}/events/stream")).status_code == 401
    assert (await client.get(f"/workspaces/{wid}/events/stream", headers=bearer(other_tok))).status_code == 401


async def test_websocket_admin_sees_everything(box: Box, client: httpx.AsyncClient) -> None:
    url = box.urls[0].replace("http://", "ws://") + "/ws"
    async with open_websocket_url(url, extra_headers=[("Authorization", f"Bearer {ADMIN_TOKEN}")]) as ws:
        created = await create_external(client, "announced")
        with trio.fail_after(5):
            frame = json.loads(await ws.get_message())
        assert frame["event"] == "WORKSPACE_AWAITING_AGENT"
        assert frame["workspace_id"] == created["id"] and frame["timestamp"].endswith("Z")


async def test_websocket_workspace_sees_only_reachable(box: Box, client: httpx.AsyncClient) -> None:
    me, my_tok = await joined(client, "me")
    child, child_tok = await joined(client, "child", parent_id=me)
    stranger, stranger_tok = await joined(client, "stranger", parent_id=child)
    cousin_root, _ = await joined(client, "cousin-root")
    url = box.urls[0].replace("http://", "ws://") + "/ws"
    headers = [("X-Workspace-ID", child), ("Authorization", f"Bearer {child_tok}")]
    async with open_websocket_url(url, extra_headers=headers) as ws:
        await client.patch(f"/workspaces/{cousin_root}", json={"name": "x"}, headers=ADMIN)  # no event
        await client.post("/registry/update-card", json={"workspace_id": me, "agent_card": {"v": 2}},
                          headers=bearer(my_tok))
        with trio.fail_after(5):
            frame = json.loads(await ws.get_message())
        assert (frame["event"], frame["workspace_id"]) == ("AGENT_CARD_UPDATED", me)
    del stranger, stranger_tok


async def test_websocket_refuses_anonymous(box: Box) -> None:
    host, port = box.urls[0].removeprefix("http://").rsplit(":", 1)
    for auth in ("", "Authorization: Bearer nope-nope-nope-nope\r\n"):
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all((
                f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + auth + "\r\n"
            ).encode())
            with trio.fail_after(5):
                head = await stream.receive_some(4096)
        assert head.startswith(b"HTTP/1.1 401"), head


async def test_history_endpoints(client: httpx.AsyncClient) -> None:
    wid, _ = await joined(client, "hist")
    rows = (await client.get("/events", headers=ADMIN)).json()
    assert rows[0]["event_type"] == "WORKSPACE_ONLINE" and rows[0]["workspace_id"] == wid
    assert set(rows[0]) == {"id", "event_type", "workspace_id", "payload", "created_at"}
