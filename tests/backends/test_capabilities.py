"""The box decides by a backend's capabilities, never by its name: a remote backend called something other than
``external`` gets what ``external`` gets (poll-mode inbox, no restart advice, the remote heartbeat deadline)."""

from __future__ import annotations

import httpx
import trio

from molecule_box.backends.external import ExternalBackend

from ..conftest import ADMIN, BoxRunner, register
from ..proxy.test_proxy import send_body


class Laptops(ExternalBackend):
    """Remote agents (``lifecycle=False, remote=True``) under another name."""

    name = "laptops"


async def test_a_remote_backend_is_treated_as_remote_whatever_its_name(runner: BoxRunner) -> None:
    box = await runner.start(extra_backends={"laptops": Laptops}, REMOTE_LIVENESS_STALE_AFTER="0.5",
                             LIVENESS_TTL_SECONDS="600")
    async with httpx.AsyncClient(base_url=box.urls[0], timeout=10) as client:
        created = await client.post("/workspaces", json={"name": "l", "backend": "laptops"}, headers=ADMIN)
        assert created.status_code == 201, created.text
        wid = created.json()["id"]
        # No URL: a call waits in the inbox for the agent to poll (a box-run workspace would answer 503).
        sent = await client.post(f"/workspaces/{wid}/a2a", json=send_body("hi", "m-1"), headers=ADMIN)
        assert sent.status_code == 202 and sent.json()["delivery"] == "poll", sent.text
        # The box drives no lifecycle here, so a change of tier needs no restart.
        patched = await client.patch(f"/workspaces/{wid}", json={"tier": 2}, headers=ADMIN)
        assert patched.status_code == 200 and "needs_restart" not in patched.json(), patched.text
        # An agent that registers and then goes quiet is offline after the remote deadline (0.5 s), not 600 s.
        token = created.json()["connection"]["auth_token"]
        await register(client, wid, token=token)
        with trio.fail_after(10):
            while (await client.get(f"/workspaces/{wid}", headers=ADMIN)).json()["status"] != "offline":
                await trio.sleep(0.05)
