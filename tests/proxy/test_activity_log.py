"""The proxy's activity log keeps the bus's contract: ``ACTIVITY_LOGGED`` is published once its row is committed."""

from __future__ import annotations

import httpx
from trio_websocket import open_websocket_url

from molecule_box.box import Box

from ..api.test_event_streams import AS_ADMIN, frames_until, ws_url
from ..conftest import ADMIN, bearer, joined
from .agents import TestAgent
from .test_proxy import send_body, target


async def test_activity_logged_is_published_after_its_row_is_committed(box: Box, client: httpx.AsyncClient,
                                                                        agent: TestAgent) -> None:
    """A subscriber that reads the activity at the event finds the row (the row used to be written up to 50 ms
    after its event)."""
    wid, _ = await target(client, agent)
    caller, caller_tok = await joined(client, "caller")
    async with open_websocket_url(ws_url(box), extra_headers=AS_ADMIN) as ws:
        response = await client.post(f"/workspaces/{wid}/a2a", json=send_body("logged", "m-logged"),
                                     headers={"X-Workspace-ID": caller, **bearer(caller_tok)})
        assert response.status_code == 200
        await frames_until(ws, lambda f: f["event"] == "ACTIVITY_LOGGED" and f["workspace_id"] == wid)
        rows = (await client.get(f"/workspaces/{wid}/activity?type=a2a_receive", headers=ADMIN)).json()
    assert [(r["source_id"], r["status"], r["request_body"]) for r in rows] == [
        (caller, "ok", send_body("logged", "m-logged"))]
