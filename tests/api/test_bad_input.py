"""Bad input gets a 4xx with a JSON error body, never a 500, and changes nothing."""

from __future__ import annotations

import httpx
import pytest
import trio

from ..conftest import ADMIN, bearer, joined

UNKNOWN = "6b7d8e8c-1d2a-4c55-9f0e-3b1e2a4c5d6e"


async def snapshot(client: httpx.AsyncClient) -> list[dict[str, object]]:
    rows = (await client.get("/workspaces", headers=ADMIN)).json()
    for row in rows:
        row.pop("updated_at", None)
        row.pop("last_heartbeat_at", None)
    return list(rows)


CASES = [
    # (method, path, headers, body (bytes|dict|None), status)
    ("POST", "/workspaces", "admin", b"{not json", 400),
    ("POST", "/workspaces", "admin", b"[1,2]", 400),
    ("POST", "/workspaces", "admin", {"name": 5}, 400),
    ("POST", "/workspaces", "admin", {"name": ""}, 400),
    ("POST", "/workspaces", "admin", {"name": "x" * 256}, 400),
    ("POST", "/workspaces", "admin", {"name": "bad\nname"}, 400),
    ("POST", "/workspaces", "admin", {"name": "a{b}"}, 400),
    ("POST", "/workspaces", "admin", {"name": "ok", "tier": "3"}, 400),
    ("POST", "/workspaces", "admin", {"name": "ok", "tier": 9}, 400),
    ("POST", "/workspaces", "admin", {"name": "ok", "external": True, "url": "http://169.254.169.254/"}, 400),
    ("POST", "/workspaces", "admin", {"name": "ok", "external": True, "url": "ftp://example.com"}, 400),
    ("POST", "/workspaces", "admin", {"name": "ok", "external": True, "url": "http://10.0.0.5/"}, 400),
    ("POST", "/workspaces", "admin", {"name": "ok", "parent_id": UNKNOWN}, 400),
    ("POST", "/workspaces", "admin", {"name": "ok", "parent_id": "../etc"}, 400),
    ("POST", "/workspaces", "admin", {"name": "ok", "workspace_dir": "/etc/x"}, 400),
    ("POST", "/workspaces", "admin", {"name": "ok", "secrets": {"bad key": "v"}}, 400),
    # a runtime outside ALLOWED_RUNTIMES
    ("POST", "/workspaces", "admin", {"name": "ok", "runtime": "no-such", "backend": "docker"}, 400),
    ("POST", "/workspaces", "admin", {"name": "ok", "backend": "nope"}, 400),
    ("POST", "/workspaces", "admin", b"{" + b'"name": "' + b"x" * (1024 * 1024) + b'"}', 413),
    ("POST", "/workspaces", None, {"name": "ok"}, 401),
    ("POST", "/workspaces", "wrong", {"name": "ok"}, 401),
    ("GET", "/workspaces", "agent", None, 401),
    ("GET", "/workspaces/not-a-uuid", "admin", None, 400),
    ("GET", f"/workspaces/{UNKNOWN}", "admin", None, 404),
    ("DELETE", f"/workspaces/{UNKNOWN}", "admin", None, 404),
    ("PATCH", "/workspaces/{wid}", "agent", {"tier": "x"}, 400),
    ("PATCH", "/workspaces/{wid}", "admin", {"name": None, "parent_id": "{wid}"}, 400),  # the agent: 403
    ("PATCH", "/workspaces/{wid}", "admin", {"max_concurrent_tasks": None}, 400),
    ("PATCH", "/workspaces/{wid}", "admin", {"budget_limit": -1}, 400),
    ("POST", "/registry/register", None, {"id": "nope", "url": "http://127.0.0.1:1/"}, 400),
    ("POST", "/registry/register", None, {"url": "http://127.0.0.1:1/"}, 400),
    ("POST", "/registry/register", "agent", {"id": "{wid}", "url": "http://169.254.169.254/latest"}, 400),
    ("POST", "/registry/register", "agent", {"id": "{wid}", "url": "gopher://x"}, 400),
    ("POST", "/registry/register", "agent", {"id": "{wid}", "url": "http://[fe80::1]/"}, 400),
    ("POST", "/registry/register", "agent", {"id": "{wid}", "agent_card": "card"}, 400),
    ("POST", "/registry/register", "wrong", {"id": "{wid}", "url": "http://127.0.0.1:1/"}, 401),
    ("POST", "/registry/heartbeat", "agent", b"garbage", 400),
    ("POST", "/registry/heartbeat", "agent", {"workspace_id": "{wid}", "active_tasks": -1}, 400),
    ("POST", "/registry/heartbeat", "agent", {"workspace_id": "{wid}", "error_rate": "high"}, 400),
    ("POST", "/registry/heartbeat", "agent", {"workspace_id": "{wid}", "sample_error": "e" * 9000}, 400),
    ("POST", "/registry/heartbeat", "agent", {"workspace_id": "{wid}", "runtime_state": "sleepy"}, 400),
    ("POST", "/registry/heartbeat", "agent", b"{" + b'"x": "' + b"y" * 70000 + b'"}', 413),
    ("POST", "/registry/heartbeat", None, {"workspace_id": "{wid}"}, 401),
    ("POST", "/registry/heartbeat", "wrong", {"workspace_id": "{wid}"}, 401),
    ("POST", "/registry/heartbeat", "agent", {"workspace_id": UNKNOWN}, 401),
    ("POST", "/registry/update-card", "agent", {"workspace_id": "{wid}"}, 400),
    ("POST", "/registry/check-access", None, {"caller_id": 1}, 400),
    ("GET", "/registry/discover/{wid}", "agent", None, 401),
    ("GET", f"/registry/discover/{UNKNOWN}", "admin", None, 404),
    ("PUT", "/workspaces/{wid}/secrets", "agent", {"key": "1BAD", "value": "v"}, 400),
    ("PUT", "/workspaces/{wid}/secrets", "agent", {"key": "OK", "value": ""}, 400),
    ("PUT", "/workspaces/{wid}/secrets", "agent", {"key": "OK", "value": 3}, 400),
    ("DELETE", "/workspaces/{wid}/secrets/NOPE", "agent", None, 404),
    ("PUT", "/settings/secrets", "agent", {"key": "OK", "value": "v"}, 401),
    ("DELETE", "/settings/secrets/NOPE", "admin", None, 404),
    ("GET", "/workspaces/{wid}/tokens?limit=0", "agent", None, 400),
    ("GET", "/workspaces/{wid}/tokens?limit=abc", "agent", None, 400),
    ("DELETE", "/workspaces/{wid}/tokens/nope", "agent", None, 404),
    ("POST", "/workspaces/{wid}/hibernate", "agent", b"[", 200),  # body ignored: verbs take none
    ("GET", "/events", "agent", None, 401),
    ("GET", "/nope", None, None, 404),
    ("PUT", "/health", None, None, 405),
]


# The box answers 413 and closes the connection before httpx has sent the whole body; httpx then leaves
# its request-body generator to the garbage collector (a client-side warning, not a box problem).
_CLIENT_WARNING = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.mark.parametrize(("method", "path", "who", "body", "status"),
                         [pytest.param(*c, marks=[_CLIENT_WARNING] if c[4] == 413 else []) for c in CASES],
                         ids=[f"{c[0]} {c[1]} {c[4]}-{i}" for i, c in enumerate(CASES)])
async def test_bad_input(client: httpx.AsyncClient, method: str, path: str, who: str | None,
                         body: object, status: int) -> None:
    wid, token = await joined(client, "victim")
    headers = {"admin": ADMIN, "agent": bearer(token), "wrong": bearer("x" * 43), None: {}}[who]
    before = await snapshot(client)
    path = path.replace("{wid}", wid)
    if isinstance(body, dict):
        body = {k: (v.replace("{wid}", wid) if isinstance(v, str) else v) for k, v in body.items()}
        response = await client.request(method, path, json=body, headers=headers)
    else:
        response = await client.request(method, path, content=body, headers=headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert "error" in response.json() or status == 200
    if status != 200:
        assert await snapshot(client) == before


async def test_a_stalled_body_on_a_hot_route_is_408(client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """The raw-ASGI routes bound the body's arrival as the app's routes do (BODY_TIMEOUT), so a client that
    stops mid-body does not hold its request open forever."""
    from molecule_box import asgi

    monkeypatch.setattr(asgi, "BODY_DEADLINE", 0.3)
    wid, _ = await joined(client, "stalled")
    host, port = str(client.base_url).removeprefix("http://").rstrip("/").split(":")
    for path in ("/registry/heartbeat", f"/workspaces/{wid}/a2a"):
        stream = await trio.open_tcp_stream(host, int(port))
        try:
            await stream.send_all(f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                                  f"authorization: {ADMIN['Authorization']}\r\ncontent-length: 100\r\n\r\n{{".encode())
            reply = b""
            with trio.fail_after(5):
                while b"\r\n\r\n" not in reply:
                    chunk = await stream.receive_some(4096)
                    assert chunk, reply
                    reply += chunk
            assert reply.startswith(b"HTTP/1.1 408"), reply
        finally:
            await stream.aclose()
