"""Secrets: workspace and global, encrypted at rest, values only to their own workspace."""

from __future__ import annotations

from typing import Any

import trio
from quart import Blueprint

from ..errors import NotFound
from ..schemas import PutModel, PutSecret
from ..store import secrets as secret_rows
from .routing import Call, box, respond, route

bp = Blueprint("secrets", __name__)


async def _restart_inheritors(key: str, only: str | None = None) -> None:
    """Restart the box-run workspaces that see this secret (a global one unless overridden)."""
    b = box()
    if only is not None:
        targets = [only]
    else:
        overriding = secret_rows.overriding(b.store.db, key)
        targets = [ws.id for ws in b.supervisor.records() if ws.id not in overriding]
    async with trio.open_nursery() as nursery:
        for wid in targets:
            if b.supervisor.record(wid) is not None:
                nursery.start_soon(_tell_secrets_changed, wid)


async def _tell_secrets_changed(wid: str) -> None:
    await box().supervisor.secrets_changed(wid)


@route(bp, "/workspaces/<raw_id>/secrets", "GET", summary="Secret keys a workspace sees (never values)",
       auth="workspace", load="live")
async def list_secrets(call: Call[None]) -> Any:
    return respond(box().vault.listing(call.workspace_id))


@route(bp, "/workspaces/<raw_id>/secrets/values", "GET", auth="own", load="live",
       summary="Decrypted secrets for the workspace's own agent (global overridden by workspace)",
       responses={200: "{KEY: value}", 401: "Not this workspace's token", 500: "A secret does not decrypt"})
async def secret_values(call: Call[None]) -> Any:
    return respond(box().vault.values(call.workspace_id), headers={"Cache-Control": "no-store"})


async def _put_workspace_secret(call: Call[PutSecret]) -> Any:
    b = box()
    wid, body = call.workspace_id, call.body
    await b.store.write(b.vault.put(wid, body.key, body.value))
    await _restart_inheritors(body.key, only=wid)
    return respond({"status": "saved", "key": body.key})


for _method in ("POST", "PUT"):
    route(bp, "/workspaces/<raw_id>/secrets", _method, summary="Set a workspace secret", auth="workspace",
          body=PutSecret, load="live", endpoint=f"put_workspace_secret_{_method}")(_put_workspace_secret)


@route(bp, "/workspaces/<raw_id>/secrets/<key>", "DELETE", summary="Delete a workspace secret", auth="workspace",
       responses={200: "Deleted", 404: "No such secret"})
async def delete_workspace_secret(call: Call[None], key: str) -> Any:
    b = box()
    wid = call.workspace_id
    if not await b.store.write(secret_rows.delete(wid, key)):
        raise NotFound("secret not found")
    await _restart_inheritors(key, only=wid)
    return respond({"status": "deleted", "key": key})


async def _list_global(call: Call[None]) -> Any:
    from ..models import rfc3339

    b = box()
    return respond([{"key": r["key"], "has_value": True, "scope": "global", "created_at": rfc3339(r["created_at"]),
                     "updated_at": rfc3339(r["updated_at"])} for r in secret_rows.listing(b.store.db, None)])


async def _put_global(call: Call[PutSecret]) -> Any:
    b, body = box(), call.body
    await b.store.write(b.vault.put(None, body.key, body.value))
    await _restart_inheritors(body.key)
    return respond({"status": "saved", "key": body.key, "scope": "global"})


async def _delete_global(call: Call[None], key: str) -> Any:
    b = box()
    if not await b.store.write(secret_rows.delete(None, key)):
        raise NotFound("secret not found")
    await _restart_inheritors(key)
    return respond({"status": "deleted", "key": key, "scope": "global"})


for _prefix in ("/settings/secrets", "/admin/secrets"):
    _tag = _prefix.strip("/").replace("/", "_")
    route(bp, _prefix, "GET", summary="List global secret keys", auth="admin", endpoint=f"list_{_tag}")(_list_global)
    for _m in (("POST", "PUT") if _prefix.startswith("/settings") else ("POST",)):
        route(bp, _prefix, _m, summary="Set a global secret (restarts inheriting workspaces)", auth="admin",
              body=PutSecret, endpoint=f"put_{_tag}_{_m}")(_put_global)
    route(bp, f"{_prefix}/<key>", "DELETE", summary="Delete a global secret", auth="admin",
          responses={200: "Deleted", 404: "No such secret"}, endpoint=f"delete_{_tag}")(_delete_global)


@route(bp, "/workspaces/<raw_id>/model", "GET", auth="workspace", load="live",
       summary="Where the workspace's model comes from; never the MODEL_PROVIDER value (a secret)",
       responses={200: '{model: "", source: "workspace_secrets" | "global_secrets" | "default"}'})
async def get_model(call: Call[None]) -> Any:
    """The platform answers with the decrypted MODEL_PROVIDER secret, which would hand the admin (and any
    holder of this route's tier) a secret value that ``/secrets/values`` refuses it. The agent reads the
    value there; this says only whether it is set, and by which scope."""
    listing = box().vault.listing(call.workspace_id)
    scope = next((row["scope"] for row in listing if row["key"] == "MODEL_PROVIDER"), None)
    return respond({"model": "", "source": f"{scope}_secrets" if scope else "default"})


@route(bp, "/workspaces/<raw_id>/model", "PUT", summary="Set (or with an empty value clear) the model",
       auth="workspace", body=PutModel, load="live")
async def put_model(call: Call[PutModel]) -> Any:
    b = box()
    wid, body = call.workspace_id, call.body
    if body.model:
        await b.store.write(b.vault.put(wid, "MODEL_PROVIDER", body.model))
        result = {"status": "saved", "model": body.model}
    else:
        await b.store.write(secret_rows.delete(wid, "MODEL_PROVIDER"))
        result = {"status": "cleared"}
    await _restart_inheritors("MODEL_PROVIDER", only=wid)
    return respond(result)
