"""The dashboard's session as the admin tier sees it: cookie, CSRF, expiry, logout (plain HTTP, no browser)."""

from __future__ import annotations

import httpx

from molecule_box.authz import CSRF_HEADER, SESSION_COOKIE
from molecule_box.box import Box

from ..conftest import ADMIN_TOKEN, BoxRunner


async def _login(client: httpx.AsyncClient) -> tuple[str, str]:
    """(cookie value, CSRF token) of a fresh login."""
    response = await client.post("/session", json={"admin_token": ADMIN_TOKEN})
    assert response.status_code == 200, response.text
    header = response.headers["set-cookie"]
    assert "HttpOnly" in header and "SameSite=Strict" in header and "Max-Age=" in header
    return response.cookies[SESSION_COOKIE], response.json()["csrf_token"]


def _cookie(value: str) -> dict[str, str]:
    return {"Cookie": f"{SESSION_COOKIE}={value}"}


async def test_the_page_is_served_from_package_data(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    script = await client.get("/dashboard/dashboard.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    for missing in ("/dashboard/nope.js", "/dashboard/..%2Fapi%2Fapp.py", "/dashboard/.hidden.js"):
        response = await client.get(missing)
        assert response.status_code == 404, missing
        assert response.json() == {"error": "not found"}


async def test_a_session_reads_with_its_cookie_and_writes_only_with_its_csrf_token(
        client: httpx.AsyncClient) -> None:
    cookie, csrf = await _login(client)
    client.cookies.clear()
    assert (await client.get("/workspaces", headers=_cookie(cookie))).status_code == 200
    body = {"name": "from-the-page", "external": True}
    refused = await client.post("/workspaces", json=body, headers=_cookie(cookie))
    assert refused.status_code == 401 and CSRF_HEADER in refused.json()["error"]
    other = "y" if csrf.endswith("x") else "x"  # a token ending in "x" turned into itself 1 time in 64 (seen in CI)
    wrong = await client.post("/workspaces", json=body, headers={**_cookie(cookie), CSRF_HEADER: csrf[:-1] + other})
    assert wrong.status_code == 401
    made = await client.post("/workspaces", json=body, headers={**_cookie(cookie), CSRF_HEADER: csrf})
    assert made.status_code == 201, made.text
    # The session is the admin where the admin token is (a workspace-tier route), never a workspace's own
    # token (an own-tier route: secret values).
    wid = made.json()["id"]
    assert (await client.get(f"/workspaces/{wid}", headers=_cookie(cookie))).status_code == 200
    assert (await client.get(f"/workspaces/{wid}/secrets/values", headers=_cookie(cookie))).status_code == 401
    # The A2A proxy (a raw-ASGI entry point) applies the same rule: the cookie alone is refused.
    call = {"jsonrpc": "2.0", "id": 1, "method": "message/send",
            "params": {"message": {"role": "user", "messageId": "m1", "parts": [{"kind": "text", "text": "hi"}]}}}
    assert (await client.post(f"/workspaces/{wid}/a2a", json=call, headers=_cookie(cookie))).status_code == 401
    queued = await client.post(f"/workspaces/{wid}/a2a", json=call, headers={**_cookie(cookie), CSRF_HEADER: csrf})
    assert queued.status_code != 401, queued.text
    state = await client.get("/session", headers=_cookie(cookie))
    assert state.json()["logged_in"] is True and state.json()["csrf_token"] == csrf


async def test_a_forged_or_ended_cookie_opens_nothing(client: httpx.AsyncClient) -> None:
    cookie, csrf = await _login(client)
    client.cookies.clear()
    sid, expires, signature = cookie.split(".")
    forged = [f"{sid}.{int(expires) + 3600}.{signature}", f"{sid}.{expires}.{'0' * len(signature)}", "x", ""]
    for value in forged:
        assert (await client.get("/workspaces", headers=_cookie(value))).status_code == 401, value
        assert (await client.get("/session", headers=_cookie(value))).json() == {"logged_in": False}
    assert (await client.delete("/session", headers=_cookie(cookie))).status_code == 401  # no CSRF token
    out = await client.delete("/session", headers={**_cookie(cookie), CSRF_HEADER: csrf})
    assert out.status_code == 200 and SESSION_COOKIE in out.headers["set-cookie"]
    assert (await client.get("/workspaces", headers=_cookie(cookie))).status_code == 401


async def test_a_wrong_login_is_refused_and_counted(client: httpx.AsyncClient) -> None:
    before = (await client.get("/metrics")).text.count("\n")
    assert (await client.post("/session", json={"admin_token": "wrong"})).status_code == 401
    assert (await client.post("/session", json={})).status_code == 400
    assert (await client.post("/session", content=b"{not json")).status_code == 400
    metrics = (await client.get("/metrics")).text
    assert 'molecule_box_auth_failures_total{tier="admin"} 1.0' in metrics, before


async def test_a_restart_ends_every_session(runner: BoxRunner, box: Box) -> None:
    async with httpx.AsyncClient(base_url=box.urls[0]) as client:
        cookie, _ = await _login(client)
    await runner.stop()
    restarted = await runner.start(ADMIN_TOKEN="another-admin-token-0123456789abcdef")
    async with httpx.AsyncClient(base_url=restarted.urls[0]) as client:
        assert (await client.get("/workspaces", headers=_cookie(cookie))).status_code == 401
