"""A Molecule control-plane emulator: ``python -m molecule_box_controlplane.emulator --port 9300``.

The routes the tenant side calls, with their auth (the shared-secret bearer and ``X-Molecule-Admin-Token`` on
``/cp/workspaces/*``, the admin bearer on ``/cp/admin/*``), EC2's instance states (``pending → running →
stopping → terminated``) on a clock, the EC2 provisioner's tier clamp (tiers outside 3-4 run as 4, said in the
answer's ``tier``), a console buffer per instance, and knobs under ``/_emulator/`` (unauthenticated: listen on
loopback only):

* ``POST /_emulator/fault {"mode": "5xx"|"hang"|"malformed"|"oversized"|"none", "count"?: n}``: the next ``n``
  control-plane calls (all, without ``count``) fail that way; ``hang`` outlasts the client's timeout.
* ``POST /_emulator/crash {"workspace_id", "error"?}``: the instance's console gets ``RUNTIME CRASHED`` and the
  emulator posts ``bootstrap-failed`` to the box that provisioned it, as the CP's bootstrap watcher does.
* ``POST /_emulator/terminate {"workspace_id"}``: the instance dies on its own (terminated).
* ``POST /_emulator/timing {"boot"?, "stop"?, "provision"?}``: seconds each takes.
* ``GET /_emulator/instances``: every instance (terminated ones too); ``GET /_emulator/instances/{id}/env``:
  the env it was provisioned with (what the agent on the instance would read).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import httpx
import trio

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

#: Requests bodies past this are refused (413): the CP's own cap on what a tenant sends.
REQUEST_CAP = 1024 * 1024
#: The ``oversized`` fault answers with this many bytes: past the tenant's 64 KiB read cap.
OVERSIZED = 64 * 1024 + 1


@dataclasses.dataclass
class Instance:
    instance_id: str
    workspace_id: str
    org_id: str
    box_id: str
    runtime: str
    requested_tier: int
    tier: int
    platform_url: str
    env: dict[str, str]
    tenant_token: str | None
    launched_at: float
    boot: float
    console: list[str] = dataclasses.field(default_factory=list)
    stop_at: float | None = None
    stop_for: float = 0.0

    def state(self, now: float) -> str:
        if self.stop_at is not None:
            return "terminated" if now >= self.stop_at + self.stop_for else "stopping"
        return "running" if now >= self.launched_at + self.boot else "pending"

    def public(self, now: float) -> dict[str, Any]:
        return {"instance_id": self.instance_id, "workspace_id": self.workspace_id, "org_id": self.org_id,
                "box_id": self.box_id, "runtime": self.runtime, "tier": self.tier,
                "requested_tier": self.requested_tier, "state": self.state(now), "launched_at": self.launched_at}


def clamp_tier(tier: int) -> int:
    """The EC2 provisioner's clamp: every tier outside 3-4 runs as T4 (``tier=5`` once yielded a t3.small)."""
    return tier if tier in (3, 4) else 4


class Emulator:
    """The emulated control plane's state and its ASGI app (``emulator.app``)."""

    def __init__(self, *, shared_secret: str | None = None, admin_api_token: str | None = None,
                 tenant_admin_token: str | None = None, boot: float = 1.0, stop: float = 0.5,
                 provision: float = 0.0, hang: float = 130.0) -> None:
        self.shared_secret = shared_secret
        self.admin_api_token = admin_api_token or shared_secret
        self.tenant_admin_token = tenant_admin_token
        self.boot, self.stop, self.provision, self.hang = boot, stop, provision, hang
        self.instances: dict[str, Instance] = {}
        #: False: answer the instance listing (the box's addition) 404, as a control plane without it would.
        self.lists = True
        self.fault: str | None = None
        self.fault_count: int | None = None
        #: Control-plane calls answered, by route ("POST /cp/workspaces/provision" ...), for tests and benches.
        self.calls: dict[str, int] = {}
        #: Control-plane calls answered with an injected fault.
        self.faulted = 0

    # -- state -----------------------------------------------------------------------------------

    def latest(self, workspace_id: str) -> Instance | None:
        mine = [i for i in self.instances.values() if i.workspace_id == workspace_id]
        return max(mine, key=lambda i: i.launched_at) if mine else None

    def live(self) -> list[Instance]:
        now = time.time()
        return [i for i in self.instances.values() if i.state(now) != "terminated"]

    def _take_fault(self) -> str | None:
        if self.fault is None:
            return None
        fault = self.fault
        if self.fault_count is not None:
            self.fault_count -= 1
            if self.fault_count <= 0:
                self.fault, self.fault_count = None, None
        return fault

    # -- ASGI ------------------------------------------------------------------------------------

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > REQUEST_CAP:
                await _send(send, 413, {"error": "request body too large"})
                return
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
        status, answer = await self.handle(scope["method"], scope["path"], headers, query, body)
        if isinstance(answer, bytes):
            await _send_raw(send, status, answer)
        else:
            await _send(send, status, answer)

    async def handle(self, method: str, path: str, headers: dict[str, str], query: dict[str, str],
                     raw: bytes) -> tuple[int, Any]:
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError:
            return 400, {"error": "malformed JSON"}
        if path.startswith("/_emulator/"):
            return await self.control(method, path, body)
        if not path.startswith("/cp/"):
            return 404, {"error": "not found"}
        admin = path.startswith("/cp/admin/")
        refused = self.check_auth(headers, admin=admin)
        if refused is not None:
            return 401, {"error": refused}
        fault = self._take_fault()
        self.faulted += fault is not None
        if fault == "5xx":
            return 503, {"error": "control plane unavailable (injected)"}
        if fault == "hang":
            await trio.sleep(self.hang)
        if fault == "malformed":
            return 200, b'{"state": "running", "instance_id": '
        if fault == "oversized":
            return 200, b'{"pad": "' + b"x" * OVERSIZED + b'"}'
        parts = path.strip("/").split("/")
        key = f"{method} /{'/'.join(parts[:2])}" + ("/provision" if parts[-1] == "provision" else "")
        self.calls[key] = self.calls.get(key, 0) + 1
        return await self.route(method, parts, query, body, headers)

    def check_auth(self, headers: dict[str, str], *, admin: bool) -> str | None:
        wanted = self.admin_api_token if admin else self.shared_secret
        if wanted is not None and headers.get("authorization") != f"Bearer {wanted}":
            return "invalid admin bearer" if admin else "invalid shared secret"
        tenant = headers.get("x-molecule-admin-token")
        if not tenant or (self.tenant_admin_token is not None and tenant != self.tenant_admin_token):
            return "invalid tenant admin token"
        return None

    async def route(self, method: str, parts: list[str], query: dict[str, str], body: Any,
                    headers: dict[str, str]) -> tuple[int, Any]:
        now = time.time()
        if method == "POST" and parts == ["cp", "workspaces", "provision"]:
            return await self.provision_instance(body, headers.get("x-molecule-admin-token"))
        if len(parts) >= 3 and parts[:2] == ["cp", "workspaces"]:
            found = self._instance(parts[2], query.get("instance_id"))
            if isinstance(found, tuple):
                return found
            if method == "GET" and parts[3:] == ["status"]:
                return 200, {"state": found.state(now), "tier": found.tier, "launched_at": found.launched_at}
            if method == "DELETE" and len(parts) == 3:
                if found.stop_at is None:
                    found.stop_at, found.stop_for = now, self.stop
                    found.console.append("[emulator] instance shutting down")
                return 200, {"state": found.state(now)}
        if parts[:3] == ["cp", "admin", "workspaces"]:
            if method == "GET" and len(parts) == 3 and self.lists:
                rows = [i.public(now) for i in self.instances.values()
                        if i.org_id == query.get("org_id", i.org_id) and i.box_id == query.get("box_id", i.box_id)]
                return 200, {"instances": rows}
            if method == "GET" and len(parts) == 5 and parts[4] == "console":
                latest = self.latest(parts[3])
                if latest is None:
                    return 404, {"error": "no instance for this workspace"}
                return 200, {"output": "\n".join(latest.console)}
        if method == "GET" and parts == ["cp", "admin", "stats"]:
            by_state: dict[str, int] = {}
            for i in self.instances.values():
                by_state[i.state(now)] = by_state.get(i.state(now), 0) + 1
            return 200, {"instances": by_state}
        return 404, {"error": "not found"}

    def _instance(self, workspace_id: str, instance_id: str | None) -> Instance | tuple[int, Any]:
        if not instance_id:
            return 400, {"error": "instance_id is required"}
        found = self.instances.get(instance_id)
        if found is None:
            return 404, {"error": "unknown instance_id"}
        if found.workspace_id != workspace_id:
            return 409, {"error": "instance_id belongs to another workspace"}
        return found

    async def provision_instance(self, body: Any, tenant_token: str | None) -> tuple[int, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("workspace_id"), str) or not body["workspace_id"]:
            return 400, {"error": "workspace_id is required"}
        tier = body.get("tier")
        if not isinstance(tier, int) or isinstance(tier, bool):
            return 400, {"error": "tier must be an integer"}
        env = body.get("env") or {}
        if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
            return 400, {"error": "env must map names to strings"}
        if self.provision > 0:
            await trio.sleep(self.provision)
        instance = Instance(
            instance_id="i-" + secrets.token_hex(8), workspace_id=body["workspace_id"],
            org_id=str(body.get("org_id") or ""), box_id=str(body.get("box_id") or ""),
            runtime=str(body.get("runtime") or ""), requested_tier=tier, tier=clamp_tier(tier),
            platform_url=str(body.get("platform_url") or ""), env=env, tenant_token=tenant_token,
            launched_at=time.time(), boot=self.boot)
        instance.console += [f"[emulator] launching t3.{'medium' if instance.tier == 3 else 'large'} "
                             f"for workspace {instance.workspace_id}",
                             f"[emulator] molecule runtime {instance.runtime} starting"]
        self.instances[instance.instance_id] = instance
        return 201, {"instance_id": instance.instance_id, "private_ip": "10.0.0.2", "state": "pending",
                     "tier": instance.tier}

    # -- knobs -----------------------------------------------------------------------------------

    async def control(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        parts = path.strip("/").split("/")[1:]
        body = body if isinstance(body, dict) else {}
        now = time.time()
        if method == "GET" and parts == ["instances"]:
            return 200, {"instances": [i.public(now) for i in self.instances.values()], "calls": self.calls,
                         "faulted": self.faulted}
        if method == "GET" and len(parts) == 3 and parts[0] == "instances" and parts[2] == "env":
            found = self.instances.get(parts[1])
            return (200, {"env": found.env}) if found else (404, {"error": "unknown instance_id"})
        if method == "POST" and parts == ["fault"]:
            mode = body.get("mode")
            if mode not in ("5xx", "hang", "malformed", "oversized", "none", None):
                return 400, {"error": "mode must be 5xx, hang, malformed, oversized or none"}
            self.fault = None if mode in ("none", None) else mode
            count = body.get("count")
            self.fault_count = count if isinstance(count, int) and count > 0 else None
            return 200, {"mode": self.fault, "count": self.fault_count}
        if method == "POST" and parts == ["timing"]:
            for name in ("boot", "stop", "provision", "hang"):
                if isinstance(body.get(name), (int, float)):
                    setattr(self, name, float(body[name]))
            return 200, {"boot": self.boot, "stop": self.stop, "provision": self.provision, "hang": self.hang}
        latest = self.latest(str(body.get("workspace_id") or ""))
        if latest is None:
            return 404, {"error": "no instance for this workspace"}
        if method == "POST" and parts == ["terminate"]:
            latest.console.append("[emulator] instance terminated unexpectedly")
            latest.stop_at, latest.stop_for = now, 0.0
            return 200, latest.public(now)
        if method == "POST" and parts == ["crash"]:
            return await self.crash(latest, str(body.get("error") or "runtime exited with status 1"))
        return 404, {"error": "not found"}

    async def crash(self, instance: Instance, error: str) -> tuple[int, Any]:
        """What the CP's bootstrap watcher does on ``RUNTIME CRASHED`` in the console: tell the tenant."""
        instance.console.append(f"RUNTIME CRASHED: {error}")
        tail = "\n".join(instance.console[-20:])
        headers = {"Authorization": f"Bearer {instance.tenant_token}"} if instance.tenant_token else {}
        url = f"{instance.platform_url.rstrip('/')}/admin/workspaces/{instance.workspace_id}/bootstrap-failed"
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                answer = await client.post(url, json={"error": error, "log_tail": tail}, headers=headers)
        except httpx.HTTPError as exc:
            return 502, {"error": f"could not reach the tenant ({type(exc).__name__})"}
        try:
            said = answer.json()
        except ValueError:
            said = None
        return 200, {"tenant_status": answer.status_code, "tenant_body": said}


async def _send(send: Send, status: int, body: Any) -> None:
    await _send_raw(send, status, json.dumps(body).encode())


async def _send_raw(send: Send, status: int, raw: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]})
    await send({"type": "http.response.body", "body": raw})


async def serve(emulator: Emulator, host: str, port: int, *,
                task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``emulator`` with hypercorn on trio until cancelled."""
    from hypercorn.config import Config
    from hypercorn.trio import serve as hypercorn_serve

    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = None
    await hypercorn_serve(emulator.app, config, task_status=task_status)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m molecule_box_controlplane.emulator",
                                     description="A Molecule control-plane emulator (listen on loopback only).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9300)
    parser.add_argument("--shared-secret", help="bearer required on /cp/workspaces/* (MOLECULE_CP_SHARED_SECRET)")
    parser.add_argument("--admin-api-token", help="bearer required on /cp/admin/* (CP_ADMIN_API_TOKEN)")
    parser.add_argument("--tenant-admin-token", help="X-Molecule-Admin-Token required (the box's ADMIN_TOKEN); "
                        "unset: any non-empty one")
    parser.add_argument("--boot", type=float, default=1.0, help="seconds from pending to running")
    parser.add_argument("--stop", type=float, default=0.5, help="seconds from stopping to terminated")
    parser.add_argument("--provision", type=float, default=0.0, help="seconds a provision call takes")
    args = parser.parse_args(argv)
    emulator = Emulator(shared_secret=args.shared_secret, admin_api_token=args.admin_api_token,
                        tenant_admin_token=args.tenant_admin_token, boot=args.boot, stop=args.stop,
                        provision=args.provision)
    print(f"control-plane emulator on http://{args.host}:{args.port}", flush=True)
    try:
        trio.run(serve, emulator, args.host, args.port)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
