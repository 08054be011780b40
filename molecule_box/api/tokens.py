"""Workspace tokens: mint (shown once), list, revoke."""

from __future__ import annotations

from typing import Any

from quart import Blueprint

from ..bus import REVOKED
from ..errors import NotFound
from ..models import rfc3339
from ..schemas import Empty
from ..security import tokens as tk
from ..store import tokens as token_rows
from .routing import Call, box, query_int, respond, route

bp = Blueprint("tokens", __name__)


@route(bp, "/workspaces/<raw_id>/tokens", "POST", summary="Mint a workspace token (shown once)", auth="workspace",
       body=Empty, load="live", responses={201: "{auth_token, workspace_id, message}", 429: "50 live tokens already"})
async def mint_token(call: Call[Empty]) -> Any:
    b = box()
    wid = call.workspace_id
    token = tk.mint()
    token_id = await b.store.write(token_rows.insert(wid, token.digest, token.prefix))
    return respond({"auth_token": token.plaintext, "workspace_id": wid, "id": token_id, "prefix": token.prefix,
                    "message": "store this token now: it is shown only once"}, 201)


@route(bp, "/workspaces/<raw_id>/tokens", "GET", summary="List live tokens (prefixes only)", auth="workspace",
       query={"limit": "1-200, default 50", "offset": "default 0"})
async def list_tokens(call: Call[None]) -> Any:
    b = box()
    wid = call.workspace_id
    limit = query_int("limit", 50, low=1, high=200)
    offset = query_int("offset", 0, low=0, high=1_000_000)
    rows = token_rows.list_live(b.store.db, wid, limit, offset)
    tokens = [{"id": r["id"], "prefix": r["prefix"], "created_at": rfc3339(r["created_at"]),
               "last_used_at": rfc3339(r["last_used_at"])} for r in rows]
    return respond({"tokens": tokens, "count": token_rows.live_count(b.store.db, wid)})


@route(bp, "/workspaces/<raw_id>/tokens/<token_id>", "DELETE", auth="workspace",
       summary="Revoke a token (and end the event streams it opened)",
       responses={200: "{status: revoked}", 404: "No such live token"})
async def revoke_token(call: Call[None], token_id: str) -> Any:
    b = box()
    wid = call.workspace_id
    if not await b.store.write(token_rows.revoke(wid, token_id[:64])):
        raise NotFound("token not found or already revoked")
    b.bus.end_streams(REVOKED, token_id=token_id[:64])
    return respond({"status": "revoked"})
