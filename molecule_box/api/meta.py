"""``/health``, ``/metrics`` and ``/openapi.json``."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response

from .._version import __version__
from ..store.migrations import SCHEMA_VERSION
from .openapi import document
from .routing import Call, box, respond, route

bp = Blueprint("meta", __name__)


@route(bp, "/health", "GET", summary="Liveness of the box itself", auth="none")
async def health(call: Call[None]) -> Any:
    b = box()
    return respond({
        "status": "ok",
        "version": __version__,
        "schema_version": SCHEMA_VERSION,
        "box_id": b.box_id,
        "workspaces": b.status_counts(),
        "backends": {name: backend.capabilities().public() | {"version": backend.version}
                     for name, backend in b.backends.loaded().items()},
    })


@route(bp, "/metrics", "GET", summary="Prometheus metrics (text format)", auth="none")
async def metrics(call: Call[None]) -> Any:
    return Response(box().metrics.render(), content_type="text/plain; version=0.0.4; charset=utf-8")


@route(bp, "/openapi.json", "GET", summary="This document", auth="none")
async def openapi(call: Call[None]) -> Any:
    return respond(document())
