"""Route declaration shared by the quart app and ``/openapi.json``.

A route is declared once, with its auth tier, body model and responses; the
same declaration registers the quart view, runs the tier, parses the body and
loads the workspace, and describes the route in OpenAPI, so the document
cannot drift from what is served (tests check every served rule is described,
and that every route refuses what its tier refuses).
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from pydantic import BaseModel
from quart import Blueprint, Response, current_app, request

from ..authz import AUTH_TIERS, Principal, Tier, authorize
from ..errors import BadRequest, NotFound, PayloadTooLarge
from ..models import Workspace, WorkspaceStatus
from ..schemas import Empty
from ..store import workspaces as workspace_rows

if TYPE_CHECKING:
    from ..box import Box

Handler = Callable[..., Awaitable[Any]]
#: Where a body-first route finds the workspace its tier checks: ``(parsed body, path id or None) -> id``.
IdFrom = Callable[[Any, "str | None"], "str | None"]
B = TypeVar("B")


@dataclasses.dataclass(frozen=True)
class RouteDoc:
    path: str
    method: str
    summary: str
    auth: Tier
    body: type[BaseModel] | None
    responses: dict[int, str]
    tag: str
    query: dict[str, str]


ROUTES: list[RouteDoc] = []


@dataclasses.dataclass(frozen=True)
class Call(Generic[B]):
    """What the declaration of a route established before its handler runs."""

    principal: Principal
    body: B
    path_id: str | None = None
    loaded: Workspace | None = None

    @property
    def workspace_id(self) -> str:
        """The canonical workspace id of the path (or, on a path without one, of the body)."""
        assert self.path_id is not None, "route without a workspace id"
        return self.path_id

    @property
    def ws(self) -> Workspace:
        """The workspace the route declared ``load=`` for."""
        assert self.loaded is not None, "route declared no load="
        return self.loaded


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


def declare(path: str, method: str, *, summary: str, auth: Tier, tag: str, body: type[BaseModel] | None = None,
            responses: dict[int, str] | None = None, query: dict[str, str] | None = None) -> None:
    assert auth in AUTH_TIERS, auth
    ROUTES.append(RouteDoc(openapi_path(path), method.lower(), summary, auth, body, responses or {200: "OK"}, tag,
                           query or {}))


def route(bp: Blueprint, path: str, method: str, *, summary: str, auth: Tier, body: type[BaseModel] | None = None,
          responses: dict[int, str] | None = None, query: dict[str, str] | None = None,
          endpoint: str | None = None, id_from: IdFrom | None = None,
          load: Literal["live", "any"] | None = None,
          limit: int = 256 * 1024) -> Callable[[Handler], Handler]:
    """Register a view on ``bp`` and describe it for OpenAPI in one step; the view runs the declaration.

    The view canonicalises the path's ``<raw_id>``, checks ``auth`` for it (or, with ``id_from``, for the
    workspace the body names: the body is then parsed first), parses ``body``, loads the workspace (``live``:
    404 when unknown or removed; ``any``: 404 when unknown), and calls the handler with one :class:`Call`
    (other path parameters as keywords)."""

    def decorate(fn: Handler) -> Handler:
        declare(path, method, summary=summary, auth=auth, tag=bp.name, body=body, responses=responses, query=query)

        async def view(**params: str) -> Any:
            raw_id = params.pop("raw_id", None)
            wid = workspace_id(raw_id) if raw_id is not None else None
            parsed = await parse(body, limit=limit) if body is not None and id_from is not None else None
            checked = id_from(parsed, wid) if id_from is not None else wid
            principal = await authorize(box(), auth, request.headers, checked,
                                        safe=request.method in ("GET", "HEAD"))
            if body is not None and id_from is None:
                parsed = await parse(body, limit=limit)
            wid = wid if wid is not None else checked
            ws = None
            if load is not None:
                assert wid is not None
                ws = live(wid) if load == "live" else existing(wid)
            return await fn(Call(principal, parsed, wid, ws), **params)

        view.__doc__ = fn.__doc__
        bp.add_url_rule(path, endpoint=endpoint or fn.__name__, view_func=view, methods=[method])
        return fn

    return decorate


def box() -> Box:
    """The running :class:`molecule_box.box.Box` of the current app."""
    found: Box = current_app.extensions["molecule_box"]
    return found


def workspace_id(raw: str) -> str:
    """A path id as a canonical UUID string, or 400 (never a lookup with attacker-shaped text)."""
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise BadRequest("invalid workspace ID") from None


def find(wid: str) -> Workspace | None:
    """The workspace's record: its actor's (current) for a live one, else its row (removed ones too)."""
    b = box()
    return b.supervisor.record(wid) or workspace_rows.get(b.store.db, wid)


def existing(wid: str) -> Workspace:
    ws = find(wid)
    if ws is None:
        raise NotFound("workspace not found")
    return ws


def live(wid: str) -> Workspace:
    """:func:`existing`, but a removed workspace is not found either (routes that act on a workspace)."""
    ws = existing(wid)
    if ws.status is WorkspaceStatus.REMOVED:
        raise NotFound("workspace not found")
    return ws


async def parse(model: type[BaseModel], *, limit: int = 256 * 1024) -> Any:
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
