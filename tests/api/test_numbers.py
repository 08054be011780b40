"""Numbers and nesting a body may carry (issue #10 items 6 and 10): every number the API accepts is finite and
bounded, no NaN/Infinity gets in anywhere, every response is strict JSON, and no body is answered 5xx."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio

from molecule_box.api.routing import ROUTES

from ..conftest import ADMIN, bearer, joined

HUGE = "1" + "0" * 400  # 10**400: a valid JSON number no float or SQLite INTEGER holds
DEEP = b"[" * 1000 + b"]" * 1000


def strict(response: httpx.Response) -> Any:
    """The body parsed as strict JSON: NaN, Infinity and -Infinity are not JSON."""

    def refuse(token: str) -> Any:
        raise AssertionError(f"non-JSON constant {token} in {response.request.method} {response.request.url}")

    return json.loads(response.content, parse_constant=refuse)


async def test_an_overflowing_uptime_is_refused_and_the_actor_lives_on(client: httpx.AsyncClient) -> None:
    """``uptime_seconds: 1e309`` overflowed inside the actor: a traceback each time, and five in a row parked the
    workspace as failed."""
    wid, token = await joined(client, "victim")
    for _ in range(6):
        hb = await client.post("/registry/heartbeat", headers={**bearer(token), "content-type": "application/json"},
                               content=f'{{"workspace_id": "{wid}", "uptime_seconds": 1e309}}'.encode())
        assert hb.status_code == 400, hb.text
        assert "uptime_seconds" in hb.json()["error"]
    assert (await client.get(f"/workspaces/{wid}/failures", headers=ADMIN)).json()["actor_failures"] == []
    ok = await client.post("/registry/heartbeat", json={"workspace_id": wid, "uptime_seconds": 12.5},
                           headers=bearer(token))
    assert ok.status_code == 200, ok.text
    ws = strict(await client.get(f"/workspaces/{wid}", headers=ADMIN))
    assert ws["status"] == "online" and ws["uptime_seconds"] == 12


async def test_the_largest_accepted_values_pass_through_the_actor(client: httpx.AsyncClient) -> None:
    """A value that passed validation never makes the actor raise: the bounds are what the store can hold."""
    wid, token = await joined(client, "edge")
    hb = await client.post("/registry/heartbeat", headers=bearer(token), json={
        "workspace_id": wid, "uptime_seconds": 2**53 - 1, "monthly_spend": 2**63 - 1, "active_tasks": 1_000_000,
        "error_rate": 1, "runtime_metadata": {"idle_timeout_seconds": 86400}})
    assert hb.status_code == 200, hb.text
    patched = await client.patch(f"/workspaces/{wid}", json={"x": -1e9, "y": 1e9}, headers=bearer(token))
    assert patched.status_code == 200, patched.text
    created = await client.post("/workspaces", headers=ADMIN, json={
        "name": "big", "external": True, "budget_limit": 2**63 - 1, "max_concurrent_tasks": -(2**63),
        "canvas": {"x": 1e9, "y": -1e9}})
    assert created.status_code == 201, created.text
    assert (await client.get(f"/workspaces/{wid}/failures", headers=ADMIN)).json()["actor_failures"] == []
    rows = strict(await client.get("/workspaces", headers=ADMIN))
    assert {r["name"]: r["status"] for r in rows} == {"edge": "degraded", "big": "awaiting_agent"}


@pytest.mark.parametrize(("field", "value"), [("x", "Infinity"), ("x", "NaN"), ("y", "-Infinity"), ("x", "1e309"),
                                              ("x", HUGE), ("x", "1e10")])
async def test_patch_refuses_a_coordinate_that_is_not_finite_and_bounded(client: httpx.AsyncClient, field: str,
                                                                          value: str) -> None:
    """``PATCH`` stored ``Infinity`` and ``GET /workspaces`` became unparseable for strict JSON clients."""
    wid, token = await joined(client, "canvas")
    before = [(r["x"], r["y"]) for r in strict(await client.get("/workspaces", headers=ADMIN))]
    other = "y" if field == "x" else "x"
    patched = await client.patch(f"/workspaces/{wid}", headers={**bearer(token), "content-type": "application/json"},
                                 content=f'{{"{field}": {value}, "{other}": 1}}'.encode())
    assert patched.status_code == 400, patched.text
    rows = strict(await client.get("/workspaces", headers=ADMIN))
    assert [(r["x"], r["y"]) for r in rows] == before


NON_FINITE_BODIES = [
    # (path, who, body with {wid}): a literal NaN/Infinity or an overflowing number in free-form JSON
    ("/registry/register", "agent", '{"id": "{wid}", "url": "http://127.0.0.1:9/", "agent_card": {"v": NaN}}'),
    ("/registry/update-card", "agent", '{"workspace_id": "{wid}", "agent_card": {"skills": [{"w": Infinity}]}}'),
    ("/registry/update-card", "agent", '{"workspace_id": "{wid}", "agent_card": {"w": -1e999}}'),
    ("/workspaces/{wid}/activity", "agent", '{"activity_type": "agent_log", "request_body": {"p": NaN}}'),
    ("/workspaces/{wid}/activity", "agent", '{"activity_type": "agent_log", "response_body": [1e400]}'),
    ("/workspaces", "admin", '{"name": "n", "canvas": {"x": NaN, "y": 0}}'),
    ("/workspaces/{wid}/a2a", "admin",
     '{"jsonrpc": "2.0", "id": 1, "method": "message/send", "params": {"message": {"parts": [], "n": NaN}}}'),
    ("/workspaces/{wid}/a2a", "admin",
     '{"jsonrpc": "2.0", "id": 1e999, "method": "message/send", "params": {"message": {"parts": []}}}'),
]


@pytest.mark.parametrize(("path", "who", "body"), NON_FINITE_BODIES, ids=[f"{p} {b[-30:]}" for p, _, b in
                                                                       NON_FINITE_BODIES])
async def test_non_finite_numbers_in_free_form_json_are_refused(client: httpx.AsyncClient, path: str, who: str,
                                                                body: str) -> None:
    """Free-form JSON (agent cards, activity bodies, A2A params) is stored and re-emitted: a NaN in it would make
    every later answer that carries it unparseable for strict clients."""
    poller, token = await joined(client, "poller", url="remote://no-inbound")
    headers = {"admin": ADMIN, "agent": bearer(token)}[who]
    sent = await client.post(path.replace("{wid}", poller), content=body.replace("{wid}", poller).encode(),
                             headers={**headers, "content-type": "application/json"})
    assert sent.status_code == 400, sent.text
    strict(sent)
    for read in ("/workspaces", f"/workspaces/{poller}", f"/workspaces/{poller}/activity", "/events",
                 f"/registry/discover/{poller}"):
        strict(await client.get(read, headers=ADMIN))


def _huge_numbers(model: Any) -> dict[str, Any]:
    """Every top-level field of a body model set to 10**400 (as raw JSON text, filled in by the caller)."""
    return {name: "@HUGE@" for name in model.model_fields} if model is not None else {"n": "@HUGE@"}


async def test_no_route_answers_5xx_to_deep_json_or_huge_numbers(client: httpx.AsyncClient) -> None:
    """1,000-deep JSON and 10**400 as a number, in every body field of every route that takes a body (the raw-ASGI
    heartbeat and the A2A proxy included): each is a 4xx, or accepted, never a 5xx."""
    seen: list[str] = []
    for doc in ROUTES:
        if doc.method not in ("post", "put", "patch"):
            continue
        # A fresh poll-mode workspace per route: a verb before (pause, delete) cannot hide what this one does.
        wid, token = await joined(client, "target", url="remote://no-inbound")
        path = doc.path.replace("{id}", wid).replace("{raw_id}", wid).replace("{key}", "K").replace(
            "{token_id}", "nope")
        headers = {**ADMIN, "X-Workspace-ID": wid, "content-type": "application/json"} if doc.auth == "caller" \
            else {**(bearer(token) if doc.auth == "own" else ADMIN), "content-type": "application/json"}
        huge = json.dumps(_huge_numbers(doc.body)).replace('"@HUGE@"', HUGE)
        if doc.path.endswith("/a2a"):
            huge = ('{"jsonrpc": "2.0", "id": ' + HUGE + ', "method": "message/send", "params": {"message": {"parts": '
                    '[{"kind": "text", "text": "x"}], "n": ' + HUGE + "}}}")
        for body in (DEEP, b'{"a": ' + DEEP + b"}", huge.encode()):
            with trio.fail_after(10):
                answer = await client.request(doc.method.upper(), path, content=body, headers=headers)
            assert answer.status_code < 500, (doc.method, doc.path, body[:60], answer.text)
            strict(answer)
        seen.append(doc.path)
    assert {"/registry/heartbeat", "/workspaces/{id}/a2a", "/workspaces", "/registry/register"} <= set(seen)
    for read in ("/workspaces", "/events"):
        strict(await client.get(read, headers=ADMIN))


async def test_a_message_queued_before_strict_json_fails_instead_of_wedging_the_queue(
        box: Any, client: httpx.AsyncClient) -> None:
    """A queue row written by an older box may hold a NaN: its delivery fails like an undeliverable one (and
    the messages behind it go out) instead of raising in the drainer and staying ``dispatched``."""
    wid, token = await joined(client, "busy")
    legacy = b'{"jsonrpc": "2.0", "id": 1, "method": "message/send", "params": {"message": {"messageId": "old", ' \
             b'"parts": [], "w": NaN}}}'
    await box.proxy.queue.put(wid, None, "old", "message/send", legacy, {})
    with trio.fail_after(10):
        while (queue := strict(await client.get(f"/workspaces/{wid}/queue", headers=ADMIN)))[0]["status"] \
                not in ("failed",):
            await client.post("/registry/heartbeat", json={"workspace_id": wid}, headers=bearer(token))
            await trio.sleep(0.02)
    assert queue[0]["attempts"] == 5 and "invalid JSON body" in queue[0]["last_error"]
