"""The poll inbox's INBOX_MESSAGE events, as any subscriber of the box's bus gets them (the dashboard's feed
reads them from /events/stream): one per change of a message's state, published once it is committed."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import httpx
import trio

from molecule_box.box import Box

from ..conftest import ADMIN, bearer, joined


def _message(text: str, role: str = "user", **fields: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": text, "method": "message/send", "params": {"message": {
        "role": role, "messageId": text, "parts": [{"kind": "text", "text": text}], **fields}}}


async def test_each_state_change_is_one_event(box: Box, client: httpx.AsyncClient) -> None:
    poller, token = await joined(client, "poller", url="remote://no-inbound")
    peer, peer_token = await joined(client, "peer", url="remote://no-inbound")
    as_peer = {"X-Workspace-ID": peer, **bearer(peer_token)}
    seen: list[tuple[str | None, dict[str, Any]]] = []

    async def until(count: int) -> None:
        with trio.fail_after(10):
            while len(seen) < count:
                event = await events.receive()
                seen.append((event.workspace_id, dict(event.payload)))

    with box.bus.subscribe(lambda e: e.type == "INBOX_MESSAGE") as events:
        before = time.time()
        sent = await client.post(f"/workspaces/{poller}/a2a", json=_message("from the user"), headers=ADMIN)
        user_row = sent.json()["activity_id"]
        sent = await client.post(f"/workspaces/{poller}/a2a", json=_message("from the peer"), headers=as_peer)
        peer_row = sent.json()["activity_id"]
        await until(2)
        queued = seen[0][1]
        assert {k: v for k, v in queued.items() if k != "expires_at"} == {
            "activity_id": user_row, "state": "queued", "source_id": None, "target_id": poller}
        expires = datetime.fromisoformat(queued["expires_at"].replace("Z", "+00:00")).timestamp()
        assert abs(expires - (before + box.settings.inbox_ttl_days * 86400)) < 30
        assert seen[1][1]["source_id"] == peer

        polled = await client.get(f"/workspaces/{poller}/activity?type=a2a_receive", headers=bearer(token))
        assert len(polled.json()) == 2
        # The same page handed out again (no since_id: the SDK after a restart) is fetched already: no event.
        again = await client.get(f"/workspaces/{poller}/activity?type=a2a_receive", headers=bearer(token))
        assert len(again.json()) == 2
        await until(4)
        assert [(p["activity_id"], p["state"]) for _, p in seen[2:]] == [(user_row, "fetched"), (peer_row, "fetched")]

        # The agent answers its user (notify) and its peer (an A2A message of role agent through the proxy).
        assert (await client.post(f"/workspaces/{poller}/notify", json={"message": "re: user"},
                                  headers=bearer(token))).status_code == 200
        reply = _message("re: peer", role="agent")
        assert (await client.post(f"/workspaces/{peer}/a2a", json=reply,
                                  headers={"X-Workspace-ID": poller, **bearer(token)})).status_code == 202
        await until(7)  # the reply is itself a message in the peer's inbox: queued there
        assert sorted((p["activity_id"], p["state"]) for wid, p in seen[4:] if wid == poller) == [
            (user_row, "replied"), (peer_row, "replied")]
        assert [(p["state"], p["source_id"]) for wid, p in seen[4:] if wid == peer] == [("queued", poller)]
        with trio.move_on_after(0.5):
            await until(8)
        assert len(seen) == 7, seen[7:]
