"""``/workspaces/:id/config`` and ``/workspaces/:id/memory`` through the HTTP API of a real box."""

from __future__ import annotations

import httpx
import pytest
import trio

from molecule_box.box import Box

from ..conftest import ADMIN, bearer, joined


async def test_config_is_shallow_merged(client: httpx.AsyncClient) -> None:
    wid, token = await joined(client)
    got = await client.get(f"/workspaces/{wid}/config", headers=bearer(token))
    assert got.status_code == 200 and got.json() == {"data": {}}
    first = await client.patch(f"/workspaces/{wid}/config", json={"a": 1, "nested": {"x": 1}}, headers=bearer(token))
    assert first.status_code == 200 and first.json() == {"data": {"a": 1, "nested": {"x": 1}}}
    # shallow: "nested" is replaced, not merged; "a" stays; the {data: ...} form GET answers is accepted too
    second = await client.patch(f"/workspaces/{wid}/config", json={"data": {"nested": {"y": 2}, "b": None}},
                                headers=ADMIN)
    assert second.json() == {"data": {"a": 1, "nested": {"y": 2}, "b": None}}
    assert (await client.get(f"/workspaces/{wid}/config", headers=ADMIN)).json() == second.json()


# The box answers 413 and closes the connection before httpx has sent the whole body; httpx then leaves its
# request-body generator to the garbage collector (a client-side warning, not a box problem).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_config_refuses_bad_bodies(client: httpx.AsyncClient) -> None:
    wid, token = await joined(client)
    for raw in (b"[1]", b"{", b'{"a": NaN}', b'"x"'):
        bad = await client.patch(f"/workspaces/{wid}/config", content=raw, headers=bearer(token))
        assert bad.status_code == 400, (raw, bad.text)
        assert "error" in bad.json()
    big = await client.patch(f"/workspaces/{wid}/config", json={"a": "x" * 300_000}, headers=bearer(token))
    assert big.status_code == 413


async def test_memory_versions_ttl_and_delete(box: Box, client: httpx.AsyncClient) -> None:
    wid, token = await joined(client)
    me = bearer(token)
    base = f"/workspaces/{wid}/memory"
    made = await client.post(base, json={"key": "plan", "value": {"step": 1}, "if_match_version": 0}, headers=me)
    assert made.status_code == 200, made.text
    assert made.json()["version"] == 1 and made.json()["value"] == {"step": 1}
    again = await client.post(base, json={"key": "plan", "value": {"step": 2}, "if_match_version": 0}, headers=me)
    assert again.status_code == 409 and again.json()["current_version"] == 1
    moved = await client.post(base, json={"key": "plan", "value": {"step": 2}, "if_match_version": 1}, headers=me)
    assert moved.status_code == 200 and moved.json()["version"] == 2
    blind = await client.post(base, json={"key": "plan", "value": "three"}, headers=ADMIN)
    assert blind.json()["version"] == 3
    one = await client.get(f"{base}/plan", headers=me)
    assert one.status_code == 200 and one.json()["value"] == "three" and one.json()["expires_at"] is None

    short = await client.post(base, json={"key": "brief", "value": 1, "ttl_seconds": 1}, headers=me)
    assert short.status_code == 200 and short.json()["expires_at"] is not None
    assert [e["key"] for e in (await client.get(base, headers=me)).json()] == ["brief", "plan"]
    with trio.fail_after(10):  # expiry is by wall time: wait for it, boundedly
        while (await client.get(f"{base}/brief", headers=me)).status_code != 404:
            await trio.sleep(0.2)
    assert [e["key"] for e in (await client.get(base, headers=me)).json()] == ["plan"]
    # an expired key starts again at version 1
    reborn = await client.post(base, json={"key": "brief", "value": 2, "if_match_version": 0}, headers=me)
    assert reborn.status_code == 200 and reborn.json()["version"] == 1

    gone = await client.delete(f"{base}/plan", headers=me)
    assert gone.status_code == 200
    assert (await client.delete(f"{base}/plan", headers=me)).status_code == 404
    assert (await client.get(f"{base}/plan", headers=me)).status_code == 404


async def test_memory_refuses_bad_bodies(client: httpx.AsyncClient) -> None:
    wid, token = await joined(client)
    base = f"/workspaces/{wid}/memory"
    for body in ({"value": 1}, {"key": "", "value": 1}, {"key": "a/b", "value": 1}, {"key": "k"},
                 {"key": "k", "value": 1, "ttl_seconds": 0}, {"key": "k", "value": 1, "if_match_version": -1},
                 {"key": "k", "value": 1, "ttl_seconds": "5"}):
        bad = await client.post(base, json=body, headers=bearer(token))
        assert bad.status_code == 400, (body, bad.text)


async def test_another_workspace_never_reads_them(client: httpx.AsyncClient) -> None:
    wid, token = await joined(client, "owner")
    _, other = await joined(client, "other")
    await client.post(f"/workspaces/{wid}/memory", json={"key": "k", "value": "secret"}, headers=bearer(token))
    await client.patch(f"/workspaces/{wid}/config", json={"k": "v"}, headers=bearer(token))
    for path in ("config", "memory", "memory/k"):
        refused = await client.get(f"/workspaces/{wid}/{path}", headers=bearer(other))
        assert refused.status_code in (401, 403), (path, refused.text)
        assert "secret" not in refused.text and '"v"' not in refused.text
        assert (await client.get(f"/workspaces/{wid}/{path}")).status_code == 401
