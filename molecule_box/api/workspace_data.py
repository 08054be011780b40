"""A workspace's JSON config and key/value memory, kept on the box for the workspace itself.

Tier ``workspace``: the workspace's own token or the admin; another workspace's token is refused (403), never
served. Both live in SQLite (``store/workspace_data.py``) and survive restarts of the workload and of the box.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint

from ..errors import NotFound
from ..models import rfc3339
from ..schemas import PatchConfig, PutMemory
from ..store import workspace_data as rows
from .routing import Call, box, respond, route

bp = Blueprint("workspace_data", __name__)

@route(bp, "/workspaces/<raw_id>/config", "GET", summary="The workspace's JSON config", auth="workspace",
       load="live", responses={200: "{data: {...}}"})
async def get_config(call: Call[None]) -> Any:
    return respond({"data": rows.config(box().store.db, call.workspace_id)})


@route(bp, "/workspaces/<raw_id>/config", "PATCH", summary="Shallow-merge keys into the workspace's config",
       auth="workspace", body=PatchConfig, load="live", responses={200: "{data: {...}} (the merged config)"})
async def patch_config(call: Call[PatchConfig]) -> Any:
    b = box()
    return respond({"data": await b.store.write(rows.merge_config(call.workspace_id, call.body.changes()))})


def _public(entry: dict[str, Any]) -> dict[str, Any]:
    return {"key": entry["key"], "value": entry["value"], "version": entry["version"],
            "expires_at": rfc3339(entry["expires_at"]),
            "created_at": rfc3339(entry["created_at"]), "updated_at": rfc3339(entry["updated_at"])}


@route(bp, "/workspaces/<raw_id>/memory", "GET", summary="The workspace's live memory entries", auth="workspace",
       load="live", responses={200: "[{key, value, version, expires_at, created_at, updated_at}]"})
async def list_memory(call: Call[None]) -> Any:
    return respond([_public(e) for e in rows.memory(box().store.db, call.workspace_id)])


@route(bp, "/workspaces/<raw_id>/memory/<key>", "GET", summary="One memory entry", auth="workspace", load="live",
       responses={200: "{key, value, version, expires_at, created_at, updated_at}", 404: "No such (live) key"})
async def get_memory(call: Call[None], key: str) -> Any:
    found = rows.memory(box().store.db, call.workspace_id, key)
    if not found:
        raise NotFound("memory key not found")
    return respond(_public(found[0]))


@route(bp, "/workspaces/<raw_id>/memory", "POST", summary="Set one memory entry (optionally versioned, expiring)",
       auth="workspace", body=PutMemory, load="live",
       responses={200: "The entry, with its new version", 409: "if_match_version is not the live version"})
async def put_memory(call: Call[PutMemory]) -> Any:
    b, body = box(), call.body
    entry = await b.store.write(rows.put_memory(call.workspace_id, body.key, body.value,
                                                ttl_seconds=body.ttl_seconds, if_match_version=body.if_match_version))
    return respond({"status": "ok", **_public(entry)})


@route(bp, "/workspaces/<raw_id>/memory/<key>", "DELETE", summary="Delete one memory entry", auth="workspace",
       load="live", responses={200: "Deleted", 404: "No such (live) key"})
async def delete_memory(call: Call[None], key: str) -> Any:
    b = box()
    if not await b.store.write(rows.delete_memory(call.workspace_id, key)):
        raise NotFound("memory key not found")
    return respond({"status": "deleted", "key": key})
