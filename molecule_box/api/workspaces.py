"""``/workspaces``: create, list, get, patch, delete and the lifecycle verbs."""

from __future__ import annotations

import json
import time
from typing import Any

import trio
from quart import Blueprint, request

from ..actors import commands as c
from ..errors import BadRequest, Conflict, Forbidden
from ..models import WorkspaceStatus
from ..schemas import CreateWorkspace, Empty, Migrate, PatchWorkspace, Restart
from ..store import events as event_rows
from ..store import workspaces as workspace_rows
from .routing import Call, box, find, query_bool, respond, route

bp = Blueprint("workspaces", __name__)
S = WorkspaceStatus

#: PATCH fields that change who may talk to whom, or what the workspace may consume: the admin's alone.
ADMIN_FIELDS = frozenset({"parent_id", "tier", "runtime", "max_concurrent_tasks", "budget_limit", "workspace_dir"})
#: Restart options that change what the container is built from: the admin's alone.
ADMIN_RESTART_OPTIONS = ("template", "apply_template", "reset", "rebuild_config")


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
async def create_workspace(call: Call[CreateWorkspace]) -> Any:
    b = box()
    created = await b.supervisor.create(call.body)
    ws = created.workspace
    if ws.status is S.PROVISIONING:
        return respond({"id": ws.id, "status": ws.status.value, "awareness_namespace": f"workspace:{ws.id}",
                        "workspace_access": ws.workspace_access, "backend": ws.backend}, 201)
    result: dict[str, Any] = {"id": ws.id, "external": True, "status": ws.status.value, "backend": ws.backend,
                              "connection": connection_block(ws.id, created.token, created.bootstrap_expires_at)}
    return respond(result, 201)


@route(bp, "/workspaces", "GET", summary="List workspaces (not removed), oldest first", auth="admin")
async def list_workspaces(call: Call[None]) -> Any:
    return respond([ws.public() for ws in workspace_rows.all_live(box().store.db)])


@route(bp, "/workspaces/<raw_id>", "GET", summary="Get one workspace (removed ones too)", auth="workspace",
       responses={200: "OK", 400: "Invalid id", 404: "Unknown workspace"}, load="any")
async def get_workspace(call: Call[None]) -> Any:
    return respond(call.ws.public(detail=False))


@route(bp, "/workspaces/<raw_id>", "PATCH", summary="Change name, role, canvas position; the admin also tier, "
       "parent, runtime, limits", auth="workspace", body=PatchWorkspace,
       responses={200: "Updated", 400: "Invalid field", 403: "An admin-only field with the workspace's own token",
                  404: "Unknown workspace"}, load="live")
async def patch_workspace(call: Call[PatchWorkspace]) -> Any:
    b = box()
    wid, principal, body, ws = call.workspace_id, call.principal, call.body, call.ws
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
       query={"confirm": "true to delete a workspace that has children", "purge": "true to hard-delete rows"},
       load="any")
async def delete_workspace(call: Call[None]) -> Any:
    b = box()
    wid, ws = call.workspace_id, call.ws
    if ws.status is S.REMOVED and not query_bool("purge"):
        return respond({"status": "removed", "cascade_deleted": 0})
    kids = workspace_rows.children(b.store.db, wid)
    if kids and not query_bool("confirm"):
        return respond({"status": "confirmation_required",
                        "message": f"workspace has {len(kids)} child workspace(s); pass ?confirm=true to delete all",
                        "children": kids, "children_count": len(kids)}, 409)
    purge = query_bool("purge")
    cascade = await b.supervisor.delete_tree(wid, purge=purge)
    return respond({"status": "purged" if purge else "removed", "cascade_deleted": cascade})


@route(bp, "/workspaces/<raw_id>/state", "GET", summary="Status poll for remote agents", auth="state",
       responses={200: "Live", 404: "Deleted: the agent should shut down"})
async def workspace_state(call: Call[None]) -> Any:
    wid = call.workspace_id
    ws = find(wid)
    if ws is None or ws.status is S.REMOVED:
        # Its tokens were revoked on delete; a revoked token of this very workspace still learns it is gone.
        return respond({"workspace_id": wid, "status": "removed", "deleted": True}, 404)
    return respond({"workspace_id": wid, "status": ws.status.value, "paused": ws.status is S.PAUSED,
                    "deleted": False})


@route(bp, "/workspaces/<raw_id>/pause", "POST", summary="Pause a workspace and its descendants", auth="workspace",
       body=Empty, responses={200: "Paused", 404: "Unknown or already paused"})
async def pause_workspace(call: Call[Empty]) -> Any:
    b = box()
    wid = call.workspace_id
    return respond({"status": "paused", "paused_count": await b.supervisor.pause_tree(wid)})


@route(bp, "/workspaces/<raw_id>/resume", "POST", summary="Resume a paused (or wake a hibernated) workspace",
       auth="workspace", body=Empty, load="any",
       responses={200: "Resuming", 404: "Not paused", 409: "An ancestor is paused"})
async def resume_workspace(call: Call[Empty]) -> Any:
    b = box()
    status, count = await b.supervisor.resume_tree(call.workspace_id)
    return respond({"status": status, "resumed_count": count})


@route(bp, "/workspaces/<raw_id>/hibernate", "POST", summary="Hibernate an idle workspace", auth="workspace",
       responses={200: "Hibernated", 404: "Not online", 409: "Has active tasks"},
       query={"force": "true to hibernate despite active tasks"}, body=Empty)
async def hibernate_workspace(call: Call[Empty]) -> Any:
    b = box()
    wid = call.workspace_id
    return respond(await b.supervisor.ask(wid, c.Hibernate(force=query_bool("force"))))


@route(bp, "/workspaces/<raw_id>/wake", "POST", summary="Wake a hibernated workspace (molecule-box addition)",
       auth="workspace", body=Empty, responses={200: "Waking", 409: "Not hibernated, or an ancestor is paused"})
async def wake_workspace(call: Call[Empty]) -> Any:
    b = box()
    return respond(await b.supervisor.wake(call.workspace_id))


@route(bp, "/workspaces/<raw_id>/restart", "POST", summary="Restart a box-run workspace's workload",
       auth="workspace", body=Restart,
       responses={200: "Provisioning", 403: "Body options with the workspace's own token (admin-only)",
                  404: "Unknown", 409: "Ancestor paused, or a remote agent"}, load="live")
async def restart_workspace(call: Call[Restart]) -> Any:
    b = box()
    wid, principal, body = call.workspace_id, call.principal, call.body
    refused = [name for name in ADMIN_RESTART_OPTIONS if getattr(body, name)]
    if refused and not principal.is_admin:
        # A restart by the agent rebuilds exactly the container the admin configured (#10).
        raise Forbidden(f"only the admin may restart with {', '.join(refused)}", fields=refused)
    return respond(await b.supervisor.restart(wid))


@route(bp, "/admin/workspaces/<raw_id>/migrate", "POST", auth="admin", body=Migrate, load="live",
       summary="Move a box-run workspace to another backend, the new workload online before the old one stops "
               "(molecule-box addition)",
       responses={200: "Moving (or already there)", 400: "Backend not installed or refusing the workspace",
                  404: "Unknown", 409: "Not online, busy, or a remote agent"})
async def migrate_workspace(call: Call[Migrate]) -> Any:
    return respond(await box().supervisor.migrate(call.workspace_id, call.body.to))


@route(bp, "/workspaces/<raw_id>/failures", "GET", auth="workspace", load="any",
       summary="Why a workspace failed: its failure reason and recent actor errors (molecule-box addition)")
async def workspace_failures(call: Call[None]) -> Any:
    from ..models import rfc3339

    b = box()
    wid, ws = call.workspace_id, call.ws
    rows = event_rows.actor_failures(b.store.db, wid)
    return respond({"workspace_id": wid, "status": ws.status.value, "failure_reason": ws.failure_reason,
                    "actor_failures": [{"error": r["error"], "at": rfc3339(r["created_at"])} for r in rows],
                    "checked_at": rfc3339(time.time())})


@route(bp, "/workspaces/<raw_id>/logs", "GET", auth="workspace", load="any",
       query={"tail": "lines, 1-10000, default 200"},
       summary="The workload's recent output (backends with the logs capability)",
       responses={200: "{workspace_id, logs}", 409: "The backend keeps no logs (e.g. remote agents)"})
async def workspace_logs(call: Call[None]) -> Any:
    from .routing import query_int

    b = box()
    wid, ws = call.workspace_id, call.ws
    backend = await b.backends.get(ws.backend)
    if not backend.capabilities().logs:
        raise Conflict(f"the {ws.backend} backend keeps no logs for this workspace")
    tail = query_int("tail", 200, low=1, high=10000)
    with trio.fail_after(30):
        text = await backend.logs(ws.backend_state or {"workspace_id": wid}, tail=tail)
    return respond({"workspace_id": wid, "logs": text})
