"""What the store keeps, and for how long (issue #10 item 9): no table grows without bound."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import httpx
import trio

from ..conftest import ADMIN, BoxRunner, bearer, joined
from ..proxy.agents import TestAgent, serve_agent
from ..proxy.test_proxy import send_body

#: Every retention at about 0.1 ms: a box started with these prunes, at once, everything finished before it.
TINY = {name: "1e-9" for name in ("ACTIVITY_RETENTION_DAYS", "EVENT_RETENTION_DAYS", "REVOKED_TOKEN_RETENTION_DAYS",
                                  "QUEUE_RETENTION_DAYS", "DELEGATION_RETENTION_DAYS")}


def _count(runner: BoxRunner, sql: str, *args: Any) -> int:
    assert runner.box is not None
    return int(runner.box.store.db.execute(sql, args).fetchone()[0])


async def test_card_updates_do_not_grow_the_event_history(runner: BoxRunner) -> None:
    """200 card updates from one agent added 127 MB: each recorded event held the whole card."""
    box = await runner.start()
    async with httpx.AsyncClient(base_url=box.urls[0], timeout=10) as client:
        wid, token = await joined(client, "chatty")
        card = {"name": "chatty", "skills": [{"id": f"s{n}", "description": "d" * 2000} for n in range(100)]}
        for n in range(20):
            updated = await client.post("/registry/update-card", json={"workspace_id": wid,
                                                                       "agent_card": {**card, "version": n}},
                                        headers=bearer(token))
            assert updated.status_code == 200, updated.text
        history = await client.get(f"/events/{wid}", headers=ADMIN)
        cards = [e for e in history.json() if e["event_type"] == "AGENT_CARD_UPDATED"]
        assert len(cards) == 20
        assert len(history.content) < 64 * 1024, len(history.content)
        assert cards[0]["payload"]["agent_card"] == {"omitted_bytes": len(json.dumps(
            {**card, "version": 19}, separators=(",", ":")))}
        assert _count(runner, "SELECT sum(length(payload)) FROM events WHERE workspace_id = ?", wid) < 64 * 1024
        current = (await client.get(f"/workspaces/{wid}", headers=ADMIN)).json()
        assert current["agent_card"] == {**card, "version": 19}  # the workspace keeps the whole current card


async def test_finished_rows_are_deleted_after_their_retention(runner: BoxRunner, nursery: trio.Nursery) -> None:
    """Events, revoked tokens, finished queue rows and settled delegations were never deleted. What is still
    in use (live tokens, queued messages, pending delegations) is kept whatever its age."""
    agent = TestAgent()
    agent.url = await serve_agent(nursery, agent)
    box = await runner.start()
    async with httpx.AsyncClient(base_url=box.urls[0], timeout=10) as client:
        worker, first = await joined(client, "worker", url=agent.url)
        boss, boss_tok = await joined(client, "boss")
        caller = {"X-Workspace-ID": boss, **bearer(boss_tok)}
        done = (await client.post(f"/workspaces/{worker}/delegate", json={"task": "t1"}, headers=caller)).json()
        with trio.fail_after(5):
            while (await client.get(f"/workspaces/{boss}/delegations", headers=ADMIN)).json()[0]["status"] \
                    != "completed":
                await trio.sleep(0.02)
        minted = await client.post(f"/workspaces/{worker}/tokens", headers=bearer(first))
        token = minted.json()["auth_token"]
        first_id = (await client.get(f"/workspaces/{worker}/tokens", headers=ADMIN)).json()["tokens"][-1]["id"]
        assert (await client.delete(f"/workspaces/{worker}/tokens/{first_id}", headers=ADMIN)).status_code == 200
        await client.post("/registry/heartbeat", json={"workspace_id": worker, "active_tasks": 1},
                          headers=bearer(token))
        pending = (await client.post(f"/workspaces/{worker}/delegate", json={"task": "t2"}, headers=caller)).json()
        queued = await client.post(f"/workspaces/{worker}/a2a", json=send_body("later", "m-later"), headers=ADMIN)
        assert queued.status_code == 202, queued.text
        assert _count(runner, "SELECT count(*) FROM tokens WHERE revoked_at IS NOT NULL") == 1
    await runner.stop()
    stopped = time.time()

    box = await runner.start(**TINY)
    async with httpx.AsyncClient(base_url=box.urls[0], timeout=10) as client:
        with trio.fail_after(5):  # the first pass runs at start
            while _count(runner, "SELECT count(*) FROM events WHERE created_at < ?", stopped):
                await trio.sleep(0.02)
        assert _count(runner, "SELECT count(*) FROM activity WHERE created_at < ?", stopped) == 0
        assert _count(runner, "SELECT count(*) FROM tokens WHERE revoked_at IS NOT NULL") == 0
        delegations = (await client.get(f"/workspaces/{boss}/delegations", headers=ADMIN)).json()
        assert [(d["delegation_id"], d["status"]) for d in delegations] == [(pending["delegation_id"], "delegated")]
        assert done["delegation_id"] != pending["delegation_id"]
        queue = (await client.get(f"/workspaces/{worker}/queue", headers=ADMIN)).json()
        assert sorted((q["message_id"], q["status"]) for q in queue) == sorted(
            [(pending["delegation_id"], "queued"), ("m-later", "queued")])
        beat = await client.post("/registry/heartbeat", json={"workspace_id": worker}, headers=bearer(token))
        assert beat.status_code == 200, beat.text  # the live token works


async def test_metrics_show_the_store_size(box: Any, client: httpx.AsyncClient) -> None:
    """The store's size on disk (database file and WAL) is a gauge, so its growth can be alerted on."""
    await joined(client, "sized")
    file_size = os.path.getsize(box.settings.store_path)  # the database file never shrinks (no VACUUM)
    text = (await client.get("/metrics")).text
    sizes = [line for line in text.splitlines() if line.startswith("molecule_box_store_bytes ")]
    assert len(sizes) == 1, text
    assert float(sizes[0].split()[1]) >= file_size > 0


async def test_a_long_backlog_is_deleted_in_batches(runner: BoxRunner) -> None:
    """The first pass after an upgrade may find months of events: it deletes them BATCH rows per commit, so other
    writes (heartbeats) get their commits in between instead of waiting behind one long transaction."""
    from molecule_box.store import retention

    box = await runner.start()
    old = time.time() - 365 * 86400

    def backlog(db: Any) -> None:
        db.conn.executemany("INSERT INTO events (event_type, payload, created_at) VALUES ('X', '{}', ?)",
                            [(old,)] * (2 * retention.BATCH + 10))

    await box.store.write(backlog)
    batches = box.store.batches
    deleted = await retention.prune_all(box.store, box.settings)
    assert deleted["events"] == 2 * retention.BATCH + 10
    assert box.store.batches - batches >= 3
    assert _count(runner, "SELECT count(*) FROM events WHERE created_at < ?", old + 1) == 0
