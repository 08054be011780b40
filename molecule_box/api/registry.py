"""``/registry``: how agents join (register), stay alive (heartbeat, in :mod:`.hot`) and find peers (§3)."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, request

from ..access import can_communicate, peers
from ..actors import commands as c
from ..errors import Forbidden, NotFound, Unauthorized
from ..models import WorkspaceStatus
from ..schemas import CheckAccess, Register, UpdateCard
from ..security.ssrf import NO_INBOUND, check_agent_url
from ..store import tokens as token_rows
from ..store import workspaces as workspace_rows
from .auth import bearer_from, identify, may_learn_removal, require_caller, require_workspace
from .routing import box, parse, respond, route
from .workspaces import workspace_id

bp = Blueprint("registry", __name__)


@route(bp, "/registry/register", "POST", summary="An agent announces its URL and card; the workspace goes online",
       auth="register", body=Register,
       responses={200: "Registered (auth_token when one was minted)", 400: "Bad body or unsafe URL",
                  401: "Token required or wrong", 404: "Unknown or deleted workspace"})
async def register() -> Any:
    b = box()
    body: Register = await parse(Register)
    wid = body.id
    ws = b.supervisor.record(wid) or workspace_rows.get(b.store.db, wid)
    token = bearer_from(request.headers)
    if ws is None or ws.status is WorkspaceStatus.REMOVED:
        # Only the admin and the workspace's own (revoked) token learn that it is unknown or gone; anyone else
        # gets the refusal a known workspace gives, so register is no existence check (#10 item 11).
        if may_learn_removal(b, token, wid):
            raise NotFound("workspace not found", deleted=ws is not None)
        b.metrics.auth_failures.inc()
        raise Unauthorized("missing workspace auth token" if token is None else "invalid workspace auth token")
    bootstrap_from = None
    if token is None:
        # The SDK's bootstrap, only where the operator opened it at create (and before its first token).
        if not token_rows.bootstrap_open(b.store.db, wid, b.now()):
            b.metrics.auth_failures.inc()
            raise Unauthorized("missing workspace auth token")
        mint, bootstrap_from = False, request.remote_addr or "unknown"
    else:
        principal = await identify(b, token, proof_of_life=False)  # a register is one itself
        if principal is None or (not principal.is_admin and principal.workspace_id != wid):
            b.metrics.auth_failures.inc()
            raise Unauthorized("invalid workspace auth token")
        mint = principal.is_admin
    url = await check_agent_url(body.url or NO_INBOUND, b.settings.allow_agent_networks)
    return respond(await b.supervisor.ask(wid, c.Register(url, body.agent_card, mint, bootstrap_from)))


@route(bp, "/registry/update-card", "POST", summary="Replace the agent card", auth="workspace", body=UpdateCard)
async def update_card() -> Any:
    b = box()
    body: UpdateCard = await parse(UpdateCard)
    await require_workspace(b, body.workspace_id)
    return respond(await b.supervisor.ask(body.workspace_id, c.UpdateCard(body.agent_card)))


def _lookup(wid: str) -> Any:
    return box().supervisor.record(wid)


@route(bp, "/registry/discover/<raw_id>", "GET", summary="Resolve a peer's URL (hierarchy rules apply)",
       auth="caller", responses={200: "{id, url, name}", 403: "Not allowed by hierarchy", 404: "Unknown or no URL"})
async def discover(raw_id: str) -> Any:
    b = box()
    target_id = workspace_id(raw_id)
    principal = await require_caller(b)
    target = b.supervisor.record(target_id)
    if target is None:
        raise NotFound("workspace not found")
    if not principal.is_admin and not can_communicate(_lookup, principal.workspace_id or "", target_id):
        raise Forbidden("not authorized to discover this workspace")
    if not target.url or target.url == NO_INBOUND:
        raise NotFound("workspace has no inbound URL; call it through the box",
                       proxy_url=f"{request.host_url.rstrip('/')}/workspaces/{target_id}/a2a",
                       status=target.status.value)
    return respond({"id": target.id, "url": target.url, "name": target.name})


@route(bp, "/registry/<raw_id>/peers", "GET", summary="Siblings, children and parent of a workspace",
       auth="workspace", query={"q": "case-insensitive filter on name or role"})
async def list_peers(raw_id: str) -> Any:
    b = box()
    wid = workspace_id(raw_id)
    await require_workspace(b, wid)
    ws = b.supervisor.record(wid)
    if ws is None:
        raise NotFound("workspace not found")
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
                  401: "No token, or not caller_id's (whether or not caller_id exists)"})
async def check_access() -> Any:
    """Open on the platform, where it tells anyone which ids exist (``{X, X}`` is allowed exactly when X
    exists, two roots exactly when both do). Here the caller proves it is ``caller_id``, so the answer is
    about its own reach only, and an unknown target looks like a forbidden one."""
    b = box()
    body: CheckAccess = await parse(CheckAccess)
    await require_workspace(b, body.caller_id)
    return respond({"allowed": can_communicate(_lookup, body.caller_id, body.target_id)})
