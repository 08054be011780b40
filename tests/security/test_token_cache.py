"""The token cache is exact: a token revoked, rotated away or deleted with its workspace is refused on the very
next call, on the A2A proxy, the heartbeat and the API, however often it was used (and cached) just before."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from molecule_box.security.tokens import hash_token, mint
from molecule_box.store import Store
from molecule_box.store import tokens as token_rows

from ..conftest import ADMIN, bearer, joined

CALLS = 3  # uses of the token before it ends: the first fills the cache, the others are served from it


async def _calls(client: httpx.AsyncClient, wid: str, token: str, target: str) -> list[int]:
    """Status of one heartbeat, one proxied call (``wid`` calling ``target``) and one API read with ``token``."""
    heartbeat = await client.post("/registry/heartbeat", headers=bearer(token),
                                  json={"workspace_id": wid, "active_tasks": 0, "uptime_seconds": 1})
    proxied = await client.post(f"/workspaces/{target}/a2a", headers={**bearer(token), "X-Workspace-ID": wid},
                                json={"jsonrpc": "2.0", "id": 1, "method": "message/send", "params": {
                                    "message": {"role": "user", "messageId": str(uuid.uuid4()),
                                                "parts": [{"kind": "text", "text": "hi"}]}}})
    read = await client.get(f"/workspaces/{wid}/tokens", headers=bearer(token))
    return [heartbeat.status_code, proxied.status_code, read.status_code]


async def _in_use(client: httpx.AsyncClient, wid: str, token: str, target: str) -> None:
    for _ in range(CALLS):
        statuses = await _calls(client, wid, token, target)
        assert 401 not in statuses, statuses


async def _token_id(client: httpx.AsyncClient, wid: str) -> str:
    listed = await client.get(f"/workspaces/{wid}/tokens", headers=ADMIN)
    assert listed.status_code == 200, listed.text
    return str(listed.json()["tokens"][0]["id"])


async def test_a_revoked_token_is_refused_on_the_next_call(client: httpx.AsyncClient) -> None:
    target, _ = await joined(client, "target")
    wid, token = await joined(client, "caller")
    await _in_use(client, wid, token, target)
    revoked = await client.delete(f"/workspaces/{wid}/tokens/{await _token_id(client, wid)}", headers=bearer(token))
    assert revoked.status_code == 200, revoked.text
    assert await _calls(client, wid, token, target) == [401, 401, 401]


async def test_a_rotated_away_token_is_refused_and_the_new_one_works(client: httpx.AsyncClient) -> None:
    target, _ = await joined(client, "target")
    wid, old = await joined(client, "caller")
    await _in_use(client, wid, old, target)
    old_id = await _token_id(client, wid)
    minted = await client.post(f"/workspaces/{wid}/tokens", headers=bearer(old), json={})
    assert minted.status_code == 201, minted.text
    new = minted.json()["auth_token"]
    await _in_use(client, wid, new, target)
    assert (await client.delete(f"/workspaces/{wid}/tokens/{old_id}", headers=bearer(new))).status_code == 200
    assert await _calls(client, wid, old, target) == [401, 401, 401]
    assert 401 not in await _calls(client, wid, new, target)


async def test_a_deleted_workspaces_token_is_refused_on_the_next_call(client: httpx.AsyncClient) -> None:
    target, _ = await joined(client, "target")
    wid, token = await joined(client, "caller")
    await _in_use(client, wid, token, target)
    assert (await client.delete(f"/workspaces/{wid}", headers=ADMIN)).status_code == 200
    heartbeat, proxied, read = await _calls(client, wid, token, target)
    # The heartbeat's tier tells a former token its workspace is gone (404); nothing accepts it.
    assert heartbeat in (401, 404) and proxied == 401 and read in (401, 404), (heartbeat, proxied, read)


def _online_workspace(writer: Any) -> str:
    """A workspace row written straight through the writer's handle (the store tests' way), its id."""
    wid = str(uuid.uuid4())
    writer.execute("INSERT INTO workspaces (id, name, status, runtime, backend, created_at, updated_at) "
                   "VALUES (?, 'w', 'online', 'external', 'external', 0, 0)", [wid])
    return wid


def test_a_lookup_between_the_revoking_op_and_its_commit_leaves_nothing_cached(tmp_path: Path) -> None:
    """The writer runs the revoking op, then commits; a lookup in between reads the last commit (still live)
    and must not leave that row in the cache once the commit is settled."""
    store = Store(tmp_path / "box.db")
    token = mint()
    writer = store._wdb  # the handle ops receive, as the writer passes it
    wid = _online_workspace(writer)
    token_rows.insert(wid, token.digest, token.prefix)(writer)
    cache = store.token_cache
    assert token_rows.lookup_cached(store.db, cache, hash_token(token.plaintext)) is not None
    assert len(cache) == 1
    writer.execute("BEGIN IMMEDIATE")
    token_rows.revoke_all([wid])(writer)  # run, not committed yet
    assert len(cache) == 0
    assert token_rows.lookup_cached(store.db, cache, hash_token(token.plaintext)) is not None  # the last commit
    assert len(cache) == 0  # held back until the commit settles
    writer.execute("COMMIT")
    cache.settle()
    assert token_rows.lookup_cached(store.db, cache, hash_token(token.plaintext)) is None
    assert len(cache) == 0
    store.close()


def test_every_op_that_ends_tokens_clears_them_from_the_cache(tmp_path: Path) -> None:
    """``revoke``, ``revoke_others`` (a migration's) and ``revoke_all`` (rotation, delete): a token cached just
    before any of them is refused once its commit settles, and the one a migration keeps still works."""
    store = Store(tmp_path / "box.db")
    writer = store._wdb
    cache = store.token_cache

    def commit(op: Callable[[Any], object]) -> None:
        writer.execute("BEGIN IMMEDIATE")
        op(writer)
        writer.execute("COMMIT")
        cache.settle()

    def seen(token: Any) -> bool:
        return token_rows.lookup_cached(store.db, cache, hash_token(token.plaintext)) is not None

    ops: dict[str, Callable[[str, list[str]], Callable[[Any], object]]] = {
        "revoke": lambda wid, ids: token_rows.revoke(wid, ids[0]),
        "revoke_others": lambda wid, ids: token_rows.revoke_others(wid, ids[1]),
        "revoke_all": lambda wid, ids: token_rows.revoke_all([wid]),
    }
    for name, make in ops.items():
        wid = _online_workspace(writer)
        ended, kept = mint(), mint()
        ids = [str(token_rows.insert(wid, t.digest, t.prefix)(writer)) for t in (ended, kept)]
        assert seen(ended) and seen(kept)  # both cached now
        commit(make(wid, ids))
        assert not seen(ended), name
        assert seen(kept) == (name != "revoke_all"), name
    store.close()
