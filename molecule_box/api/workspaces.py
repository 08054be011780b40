"""``/workspaces``: create, list, get, patch, delete and the lifecycle verbs (reference §2.3)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import trio
from quart import Blueprint, request

from ..actors import commands as c
from ..errors import BackendError, BadRequest, Conflict, Forbidden, NotFound, ServiceUnavailable
from ..models import Workspace, WorkspaceStatus
from ..schemas import CreateWorkspace, Empty, PatchWorkspace, Restart
from ..security import tokens as tk
from ..security.ssrf import check_agent_url
from ..store import events as event_rows
from ..store import tokens as token_rows
from ..store import workspaces as workspace_rows
from .auth import bearer_from, may_learn_removal, require_admin, require_workspace
from .routing import box, parse, query_bool, respond, route

bp = Blueprint("workspaces", __name__)
S = WorkspaceStatus

#: How long a bootstrap opened at create (``"bootstrap": "open"``) waits for its agent's first register, seconds.
BOOTSTRAP_EXPIRES_IN = 3600
#: PATCH fields that change who may talk to whom, or what the workspace may consume: the admin's alone.
ADMIN_FIELDS = frozenset({"parent_id", "tier", "runtime", "max_concurrent_tasks", "budget_limit", "workspace_dir"})
#: Restart options that change what the container is built from: the admin's alone.
ADMIN_RESTART_OPTIONS = ("template", "apply_template", "reset", "rebuild_config")


def workspace_id(raw: str) -> str:
    """A path id as a canonical UUID string, or 400 (never a lookup with attacker-shaped text)."""
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise BadRequest("invalid workspace ID") from None


def load(wid: str) -> Workspace:
    ws = box().supervisor.record(wid) or workspace_rows.get(box().store.db, wid)
    if ws is None:
        raise NotFound("workspace not found")
    return ws


def live(wid: str) -> Workspace:
    """:func:`load`, but a removed workspace is not found either (routes that act on a workspace)."""
    ws = load(wid)
    if ws.status is S.REMOVED:
        raise NotFound("workspace not found")
    return ws


def paused_ancestor(ws: Workspace) -> Workspace | None:
    seen = {ws.id}
    parent = ws.parent_id
    while parent and parent not in seen:
        seen.add(parent)
        node = box().supervisor.record(parent) or workspace_rows.get(box().store.db, parent)
        if node is None:
            return None
        if node.status is S.PAUSED:
            return node
        parent = node.parent_id
    return None


def platform_url_for_agents() -> str:
    configured = box().settings.external_platform_url
    return configured or request.host_url.rstrip("/")


#: Where the platform SDK keeps a workspace's token (RemoteAgentClient's default token_dir).
TOKEN_FILE = "~/.molecule/<workspace id>/.auth_token"
#: What an agent author needs next: the SDK's loop (heartbeat, inbox poll, state poll) with a handler.
AGENT_LOOP = (
    "\n"
    "def handle(message, client):\n"
    "    # Each message sent to this agent; a returned string is sent back as the reply.\n"
    "    return f'echo: {message.text}'\n"
    "\n"
    "# Heartbeats every 30 s and polls for messages every 5 s; returns once the workspace is paused or deleted.\n"
    "client.run_agent_loop(handle)\n"
)


def connection_block(wid: str, token: str | None, bootstrap_expires_at: float | None = None) -> dict[str, Any]:
    """What the operator hands to the agent. With a token (the default) both snippets send it from
    ``$MOLECULE_TOKEN``: the SDK's register sends no bearer of its own, so the snippet gives it a session
    that carries one. Without (bootstrap ``open``) they register bare and the box mints the first token."""
    from ..models import rfc3339

    base = platform_url_for_agents()
    register = {"id": wid, "url": "https://your-agent.example.com", "agent_card": {"name": "my-agent"}}
    client = f"client = RemoteAgentClient(workspace_id={wid!r}, platform_url={base!r}"
    curl = f"curl -fsS -X POST {base}/registry/register -H 'Content-Type: application/json' "
    block: dict[str, Any] = {
        "workspace_id": wid,
        "platform_url": base,
        "auth_token": token or "",
        "registry_endpoint": f"{base}/registry/register",
        "heartbeat_endpoint": f"{base}/registry/heartbeat",
        # molecule-box addition: an agent without the SDK heartbeats with this every 30 s.
        "curl_heartbeat_template": (
            f"curl -fsS -X POST {base}/registry/heartbeat -H 'Content-Type: application/json' "
            f'-H "Authorization: Bearer $MOLECULE_TOKEN" -d \'{json.dumps({"workspace_id": wid})}\''
        ),
    }
    if token is None:
        block.update(
            bootstrap="open", bootstrap_expires_at=rfc3339(bootstrap_expires_at),
            curl_register_template=f"{curl}-d '{json.dumps(register)}'",
            python_snippet=(
                "from molecule_agent import RemoteAgentClient\n"
                f"{client})\n"
                f"client.register()  # the first register mints the token; the SDK keeps it in {TOKEN_FILE}\n"
                f"{AGENT_LOOP}"
            ),
        )
        return block
    block.update(
        curl_register_template=f'{curl}-H "Authorization: Bearer $MOLECULE_TOKEN" -d \'{json.dumps(register)}\'',
        python_snippet=(
            "import os\n"
            "import requests\n"
            "from molecule_agent import RemoteAgentClient\n"
            "token = os.environ['MOLECULE_TOKEN']\n"
            "session = requests.Session()\n"
            "session.headers['Authorization'] = f'Bearer {token}'  # the SDK's register sends none of its own\n"
            f"{client}, session=session)\n"
            f"client.save_token(token)  # kept in {TOKEN_FILE} (0600) for the SDK's later calls\n"
            "client.register()\n"
            f"{AGENT_LOOP}"
        ),
    )
    return block


@route(bp, "/workspaces", "POST", summary="Create a workspace", auth="admin", body=CreateWorkspace,
       responses={201: "Created", 400: "Invalid body, tier, parent or agent URL"})
async def create_workspace() -> Any:
    b = box()
    await require_admin(b)
    body: CreateWorkspace = await parse(CreateWorkspace)
    external = body.external or body.runtime == "external"
    runtime = "external" if external else (body.runtime or "langgraph")
    backend_name = b.backend_for(runtime=runtime, external=external, requested=body.backend)
    backend = await b.backends.get(backend_name)
    caps = backend.capabilities()
    tier = body.tier or 3
    if tier not in caps.tiers:
        raise BadRequest(f"tier {tier} is not supported by backend {backend_name} (supported: "
                         f"{', '.join(map(str, sorted(caps.tiers)))})")
    try:
        backend.admit(runtime=runtime, tier=tier)
    except BackendError as exc:
        raise BadRequest(exc.reason, code="workload_refused", backend=backend_name) from None
    if body.workspace_access != "none" and not body.workspace_dir:
        raise BadRequest("invalid workspace access: read_only and read_write need workspace_dir")
    if body.parent_id is not None:
        parent = b.supervisor.record(body.parent_id)
        if parent is None:
            raise BadRequest("invalid parent_id: no such workspace")
    if body.bootstrap == "open" and caps.lifecycle:
        raise BadRequest(f"bootstrap 'open' is for remote agents: {backend_name} workspaces get their token "
                         "from the box")
    if body.bootstrap_expires_in is not None and body.bootstrap != "open":
        raise BadRequest("bootstrap_expires_in needs bootstrap 'open'")
    url = None
    if external and body.url:
        url = await check_agent_url(body.url, b.settings.allow_agent_networks)
    now = b.now()
    wid = str(uuid.uuid4())
    if not caps.lifecycle:
        status = S.ONLINE if url else S.AWAITING_AGENT
    else:
        status = S.PROVISIONING
    config: dict[str, Any] = {}
    if body.model:
        config["model"] = body.model
    if body.template:
        config["template"] = body.template
    ws = Workspace(
        id=wid, name=body.name, role=body.role or None, tier=tier, status=status, runtime=runtime,
        backend=backend_name, url=url, parent_id=body.parent_id, budget_limit=body.budget_limit,
        max_concurrent_tasks=max(1, body.max_concurrent_tasks or 1), workspace_dir=body.workspace_dir,
        workspace_access=body.workspace_access, config=config or None,
        x=body.canvas.x if body.canvas else None, y=body.canvas.y if body.canvas else None,
        created_at=now, updated_at=now, status_changed_at=now,
    )
    ops: list[Any] = [workspace_rows.insert(ws)]
    for key, value in (body.secrets or {}).items():
        ops.append(b.vault.put(wid, key, value))
    token = None
    bootstrap_expires_at = None
    # A box-run workload gets its token from the box at each start; a remote workspace, with or without a URL,
    # is never without a token nor open unless the operator asked.
    if not caps.lifecycle and body.bootstrap == "open":
        bootstrap_expires_at = now + (body.bootstrap_expires_in or BOOTSTRAP_EXPIRES_IN)
        ops.append(token_rows.open_bootstrap(wid, bootstrap_expires_at))
    elif not caps.lifecycle:
        token = tk.mint()
        ops.append(token_rows.insert(wid, token.digest, token.prefix))
    event_type = {S.ONLINE: "WORKSPACE_ONLINE", S.AWAITING_AGENT: "WORKSPACE_AWAITING_AGENT"}.get(
        status, "WORKSPACE_PROVISIONING")
    payload: dict[str, Any] = {"name": ws.name, "tier": tier, "runtime": runtime}
    if not caps.lifecycle:
        payload = {"name": ws.name, "external": True}
    event = b.bus.make(event_type, wid, payload)
    ops.append(event_rows.insert(event))
    await b.store.write(lambda db: [op(db) for op in ops])
    b.supervisor.spawn(ws)
    b.bus.publish(event)
    if status is S.PROVISIONING:
        return respond({"id": wid, "status": status.value, "awareness_namespace": f"workspace:{wid}",
                        "workspace_access": ws.workspace_access, "backend": backend_name}, 201)
    result: dict[str, Any] = {"id": wid, "external": True, "status": status.value, "backend": backend_name,
                              "connection": connection_block(wid, token.plaintext if token else None,
                                                             bootstrap_expires_at)}
    return respond(result, 201)


@route(bp, "/workspaces", "GET", summary="List workspaces (not removed), oldest first", auth="admin")
async def list_workspaces() -> Any:
    b = box()
    await require_admin(b)
    return respond([ws.public() for ws in workspace_rows.all_live(b.store.db)])


@route(bp, "/workspaces/<raw_id>", "GET", summary="Get one workspace (removed ones too)", auth="workspace",
       responses={200: "OK", 400: "Invalid id", 404: "Unknown workspace"})
async def get_workspace(raw_id: str) -> Any:
    wid = workspace_id(raw_id)
    await require_workspace(box(), wid)
    return respond(load(wid).public(detail=False))


@route(bp, "/workspaces/<raw_id>", "PATCH", summary="Change name, role, canvas position; the admin also tier, "
       "parent, runtime, limits", auth="workspace", body=PatchWorkspace,
       responses={200: "Updated", 400: "Invalid field", 403: "An admin-only field with the workspace's own token",
                  404: "Unknown workspace"})
async def patch_workspace(raw_id: str) -> Any:
    b = box()
    wid = workspace_id(raw_id)
    principal = await require_workspace(b, wid)
    body: PatchWorkspace = await parse(PatchWorkspace)
    ws = live(wid)
    refused = sorted(ADMIN_FIELDS & body.model_fields_set)
    if refused and not principal.is_admin:
        # With its own token a workspace could otherwise leave its place in the hierarchy (the only thing
        # between workspaces) or raise its own tier and limits (#10).
        raise Forbidden(f"only the admin may change {', '.join(refused)}", fields=refused)
    changes: dict[str, Any] = {}
    for name in body.model_fields_set - {"x", "y"}:
        changes[name] = getattr(body, name)
    if "x" in body.model_fields_set and "y" in body.model_fields_set:
        changes.update(x=body.x, y=body.y)
    if "name" in changes and not changes["name"]:
        raise BadRequest("name may not be empty")
    for name in ("tier", "runtime", "max_concurrent_tasks"):
        if name in changes and changes[name] is None:
            raise BadRequest(f"{name} may not be null")
    if changes.get("parent_id") is not None:
        parent = changes["parent_id"]
        if parent == wid or parent in workspace_rows.descendants(b.store.db, wid):
            raise BadRequest("invalid parent_id: a workspace cannot be its own ancestor")
        if b.supervisor.record(parent) is None:
            raise BadRequest("invalid parent_id: no such workspace")
    if "tier" in changes:
        caps = (await b.backends.get(ws.backend)).capabilities()
        if changes["tier"] not in caps.tiers:
            raise BadRequest(f"tier {changes['tier']} is not supported by backend {ws.backend}")
    if "collapsed" in changes:
        changes["collapsed"] = bool(changes["collapsed"])
    return respond(await b.supervisor.ask(wid, c.Patch(changes)))


@route(bp, "/workspaces/<raw_id>", "DELETE", summary="Delete a workspace and its descendants", auth="admin",
       responses={200: "Removed", 404: "Unknown workspace", 409: "Has children; pass ?confirm=true"},
       query={"confirm": "true to delete a workspace that has children", "purge": "true to hard-delete rows"})
async def delete_workspace(raw_id: str) -> Any:
    b = box()
    await require_admin(b)
    wid = workspace_id(raw_id)
    ws = load(wid)
    if ws.status is S.REMOVED and not query_bool("purge"):
        return respond({"status": "removed", "cascade_deleted": 0})
    kids = workspace_rows.children(b.store.db, wid)
    if kids and not query_bool("confirm"):
        return respond({"status": "confirmation_required",
                        "message": f"workspace has {len(kids)} child workspace(s); pass ?confirm=true to delete all",
                        "children": kids, "children_count": len(kids)}, 409)
    family = [wid, *workspace_rows.descendants(b.store.db, wid)]
    cascade = len(family) - 1
    async with trio.open_nursery() as nursery:
        for member in family:
            payload = {"cascade_deleted": cascade} if member == wid else {}
            if b.supervisor.record(member) is not None:
                nursery.start_soon(b.supervisor.ask, member, c.Delete(payload=payload))
    if query_bool("purge"):
        await _purge(family)
        return respond({"status": "purged", "cascade_deleted": cascade})
    return respond({"status": "removed", "cascade_deleted": cascade})


async def _purge(family: list[str]) -> None:
    b = box()
    with trio.move_on_after(30):
        while any(member in b.supervisor.slots for member in family):
            await trio.sleep(0.05)
    if any(member in b.supervisor.slots for member in family):
        raise ServiceUnavailable("workloads are still being cleaned up; retry the purge", retry_after=10)
    await b.store.write(workspace_rows.purge(family), bulk=True)  # a workspace's activity and events can be many rows


@route(bp, "/workspaces/<raw_id>/state", "GET", summary="Status poll for remote agents", auth="workspace",
       responses={200: "Live", 404: "Deleted: the agent should shut down"})
async def workspace_state(raw_id: str) -> Any:
    b = box()
    wid = workspace_id(raw_id)
    ws = b.supervisor.record(wid) or workspace_rows.get(b.store.db, wid)
    gone = {"workspace_id": wid, "status": "removed", "deleted": True}
    if ws is None:
        await require_admin_or_any_token(wid)
        return respond(gone, 404)
    if ws.status is S.REMOVED:
        # Its tokens were revoked on delete; a revoked token of this very workspace still learns it is gone.
        await require_admin_or_any_token(wid)
        return respond(gone, 404)
    await require_workspace(b, wid)
    return respond({"workspace_id": wid, "status": ws.status.value, "paused": ws.status is S.PAUSED,
                    "deleted": False})


async def require_admin_or_any_token(wid: str) -> None:
    """For a deleted workspace: the admin, or any token (even revoked) that belonged to it."""
    b = box()
    if not may_learn_removal(b, bearer_from(request.headers), wid):
        await require_workspace(b, wid)


async def _fan_out(ids: list[str], make: Any) -> int:
    b = box()
    done = 0

    async def one(member: str) -> None:
        nonlocal done
        try:
            await b.supervisor.ask(member, make())
            done += 1
        except NotFound:
            pass

    async with trio.open_nursery() as nursery:
        for member in ids:
            nursery.start_soon(one, member)
    return done


@route(bp, "/workspaces/<raw_id>/pause", "POST", summary="Pause a workspace and its descendants", auth="workspace",
       responses={200: "Paused", 404: "Unknown or already paused"})
async def pause_workspace(raw_id: str) -> Any:
    b = box()
    wid = workspace_id(raw_id)
    await require_workspace(b, wid)
    await parse(Empty)
    await b.supervisor.ask(wid, c.Pause())
    kids = [k for k in workspace_rows.descendants(b.store.db, wid)
            if (r := b.supervisor.record(k)) is not None and r.status is not S.PAUSED]
    count = 1 + await _fan_out(kids, c.Pause)
    return respond({"status": "paused", "paused_count": count})


@route(bp, "/workspaces/<raw_id>/resume", "POST", summary="Resume a paused (or wake a hibernated) workspace",
       auth="workspace", responses={200: "Resuming", 404: "Not paused", 409: "An ancestor is paused"})
async def resume_workspace(raw_id: str) -> Any:
    b = box()
    wid = workspace_id(raw_id)
    await require_workspace(b, wid)
    await parse(Empty)
    ws = load(wid)
    blocker = paused_ancestor(ws)
    if blocker is not None:
        raise Conflict(f'parent workspace "{blocker.name}" is paused — resume it first')
    result = await b.supervisor.ask(wid, c.Resume())
    kids = [k for k in workspace_rows.descendants(b.store.db, wid)
            if (r := b.supervisor.record(k)) is not None and r.status is S.PAUSED]
    count = 1 + await _fan_out(kids, c.Resume)
    return respond({"status": result["status"], "resumed_count": count})


@route(bp, "/workspaces/<raw_id>/hibernate", "POST", summary="Hibernate an idle workspace", auth="workspace",
       responses={200: "Hibernated", 404: "Not online", 409: "Has active tasks"},
       query={"force": "true to hibernate despite active tasks"})
async def hibernate_workspace(raw_id: str) -> Any:
    b = box()
    wid = workspace_id(raw_id)
    await require_workspace(b, wid)
    await parse(Empty)
    return respond(await b.supervisor.ask(wid, c.Hibernate(force=query_bool("force"))))


@route(bp, "/workspaces/<raw_id>/wake", "POST", summary="Wake a hibernated workspace (molecule-box addition)",
       auth="workspace", responses={200: "Waking", 409: "Not hibernated"})
async def wake_workspace(raw_id: str) -> Any:
    b = box()
    wid = workspace_id(raw_id)
    await require_workspace(b, wid)
    await parse(Empty)
    return respond(await b.supervisor.ask(wid, c.Wake()))


@route(bp, "/workspaces/<raw_id>/restart", "POST", summary="Restart a box-run workspace's workload",
       auth="workspace", body=Restart,
       responses={200: "Provisioning", 403: "Body options with the workspace's own token (admin-only)",
                  404: "Unknown", 409: "Ancestor paused, or a remote agent"})
async def restart_workspace(raw_id: str) -> Any:
    b = box()
    wid = workspace_id(raw_id)
    principal = await require_workspace(b, wid)
    body: Restart = await parse(Restart)
    refused = [name for name in ADMIN_RESTART_OPTIONS if getattr(body, name)]
    if refused and not principal.is_admin:
        # A restart by the agent rebuilds exactly the container the admin configured (#10).
        raise Forbidden(f"only the admin may restart with {', '.join(refused)}", fields=refused)
    ws = live(wid)
    blocker = paused_ancestor(ws)
    if blocker is not None:
        raise Conflict(f'parent workspace "{blocker.name}" is paused — resume it first')
    return respond(await b.supervisor.ask(wid, c.Restart()))


@route(bp, "/workspaces/<raw_id>/failures", "GET", auth="workspace",
       summary="Why a workspace failed: its failure reason and recent actor errors (molecule-box addition)")
async def workspace_failures(raw_id: str) -> Any:
    from ..models import rfc3339

    b = box()
    wid = workspace_id(raw_id)
    await require_workspace(b, wid)
    ws = load(wid)
    rows = event_rows.actor_failures(b.store.db, wid)
    return respond({"workspace_id": wid, "status": ws.status.value, "failure_reason": ws.failure_reason,
                    "actor_failures": [{"error": r["error"], "at": rfc3339(r["created_at"])} for r in rows],
                    "checked_at": rfc3339(time.time())})


@route(bp, "/workspaces/<raw_id>/logs", "GET", auth="workspace", query={"tail": "lines, 1-10000, default 200"},
       summary="The workload's recent output (backends with the logs capability)",
       responses={200: "{workspace_id, logs}", 409: "The backend keeps no logs (e.g. remote agents)"})
async def workspace_logs(raw_id: str) -> Any:
    from .routing import query_int

    b = box()
    wid = workspace_id(raw_id)
    await require_workspace(b, wid)
    ws = load(wid)
    backend = await b.backends.get(ws.backend)
    if not backend.capabilities().logs:
        raise Conflict(f"the {ws.backend} backend keeps no logs for this workspace")
    tail = query_int("tail", 200, low=1, high=10000)
    with trio.fail_after(30):
        text = await backend.logs(ws.backend_state or {"workspace_id": wid}, tail=tail)
    return respond({"workspace_id": wid, "logs": text})
