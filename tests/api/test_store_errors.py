"""What the store refuses reaches clients as it always did: the store raises its own errors (facts about rows)
and api/errors.py, for the quart routes and the raw-ASGI paths alike, gives each its status, body and headers."""

from __future__ import annotations

import sqlite3
from typing import Any

import httpx
import trio

from molecule_box.api.errors import error_response
from molecule_box.store.errors import BootstrapClosed, QueueFull, SchemaTooNew, StoreUnavailable, TooManyTokens
from molecule_box.store.tokens import MAX_LIVE_PER_WORKSPACE

from ..conftest import ADMIN, bearer, joined

UNAVAILABLE = {"error": "platform datastore unavailable — retry shortly", "code": "platform_unavailable",
               "retry_after": 5}


def test_each_store_error_keeps_its_status_body_and_headers() -> None:
    assert error_response(StoreUnavailable("disk I/O error")) == (503, UNAVAILABLE, {"Retry-After": "5"})
    assert error_response(QueueFull(7)) == (429, {
        "error": "the workspace's queue is full (7 messages waiting); retry later", "queued": False,
        "queue_depth": 7, "retry_after": 30}, {"Retry-After": "30"})
    assert error_response(TooManyTokens(50)) == (
        429, {"error": "workspace already has 50 live tokens; revoke one first"}, {})
    assert error_response(BootstrapClosed()) == (401, {"error": "missing workspace auth token"}, {})
    # A store written by a newer box is a start-up error, named like every bad setting (never an HTTP one).
    assert SchemaTooNew(99, 6).problems[0].startswith("the store has schema version 99, newer than")


async def test_a_store_that_cannot_write_is_503_on_the_hot_path_and_the_routes(box: Any) -> None:
    """Another process holding the write lock past the writer's busy timeout (an operator's sqlite3 shell):
    the heartbeat (raw ASGI) and a quart route both answer 503 with Retry-After, and nothing was acknowledged."""
    async with httpx.AsyncClient(base_url=box.urls[0], timeout=30) as client:
        wid, token = await joined(client, "locked-out")
        shell = sqlite3.connect(box.settings.store_path, isolation_level=None)
        try:
            shell.execute("BEGIN IMMEDIATE")
            answers: dict[str, httpx.Response] = {}

            async def send(name: str, path: str, headers: dict[str, str], body: dict[str, Any] | None) -> None:
                answers[name] = await client.post(path, json=body, headers=headers)

            with trio.fail_after(25):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(send, "heartbeat", "/registry/heartbeat", bearer(token), {"workspace_id": wid})
                    nursery.start_soon(send, "mint", f"/workspaces/{wid}/tokens", ADMIN, None)
        finally:
            shell.execute("ROLLBACK")
            shell.close()
        for answer in answers.values():
            assert answer.status_code == 503 and answer.headers["retry-after"] == "5", answer.text
            assert answer.json() == UNAVAILABLE
        tokens = (await client.get(f"/workspaces/{wid}/tokens", headers=ADMIN)).json()
        assert tokens["count"] == 1  # the refused mint stored nothing
        beat = await client.post("/registry/heartbeat", json={"workspace_id": wid}, headers=bearer(token))
        assert beat.status_code == 200, beat.text


async def test_the_live_token_cap_is_429(box: Any) -> None:
    async with httpx.AsyncClient(base_url=box.urls[0], timeout=10) as client:
        wid, _ = await joined(client, "many-tokens")  # its first token
        for _ in range(MAX_LIVE_PER_WORKSPACE - 1):
            assert (await client.post(f"/workspaces/{wid}/tokens", headers=ADMIN)).status_code == 201
        refused = await client.post(f"/workspaces/{wid}/tokens", headers=ADMIN)
        assert refused.status_code == 429
        assert refused.json() == {"error": f"workspace already has {MAX_LIVE_PER_WORKSPACE} live tokens; "
                                           "revoke one first"}
        assert (await client.get(f"/workspaces/{wid}/tokens", headers=ADMIN)).json()["count"] == 50
