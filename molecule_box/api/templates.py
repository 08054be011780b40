"""Workspace templates: the listing and the import of a template folder (admin only).

An import is a tar (plain or gzip) of one template folder, checked before anything is written: only regular
files and directories, no links, no absolute names, no ``..``, size and file-count caps; the folder appears in
the templates directory whole or not at all. The request body is capped by the box's 1 MiB body limit: a
larger template is copied into the templates directory by the operator.
"""

from __future__ import annotations

import functools
from typing import Any

import trio
from quart import Blueprint, request

from .. import templates as tpl
from ..errors import PayloadTooLarge
from .routing import Call, box, query_bool, respond, route

bp = Blueprint("templates", __name__)

IMPORT_LIMIT = 1024 * 1024


@route(bp, "/templates", "GET", summary="The workspace templates", auth="admin",
       responses={200: "[{id, name, description, tier, runtime, model, skills}]"})
async def list_templates(call: Call[None]) -> Any:
    return respond(await trio.to_thread.run_sync(tpl.listing, box().settings.templates_root))


@route(bp, "/templates/import", "POST", summary="Import a template folder (a tar, plain or gzip)", auth="admin",
       query={"name": "the template's name (default: the archive's top folder)",
              "replace": "true: replace a template of that name"},
       responses={201: "The template, as GET /templates lists it", 400: "Not a safe tar of a template folder",
                  409: "A template of that name exists", 413: "Over the size or file-count cap"})
async def import_template(call: Call[None]) -> Any:
    if (request.content_length or 0) > IMPORT_LIMIT:
        raise PayloadTooLarge(f"request body over {IMPORT_LIMIT} bytes")
    data = await request.get_data(cache=False)
    assert isinstance(data, bytes)
    if len(data) > IMPORT_LIMIT:
        raise PayloadTooLarge(f"request body over {IMPORT_LIMIT} bytes")
    unpack = functools.partial(tpl.import_archive, box().settings.templates_root, data,
                               name=request.args.get("name") or None, replace=query_bool("replace"))
    found = await trio.to_thread.run_sync(unpack)  # file I/O off the event loop
    return respond(found, 201)
