"""Every route refuses and admits what its declared auth tier promises, walked from ``/openapi.json``.

The document is built from the same declarations that run, so this checks the code against the document: a
route (or a hand-written entry point such as the heartbeat, the A2A proxy or ``/ws``) whose checks differ from
its declared tier fails here. Each route gets a fresh workspace (the victim), which the admitted requests may
change or delete; a second live workspace lends its valid token as the foreign one."""

from __future__ import annotations

from typing import Any

import httpx
import trio

from molecule_box.box import Box

from ..conftest import ADMIN, bearer, create_external

#: Who each tier lets through (not 401); everyone else is refused with 401. ``own`` is the victim's token with
#: X-Workspace-ID naming the victim; ``admin`` the admin token alone; the rest are never let through.
ADMITS = {
    "admin": {"admin"},
    "workspace": {"admin", "own"},
    "own": {"own"},
    "caller": {"admin", "own"},
    "state": {"admin", "own"},
    "register": {"admin", "own"},
    "source": {"admin", "own"},
}
WHO = ("none", "wrong", "foreign", "own", "admin")


def _body(op: dict[str, Any], victim: str, foreign: str) -> dict[str, Any] | None:
    """A valid body for routes whose tier checks the workspace the body names (the body is parsed first)."""
    if "requestBody" not in op:
        return None
    model = op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    bodies: dict[str, dict[str, Any]] = {
        "Heartbeat": {"workspace_id": victim},
        "Register": {"id": victim},
        "UpdateCard": {"workspace_id": victim, "agent_card": {"name": "x"}},
        "CheckAccess": {"caller_id": victim, "target_id": foreign},
        "Delegate": {"task": "t", "target_id": foreign},
    }
    return bodies.get(model, {})


async def _websocket_status(box: Box, path: str, headers: dict[str, str]) -> int:
    """The status a WebSocket handshake is answered with (101 when accepted)."""
    host, port = box.urls[0].removeprefix("http://").rsplit(":", 1)
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    async with await trio.open_tcp_stream(host, int(port)) as stream:
        await stream.send_all((
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n").encode())
        with trio.fail_after(10):
            head = b""
            while b"\r\n" not in head:
                chunk = await stream.receive_some(4096)
                assert chunk, head
                head += chunk
    return int(head.split(b" ", 2)[1])


def _refusals(metrics: str) -> float:
    return sum(float(line.split()[-1]) for line in metrics.splitlines()
               if line.startswith("molecule_box_auth_failures_total{"))


async def test_every_route_refuses_what_its_tier_refuses(box: Box, client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    foreign = await create_external(client, "foreign")
    foreign_id, foreign_token = foreign["id"], foreign["connection"]["auth_token"]
    before = _refusals((await client.get("/metrics")).text)
    refused = 0
    checked: set[str] = set()
    for path, ops in sorted(doc["paths"].items()):
        for method, op in sorted(ops.items()):
            tier = op["x-auth-tier"]
            if tier == "none":
                continue
            assert tier in ADMITS, f"{method} {path}: tier {tier} has no expectation here"
            checked.add(tier)
            victim = await create_external(client, "victim")
            wid, token = victim["id"], victim["connection"]["auth_token"]
            url = path.replace("{raw_id}", wid).replace("{id}", wid).replace("{key}", "X").replace(
                "{token_id}", "x").replace("{file_path}", "config.yaml")
            claims = {"X-Workspace-ID": wid}
            headers = {"none": claims, "wrong": {**claims, **bearer("mol_" + "0" * 43)},
                       "foreign": {**claims, **bearer(foreign_token)}, "own": {**claims, **bearer(token)},
                       "admin": ADMIN}
            for who in WHO:
                if path == "/ws":
                    status = await _websocket_status(box, url, headers[who])
                else:
                    async with client.stream(method.upper(), url, headers=headers[who],
                                             json=_body(op, wid, foreign_id)) as response:
                        status = response.status_code  # a stream admitted is left at its head
                where = f"{method.upper()} {path} as {who} (tier {tier})"
                # 501 is an answer, not a fault: a victim's backend (external) without what the route needs
                assert status < 500 or (status == 501 and "501" in op["responses"]), where
                if who in ADMITS[tier]:
                    assert status != 401, where
                else:
                    assert status == 401, f"{where}: {status}"
                    assert "401" in op["responses"], f"{method} {path}: 401 undocumented"
                    refused += 1
    assert checked == set(ADMITS)  # every tier is walked at least once
    metrics = (await client.get("/metrics")).text
    assert _refusals(metrics) - before == refused  # every refusal is counted, the proxy's included
    for tier in ADMITS:
        assert f'molecule_box_auth_failures_total{{tier="{tier}"}}' in metrics
