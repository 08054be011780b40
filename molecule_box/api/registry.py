"""``/registry``: how agents join (register), stay alive (heartbeat, in :mod:`.hot`) and find peers."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, request

from ..access import can_communicate, peers
from ..actors import commands as c
from ..errors import Forbidden, NotFound
from ..models import Workspace, WorkspaceStatus
from ..schemas import CheckAccess, Register, UpdateCard
from ..security.ssrf import NO_INBOUND, check_agent_url
from .routing import Call, box, find, respond, route

bp = Blueprint("registry", __name__)


@route(bp, "/registry/register", "POST", summary="An agent announces its URL and card; the workspace goes online",
       auth="register", body=Register,
       responses={200: "Registered (auth_token when one was minted)", 400: "Bad body or unsafe URL",
                  401: "Token required or wrong", 404: "Unknown or deleted workspace"},
       id_from=lambda body, _: body.id)
async def register(call: Call[Register]) -> Any:
    b = box()
    body, wid = call.body, call.workspace_id
    ws = find(wid)
    if ws is None or ws.status is WorkspaceStatus.REMOVED:  # only the admin or a former token of it gets here
        raise NotFound("workspace not found", deleted=ws is not None)
    mint = call.principal.is_admin
    bootstrap_from = (request.remote_addr or "unknown") if call.principal.kind == "bootstrap" else None
    url = await check_agent_url(body.url or NO_INBOUND, b.settings.allow_agent_networks)
    return respond(await b.supervisor.ask(wid, c.Register(url, body.agent_card, mint, bootstrap_from,
                                                          token_id=call.principal.token_id)))


@route(bp, "/registry/update-card", "POST", summary="Replace the agent card", auth="workspace", body=UpdateCard,
       id_from=lambda body, _: body.workspace_id)
async def update_card(call: Call[UpdateCard]) -> Any:
    return respond(await box().supervisor.ask(call.workspace_id, c.UpdateCard(call.body.agent_card)))


def _lookup(wid: str) -> Workspace | None:
    return box().supervisor.record(wid)


@route(bp, "/registry/discover/<raw_id>", "GET", summary="Resolve a peer's URL (hierarchy rules apply)",
       auth="caller", responses={200: "{id, url, name}", 403: "Not allowed by hierarchy", 404: "Unknown or no URL"},
       load="live")
async def discover(call: Call[None]) -> Any:
    target_id, target, principal = call.workspace_id, call.ws, call.principal
    if not principal.is_admin and not can_communicate(_lookup, principal.workspace_id or "", target_id):
        raise Forbidden("not authorized to discover this workspace")
    if not target.url or target.url == NO_INBOUND:
        raise NotFound("workspace has no inbound URL; call it through the box",
                       proxy_url=f"{request.host_url.rstrip('/')}/workspaces/{target_id}/a2a",
                       status=target.status.value)
    return respond({"id": target.id, "url": target.url, "name": target.name})


@route(bp, "/registry/<raw_id>/peers", "GET", summary="Siblings, children and parent of a workspace",
       auth="workspace", query={"q": "case-insensitive filter on name or role"}, load="live")
async def list_peers(call: Call[None]) -> Any:
    b, ws = box(), call.ws
    q = (request.args.get("q") or "").lower()
    out = []
    for peer in peers(b.supervisor.records(), ws):
        if q and q not in peer.name.lower() and q not in (peer.role or "").lower():
            continue
        out.append({"id": peer.id, "name": peer.name, "role": peer.role, "tier": peer.tier,
                    "status": peer.status.value, "url": peer.url or "", "parent_id": peer.parent_id,
                    "active_tasks": peer.active_tasks, "agent_card": peer.agent_card})
    return respond(out)


@route(bp, "/registry/check-access", "POST", summary="Whether caller may talk to target (caller_id's token)",
       auth="workspace", body=CheckAccess,
       responses={200: "{allowed}: false alike for an unknown target and a forbidden one",
                  401: "No token, or not caller_id's (whether or not caller_id exists)"},
       id_from=lambda body, _: body.caller_id)
async def check_access(call: Call[CheckAccess]) -> Any:
    """Open on the platform, where it tells anyone which ids exist (``{X, X}`` is allowed exactly when X
    exists, two roots exactly when both do). Here the caller proves it is ``caller_id``, so the answer is
    about its own reach only, and an unknown target looks like a forbidden one."""
    return respond({"allowed": can_communicate(_lookup, call.body.caller_id, call.body.target_id)})
