"""The platform's peer and discovery rules (CanCommunicate, the peer set), through the real API."""

from __future__ import annotations

import httpx

from ..conftest import ADMIN, bearer, joined


async def test_can_communicate_rules(client: httpx.AsyncClient) -> None:
    root, root_tok = await joined(client, "root")
    other_root, _ = await joined(client, "other-root")
    b, b_tok = await joined(client, "b", parent_id=root)
    c, _ = await joined(client, "c", parent_id=root)
    d, d_tok = await joined(client, "d", parent_id=b)
    grandchild_of_c, _ = await joined(client, "e", parent_id=c)

    async def allowed(caller: str, target: str) -> bool:
        r = await client.post("/registry/check-access", json={"caller_id": caller, "target_id": target},
                              headers=ADMIN)  # the rules, asked by the operator (auth: tests/security)
        assert r.status_code == 200
        return bool(r.json()["allowed"])

    assert await allowed(b, c)  # siblings
    assert await allowed(root, other_root)  # two roots
    assert await allowed(root, d) and await allowed(d, root)  # ancestor / descendant, any depth
    assert await allowed(b, b)  # self
    assert not await allowed(d, c)  # uncle
    assert not await allowed(d, grandchild_of_c)  # cousins
    assert not await allowed(other_root, b)  # another tree's child
    assert not await allowed(d, "not-a-workspace")

    ok = await client.get(f"/registry/discover/{root}", headers={"X-Workspace-ID": d, **bearer(d_tok)})
    assert ok.status_code == 200 and ok.json()["id"] == root and ok.json()["url"].startswith("http://127.0.0.1")
    denied = await client.get(f"/registry/discover/{c}", headers={"X-Workspace-ID": d, **bearer(d_tok)})
    assert denied.status_code == 403
    forged = await client.get(f"/registry/discover/{root}", headers={"X-Workspace-ID": d, **bearer(b_tok)})
    assert forged.status_code == 401
    missing = await client.get(f"/registry/discover/{root}", headers=bearer(d_tok))
    assert missing.status_code == 401
    system = await client.get(f"/registry/discover/{root}", headers={"X-Workspace-ID": "system:x", **bearer(d_tok)})
    assert system.status_code == 403

    peers = await client.get(f"/registry/{b}/peers", headers={"X-Workspace-ID": b, **bearer(b_tok)})
    assert peers.status_code == 200
    assert {p["name"] for p in peers.json()} == {"c", "d", "root"}  # sibling, child, parent
    assert set(peers.json()[0]) >= {"id", "name", "url", "role", "tier", "status", "agent_card"}
    filtered = await client.get(f"/registry/{b}/peers?q=RO", headers=bearer(b_tok))
    assert [p["name"] for p in filtered.json()] == ["root"]
    roots = await client.get(f"/registry/{root}/peers", headers=bearer(root_tok))
    assert {p["name"] for p in roots.json()} == {"other-root", "b", "c"}
    assert (await client.get(f"/registry/{b}/peers", headers=bearer(d_tok))).status_code == 401
    assert (await client.get(f"/registry/{b}/peers", headers=ADMIN)).status_code == 200
