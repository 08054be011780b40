"""Build the OpenAPI 3.1 document from the route declarations and the body models."""

from __future__ import annotations

from functools import cache
from typing import Any

from .._version import __version__
from ..authz import AUTH_TIERS
from ..schemas import Empty
from .routing import ROUTES

#: What a request its tier refuses is answered, where a route's declaration does not say more.
REFUSED = "Refused by the auth tier: no token, a wrong one, or another workspace's"


@cache
def document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {}
    for r in ROUTES:
        op: dict[str, Any] = {
            "summary": r.summary,
            "tags": [r.tag],
            "description": f"Auth: {AUTH_TIERS[r.auth]}",
            "x-auth-tier": r.auth,
            "responses": {str(code): {"description": text} for code, text in sorted(
                (({401: REFUSED} if r.auth != "none" else {}) | r.responses).items())},
        }
        if r.auth != "none":
            op["security"] = [{"bearer": []}]
        params = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                  for name in _path_params(r.path)]
        params += [{"name": name, "in": "query", "required": False, "description": text, "schema": {"type": "string"}}
                   for name, text in r.query.items()]
        if r.auth in ("caller", "source"):
            params.append({"name": "X-Workspace-ID", "in": "header", "required": False, "schema": {"type": "string"}})
        if params:
            op["parameters"] = params
        if r.body is not None and r.body is not Empty:
            schema = r.body.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, sub in schema.pop("$defs", {}).items():
                schemas[name] = sub
            schemas[r.body.__name__] = schema
            op["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{r.body.__name__}"}}}}
        paths.setdefault(r.path, {})[r.method] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "molecule-box", "version": __version__,
                 "description": "The Molecule AI workspace server API, served by one box."},
        "paths": paths,
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


def _path_params(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{") and part.endswith("}")]
