"""Route declaration shared by the quart app and ``/openapi.json``.

A route is declared once, with its auth tier, body model and responses; the
same declaration registers the quart view and describes it in OpenAPI, so the
document cannot drift from what is served (a test checks every served rule is
described).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel
from quart import Blueprint, Response, current_app, request

from ..errors import BadRequest, PayloadTooLarge
from ..schemas import Body, Empty

Handler = Callable[..., Awaitable[Any]]

AUTH_TIERS = {
    "none": "No authentication.",
    "admin": "Admin bearer token (ADMIN_TOKEN or the generated one).",
    "workspace": "The workspace's own bearer token, or the admin token.",
    "own": "The workspace's own bearer token only.",
    "caller": "X-Workspace-ID header plus that caller's own bearer token (or the admin token).",
    "register": "The workspace's token or the admin token; none only for a workspace created with "
                "bootstrap 'open', until its first token or the bootstrap's expiry.",
}


@dataclasses.dataclass(frozen=True)
class RouteDoc:
    path: str
    method: str
    summary: str
    auth: str
    body: type[BaseModel] | None
    responses: dict[int, str]
    tag: str
    query: dict[str, str]


ROUTES: list[RouteDoc] = []


def openapi_path(rule: str) -> str:
    """``/workspaces/<id>/a2a`` → ``/workspaces/{id}/a2a``."""
    out, inside = "", False
    for ch in rule:
        if ch == "<":
            inside, name = True, ""
            continue
        if inside:
            if ch == ">":
                out += "{" + name.split(":")[-1] + "}"
                inside = False
            else:
                name += ch
            continue
        out += ch
    return out


def declare(path: str, method: str, *, summary: str, auth: str, tag: str, body: type[BaseModel] | None = None,
            responses: dict[int, str] | None = None, query: dict[str, str] | None = None) -> None:
    assert auth in AUTH_TIERS, auth
    ROUTES.append(RouteDoc(openapi_path(path), method.lower(), summary, auth, body, responses or {200: "OK"}, tag,
                           query or {}))


def route(bp: Blueprint, path: str, method: str, *, summary: str, auth: str, body: type[BaseModel] | None = None,
          responses: dict[int, str] | None = None, query: dict[str, str] | None = None,
          endpoint: str | None = None) -> Callable[[Handler], Handler]:
    """Register a view on ``bp`` and describe it for OpenAPI in one step."""

    def decorate(fn: Handler) -> Handler:
        declare(path, method, summary=summary, auth=auth, tag=bp.name, body=body, responses=responses, query=query)
        bp.add_url_rule(path, endpoint=endpoint or fn.__name__, view_func=fn, methods=[method])
        return fn

    return decorate


def box() -> Any:
    """The running :class:`molecule_box.box.Box` of the current app."""
    return current_app.extensions["molecule_box"]


async def parse(model: type[Body], *, limit: int = 256 * 1024) -> Any:
    """Read and validate the request body as ``model``: 413 past ``limit``, 400 for bad JSON or types."""
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"request body over {limit} bytes")
    raw = await request.get_data(cache=False)
    if len(raw) > limit:
        raise PayloadTooLarge(f"request body over {limit} bytes")
    if not raw.strip():
        raw = b"{}"
    if model is Empty:
        return Empty()
    return model.model_validate_json(raw)


def respond(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body, separators=(",", ":"), default=str), status=status,
                    content_type="application/json", headers=headers)


def query_int(name: str, default: int, *, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"query parameter {name} must be an integer") from None
    if not low <= value <= high:
        raise BadRequest(f"query parameter {name} must be between {low} and {high}")
    return value


def query_bool(name: str) -> bool:
    return request.args.get(name, "").lower() in ("1", "true", "yes")
