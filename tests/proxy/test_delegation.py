"""Delegations are settled only by the queue row the delegation itself enqueued (issue #10 item 3)."""

from __future__ import annotations

from typing import Any

import httpx
import trio

from ..conftest import ADMIN, bearer, joined
from .agents import TestAgent
from .test_proxy import send_body, target


async def _delegation(client: httpx.AsyncClient, source: str, token: str, delegation_id: str) -> dict[str, Any]:
    rows = (await client.get(f"/workspaces/{source}/delegations", headers=bearer(token))).json()
    return next(r for r in rows if r["delegation_id"] == delegation_id)


async def _outcome(client: httpx.AsyncClient, source: str, token: str, delegation_id: str) -> dict[str, Any]:
    """The delegation once settled (written after its queue row's outcome), waiting at most 5 s."""
    with trio.fail_after(5):
        while (row := await _delegation(client, source, token, delegation_id))["status"] == "delegated":
            await trio.sleep(0.02)
    return row


async def _drain_through(client: httpx.AsyncClient, wid: str, token: str, sentinel: str) -> None:
    """Heartbeat with spare capacity until the queued message ``sentinel`` is delivered, at most 5 s.

    With max_concurrent_tasks 1 a workspace's queue goes out one message at a time, in order; each one's
    outcome is submitted at its answer, before the next one is claimed, and its settlement right after that
    commit: once the sentinel queued last is delivered, whatever the messages before it did is written."""
    with trio.fail_after(5):
        while not any(q["message_id"] == sentinel and q["status"] == "completed" for q in
                      (await client.get(f"/workspaces/{wid}/queue", headers=ADMIN)).json()):
            await client.post("/registry/heartbeat", json={"workspace_id": wid, "active_tasks": 0},
                              headers=bearer(token))
            await trio.sleep(0.02)


async def test_a_queued_message_reusing_a_delegation_id_does_not_settle_it(client: httpx.AsyncClient,
                                                                           agent: TestAgent) -> None:
    """Delegation ids are broadcast (DELEGATION_SENT): an attacker queued a message with ``messageId`` set to a
    victim's delegation id, and its delivery overwrote the delegation's result with the attacker's reply."""
    worker, worker_tok = await target(client, agent, "worker")
    victim, victim_tok = await joined(client, "victim")
    attacker, attacker_tok = await joined(client, "attacker")
    sent = await client.post(f"/workspaces/{worker}/delegate", json={"task": "the real task"},
                             headers={"X-Workspace-ID": victim, **bearer(victim_tok)})
    assert sent.status_code == 202, sent.text
    delegation_id = sent.json()["delegation_id"]
    real = await _outcome(client, victim, victim_tok, delegation_id)
    assert real["status"] == "completed" and real["result"]["result"]["parts"][0]["text"] == "echo: the real task"

    # The worker is busy: the attacker's message, carrying the delegation's id, is queued to the same target.
    await client.post("/registry/heartbeat", json={"workspace_id": worker, "active_tasks": 1},
                      headers=bearer(worker_tok))
    forged = await client.post(f"/workspaces/{worker}/a2a", json=send_body("forged", delegation_id),
                               headers={"X-Workspace-ID": attacker, **bearer(attacker_tok)})
    assert forged.status_code == 202 and forged.json()["queued"] is True, forged.text
    await client.post(f"/workspaces/{worker}/a2a", json=send_body("sentinel", "sentinel"), headers=ADMIN)
    await _drain_through(client, worker, worker_tok, "sentinel")
    assert [p["params"]["message"]["parts"][0]["text"] for _, p in agent.received] == [
        "the real task", "forged", "sentinel"]
    assert await _delegation(client, victim, victim_tok, delegation_id) == real


async def test_a_message_to_another_workspace_reusing_a_delegation_id_does_not_settle_it(
        client: httpx.AsyncClient, agent: TestAgent) -> None:
    """Nor does one queued to any other target (here the attacker's own busy agent) while the delegation is
    still waiting for its busy worker."""
    worker, worker_tok = await target(client, agent, "worker")
    attacker, attacker_tok = await target(client, agent, "attacker")
    victim, victim_tok = await joined(client, "victim")
    for wid, tok in ((worker, worker_tok), (attacker, attacker_tok)):
        await client.post("/registry/heartbeat", json={"workspace_id": wid, "active_tasks": 1}, headers=bearer(tok))
    sent = await client.post(f"/workspaces/{worker}/delegate", json={"task": "the real task"},
                             headers={"X-Workspace-ID": victim, **bearer(victim_tok)})
    delegation_id = sent.json()["delegation_id"]
    forged = await client.post(f"/workspaces/{attacker}/a2a", json=send_body("forged", delegation_id),
                               headers={"X-Workspace-ID": attacker, **bearer(attacker_tok)})
    assert forged.status_code == 202, forged.text
    await client.post(f"/workspaces/{attacker}/a2a", json=send_body("sentinel", "sentinel"), headers=ADMIN)
    await _drain_through(client, attacker, attacker_tok, "sentinel")
    assert (await _delegation(client, victim, victim_tok, delegation_id))["status"] == "delegated"
    await client.post("/registry/heartbeat", json={"workspace_id": worker, "active_tasks": 0},
                      headers=bearer(worker_tok))
    done = await _outcome(client, victim, victim_tok, delegation_id)
    assert done["status"] == "completed" and done["result"]["result"]["parts"][0]["text"] == "echo: the real task"
