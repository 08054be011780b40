"""A poll-mode agent gets every message in its inbox, from scratch and across restarts (issue #11 item 6).

The agent is the platform SDK's real ``PollDelivery`` (tests/proxy/poll_agent.py) in its own process, started
without a cursor file as the SDK does by default; the box keeps the cursor (store/inbox.py).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from molecule_box.box import Box

from ..conftest import ADMIN, BoxRunner, bearer, joined
from .test_proxy import send_body

pytest.importorskip("molecule_agent", reason="the platform's SDK (../shared/vendor) is not installed")

POLL_AGENT = Path(__file__).with_name("poll_agent.py")


async def _queue(client: httpx.AsyncClient, poller: str, texts: list[str], headers: dict[str, str]) -> None:
    for text in texts:
        sent = await client.post(f"/workspaces/{poller}/a2a", json=send_body(text), headers=headers)
        assert sent.status_code == 202 and sent.json()["delivery"] == "poll", sent.text


@asynccontextmanager
async def poll_agent(box: Box, poller: str, token: str, record: Path, *,
                     block_at: int = 0) -> AsyncIterator[trio.Process]:
    """The SDK's poll loop in a process of its own, until the block ends (SIGKILL, as a crash would)."""
    proc = await trio.lowlevel.open_process(
        [sys.executable, str(POLL_AGENT), box.urls[0], poller, token, str(record), str(block_at)],
        stdout=subprocess.PIPE)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGKILL)
        with trio.move_on_after(10):
            await proc.wait()


async def _line(proc: trio.Process, want: bytes) -> None:
    assert proc.stdout is not None
    seen = b""
    with trio.fail_after(30):  # importing the SDK on a busy 2-core machine takes a while
        while want not in seen:
            chunk = await proc.stdout.receive_some(1024)
            assert chunk, f"the poll agent exited: {seen!r}"
            seen += chunk


def _recorded(record: Path) -> list[str]:
    return record.read_text().splitlines() if record.exists() else []


async def _until(check: Callable[[], bool], seconds: float = 60) -> None:
    with trio.fail_after(seconds):
        while not check():
            await trio.sleep(0.05)


async def _inbox(client: httpx.AsyncClient, wid: str, **params: str) -> dict[str, Any]:
    got = await client.get(f"/workspaces/{wid}/inbox", params=params, headers=ADMIN)
    assert got.status_code == 200, got.text
    return dict(got.json())


async def test_poll_from_scratch_and_after_a_kill_gets_every_queued_message(
        box: Box, client: httpx.AsyncClient, tmp_path: Path) -> None:
    """300 queued messages: the SDK's first poll (no since_id) got the newest 100 and went on from there, so 200
    were never fetched. And an agent killed mid-page, restarted without a cursor file, must not skip the rest of
    that page: the box resumes after the last row the agent confirmed (its since_id), not after the last one
    it was handed."""
    poller, token = await joined(client, "poller", url="remote://no-inbound")
    texts = [f"message {n:03d}" for n in range(300)]
    await _queue(client, poller, texts, ADMIN)
    waiting = await _inbox(client, poller)
    assert waiting["counts"] == {"queued": 300, "fetched": 0, "replied": 0, "expired": 0}, waiting["counts"]
    record = tmp_path / "handled.txt"
    async with poll_agent(box, poller, token, record, block_at=150) as first:
        await _line(first, b"blocked")  # in the second page (rows 101-200), its 150th message
    assert _recorded(record) == texts[:149]
    async with poll_agent(box, poller, token, record) as second:
        await _line(second, b"polling")
        await _until(lambda: set(_recorded(record)) == set(texts))
    handled = _recorded(record)
    assert handled[:149] == texts[:149] and sorted(set(handled[149:])) == texts[100:]  # re-handed, none skipped
    done = await _inbox(client, poller)
    assert done["counts"]["fetched"] == 300 and done["counts"]["queued"] == 0, done["counts"]
    rows = (await client.get(f"/workspaces/{poller}/activity?type=a2a_receive&since_id=0&limit=5",
                             headers=ADMIN)).json()
    assert [r["inbox_state"] for r in rows] == ["fetched"] * 5


async def test_admin_and_canvas_reads_keep_newest_first(client: httpx.AsyncClient) -> None:
    """The cursor is the agent's alone: the admin's and the canvas's reads neither use nor move it."""
    poller, token = await joined(client, "poller", url="remote://no-inbound")
    texts = [f"m{n}" for n in range(6)]
    await _queue(client, poller, texts, ADMIN)

    async def read(query: str, headers: dict[str, str]) -> list[str]:
        got = await client.get(f"/workspaces/{poller}/activity?{query}", headers=headers)
        assert got.status_code == 200, got.text
        return [row["data"]["text"] for row in got.json()]

    assert await read("type=a2a_receive&limit=2", ADMIN) == texts[4:]  # the newest 2, oldest first, as before
    assert await read("type=a2a_receive&source=canvas&limit=2", bearer(token)) == texts[:3:-1]  # newest first
    assert (await _inbox(client, poller))["counts"]["queued"] == 6  # none of those was the agent's poll
    assert await read("type=a2a_receive&limit=4", bearer(token)) == texts[:4]  # the agent's poll: oldest first
    assert await read("type=a2a_receive&limit=4", bearer(token)) == texts[:4]  # nothing confirmed yet: again
    first = (await client.get(f"/workspaces/{poller}/activity?type=a2a_receive&limit=1",
                              headers=bearer(token))).json()[0]["id"]
    assert await read(f"type=a2a_receive&since_id={first + 1}", bearer(token)) == texts[2:]
    assert await read("type=a2a_receive", bearer(token)) == texts[2:]  # resumes after the confirmed rows
    state = await _inbox(client, poller)
    assert state["counts"] == {"queued": 0, "fetched": 6, "replied": 0, "expired": 0}, state
    assert state["cursor"] == {"fetched_through": first + 5, "taken_through": first + 1}
    assert [m["state"] for m in (await _inbox(client, poller, state="fetched", limit="2"))["messages"]] == \
        ["fetched", "fetched"]
    bad = await client.get(f"/workspaces/{poller}/inbox", params={"state": "lost"}, headers=ADMIN)
    assert bad.status_code == 400, bad.text


async def test_replies_mark_their_messages_replied(client: httpx.AsyncClient, tmp_path: Path) -> None:
    """The SDK's reply() answers the user with /notify and a peer with an A2A message of role agent: each
    marks the oldest message the agent fetched from that sender and had not answered."""
    from molecule_agent import RemoteAgentClient

    poller, token = await joined(client, "poller", url="remote://no-inbound")
    peer, peer_token = await joined(client, "peer", url="remote://no-inbound")
    await _queue(client, poller, ["from the user"], ADMIN)
    await _queue(client, poller, ["from the peer"], {"X-Workspace-ID": peer, **bearer(peer_token)})
    url = str(client.base_url).rstrip("/")

    def agent() -> list[str]:
        sdk = RemoteAgentClient(poller, url, token_dir=tmp_path / "tokens", origin=None)
        sdk.save_token(token)
        messages = sdk.fetch_inbound()
        for message in messages:
            sdk.reply(message, f"re: {message.text}")
        return [m.source for m in messages]

    assert await trio.to_thread.run_sync(agent) == ["canvas_user", "peer_agent"]
    state = await _inbox(client, poller)
    assert state["counts"]["replied"] == 2, state
    rows = (await client.get(f"/workspaces/{poller}/activity?type=a2a_receive&since_id=0",
                             headers=bearer(token))).json()
    assert [(r["data"]["text"], r["inbox_state"], r["response_body"]) for r in rows] == [
        ("from the user", "replied", {"result": "re: from the user"}),
        ("from the peer", "replied", {"result": "re: from the peer"})]
    # The reply reached the peer's own inbox, as a message (not as a reply to anything the peer fetched).
    peer_rows = (await client.get(f"/workspaces/{peer}/activity?type=a2a_receive", headers=ADMIN)).json()
    assert [(r["data"]["text"], r["source_id"], r["inbox_state"]) for r in peer_rows] == [
        ("re: from the peer", poller, "queued")]


async def test_a_reply_naming_its_task_answers_that_message(client: httpx.AsyncClient) -> None:
    poller, token = await joined(client, "poller", url="remote://no-inbound")
    peer, peer_token = await joined(client, "peer", url="remote://no-inbound")
    await _queue(client, poller, ["first", "second"], {"X-Workspace-ID": peer, **bearer(peer_token)})
    fetched = (await client.get(f"/workspaces/{poller}/activity?type=a2a_receive", headers=bearer(token))).json()
    second = fetched[1]["id"]
    reply = {"jsonrpc": "2.0", "id": 1, "method": "message/send", "params": {"message": {
        "role": "agent", "messageId": "r-1", "taskId": f"inbox-{second}", "parts": [{"kind": "text", "text": "2"}]}}}
    sent = await client.post(f"/workspaces/{peer}/a2a", json=reply, headers={"X-Workspace-ID": poller, **bearer(token)})
    assert sent.status_code == 202, sent.text
    messages = (await _inbox(client, poller))["messages"]
    assert [(m["id"], m["state"]) for m in messages] == [(second, "replied"), (fetched[0]["id"], "fetched")]
    # A message of role user from the agent is a call of its own, not a reply.
    call = send_body("a question of mine")
    sent = await client.post(f"/workspaces/{peer}/a2a", json=call, headers={"X-Workspace-ID": poller, **bearer(token)})
    assert sent.status_code == 202 and (await _inbox(client, poller))["counts"]["replied"] == 1


async def test_a_message_not_fetched_in_time_expires(runner: BoxRunner) -> None:
    box = await runner.start(INBOX_TTL_DAYS="0.00001")  # 0.86 s
    async with httpx.AsyncClient(base_url=box.urls[0], timeout=10) as client:
        poller, token = await joined(client, "poller", url="remote://no-inbound")
        await _queue(client, poller, ["stale"], ADMIN)
        with trio.fail_after(10):
            while (await _inbox(client, poller))["counts"]["expired"] != 1:
                await trio.sleep(0.1)
        await _queue(client, poller, ["fresh"], ADMIN)
        polled = (await client.get(f"/workspaces/{poller}/activity?type=a2a_receive", headers=bearer(token))).json()
        assert [r["data"]["text"] for r in polled] == ["fresh"]  # the expired one is no longer handed out
        assert [m["state"] for m in (await _inbox(client, poller))["messages"]] == ["fetched", "expired"]
