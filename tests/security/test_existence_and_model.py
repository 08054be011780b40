"""Issue #10 item 11 through the API: ``/registry/check-access`` and a bearer-less register tell no one which
workspace ids exist, and
``GET /workspaces/:id/model`` returns no secret value (the admin token reads secret values nowhere)."""

from __future__ import annotations

import uuid

import httpx

from ..conftest import ADMIN, bearer, joined

CANARY = "sk-canary-7f3e9a1c-do-not-leak"


async def test_check_access_answers_alike_for_unknown_and_forbidden(client: httpx.AsyncClient) -> None:
    root, root_tok = await joined(client, "root")
    other_root, _ = await joined(client, "other-root")
    child, _ = await joined(client, "child", parent_id=other_root)
    unknown = str(uuid.uuid4())

    async def check(caller: str, target: str, headers: dict[str, str] | None = None) -> httpx.Response:
        return await client.post("/registry/check-access", json={"caller_id": caller, "target_id": target},
                                 headers=headers or {})

    # Without the caller's token, an existing id and an unknown one get the same answer. Before: {X, X} was
    # allowed exactly when X existed, and any two roots exactly when both did.
    for caller, target in ((root, root), (unknown, unknown), (root, other_root), (root, unknown)):
        refused = await check(caller, target)
        assert refused.status_code == 401, refused.text
        assert refused.json() == {"error": "missing workspace auth token"}
        foreign = await check(caller, target, bearer(root_tok) if caller != root else {"Authorization": "Bearer x"})
        assert foreign.status_code == 401 and foreign.json() == {"error": "invalid workspace auth token"}

    # With its own token a caller learns about its own reach only: unknown and forbidden look the same.
    async def allowed(target: str) -> object:
        answer = await check(root, target, bearer(root_tok))
        assert answer.status_code == 200, answer.text
        return answer.json()

    assert await allowed(other_root) == {"allowed": True}
    assert await allowed(child) == await allowed(unknown) == {"allowed": False}
    admin = await check(child, other_root, ADMIN)
    assert admin.status_code == 200 and admin.json() == {"allowed": True}


async def test_bearer_less_register_answers_alike_for_unknown_removed_and_closed(client: httpx.AsyncClient) -> None:
    closed, closed_tok = await joined(client, "closed")
    removed, removed_tok = await joined(client, "removed")
    assert (await client.delete(f"/workspaces/{removed}", headers=ADMIN)).status_code == 200
    unknown = str(uuid.uuid4())

    async def register(wid: str, headers: dict[str, str] | None = None) -> httpx.Response:
        return await client.post("/registry/register", json={"id": wid, "url": "remote://no-inbound"},
                                 headers=headers or {})

    # Before: an unknown id got 404 {deleted: false}, a removed one 404 {deleted: true}, a known one 401.
    for wid in (closed, removed, unknown):
        refused = await register(wid)
        assert (refused.status_code, refused.json()) == (401, {"error": "missing workspace auth token"})
        foreign = await register(wid, bearer(closed_tok) if wid != closed else {"Authorization": "Bearer x"})
        assert (foreign.status_code, foreign.json()) == (401, {"error": "invalid workspace auth token"})
    # The admin, and the removed workspace's own (revoked) token, still learn that it is gone.
    gone = await register(removed, bearer(removed_tok))
    assert (gone.status_code, gone.json()["deleted"]) == (404, True)
    assert (await register(unknown, ADMIN)).json() == {"error": "workspace not found", "deleted": False}


async def test_get_model_returns_no_secret_value(client: httpx.AsyncClient) -> None:
    wid, token = await joined(client, "agent")
    # The agent keeps its own MODEL_PROVIDER secret; only its own token may read it (via /secrets/values).
    put = await client.put(f"/workspaces/{wid}/secrets", json={"key": "MODEL_PROVIDER", "value": CANARY},
                           headers=bearer(token))
    assert put.status_code == 200, put.text
    for headers in (ADMIN, bearer(token)):
        model = await client.get(f"/workspaces/{wid}/model", headers=headers)
        assert model.status_code == 200, model.text
        assert model.json() == {"model": "", "source": "workspace_secrets"}  # before: {"model": CANARY, ...}
        assert CANARY not in model.text
    assert (await client.get(f"/workspaces/{wid}/secrets/values", headers=ADMIN)).status_code == 401
    own = await client.get(f"/workspaces/{wid}/secrets/values", headers=bearer(token))
    assert own.json()["MODEL_PROVIDER"] == CANARY

    deleted = await client.delete(f"/workspaces/{wid}/secrets/MODEL_PROVIDER", headers=bearer(token))
    assert deleted.status_code == 200
    saved = await client.put("/settings/secrets", json={"key": "MODEL_PROVIDER", "value": CANARY}, headers=ADMIN)
    assert saved.status_code == 200
    inherited = await client.get(f"/workspaces/{wid}/model", headers=bearer(token))
    assert inherited.json() == {"model": "", "source": "global_secrets"}
