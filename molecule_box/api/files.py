"""A workspace's config files (``/configs`` inside its workload), read and written through its backend.

The API never reaches the backend itself: each operation is a command to the workspace's actor (which owns the
workload's handle), and the backend does it with its optional file operations (``Capabilities.files``; docker:
the engine's archive API, so a stopped workload's files are there too). A backend without them answers 501;
remote agents keep their own files. Paths are relative to ``/configs``: absolute ones, ``..``, and paths
through a link are refused (400), and ``.auth_token`` (the workload's token) is never listed, read, written
or deleted here.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from quart import Blueprint, request

from ..backends import archive as ar
from ..errors import BadRequest, NotFound
from ..models import WorkspaceStatus
from ..schemas import PutFile, ReplaceFiles
from .routing import Call, box, query_bool, respond, route

bp = Blueprint("files", __name__)

#: A files request's body (one file, or the whole set), as the app's own cap.
BODY_LIMIT = 1024 * 1024
#: Statuses in which a workload runs (or is starting): only those are restarted after a write.
RUNNING = frozenset({WorkspaceStatus.ONLINE, WorkspaceStatus.DEGRADED, WorkspaceStatus.OFFLINE,
                     WorkspaceStatus.PROVISIONING})


def _path(raw: str) -> str:
    path = ar.clean_path(raw)
    if path == ar.TOKEN_FILE:
        raise BadRequest(f"{ar.TOKEN_FILE} is the box's: it is not read or written through the files API")
    return path


def _decode(content: str, encoding: str) -> bytes:
    if encoding == "utf-8":
        return content.encode()
    try:
        return base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("content is not valid base64") from None


async def _tree(wid: str) -> list[ar.Member]:
    return [m for m in ar.members(await box().supervisor.read_files(wid)) if m.name != ar.TOKEN_FILE]


async def _restart_if(call: Call[Any], asked: bool) -> bool:
    if not (asked or query_bool("restart")) or call.ws.status not in RUNNING:
        return False
    await box().supervisor.restart(call.workspace_id)
    return True


@route(bp, "/workspaces/<raw_id>/files", "GET", summary="List the workspace's config files", auth="workspace",
       load="live", query={"path": "only entries under this directory"},
       responses={200: "[{path, size, dir, link}]", 501: "The workspace's backend has no file access"})
async def list_files(call: Call[None]) -> Any:
    under = request.args.get("path")
    prefix = _path(under) + "/" if under else ""
    return respond([{"path": m.name, "size": m.size, "dir": m.kind == "dir", "link": m.kind == "link"}
                    for m in await _tree(call.workspace_id) if m.name.startswith(prefix)])


@route(bp, "/workspaces/<raw_id>/files/<path:file_path>", "GET", summary="Read one config file",
       auth="workspace", load="live",
       responses={200: "{path, content, size, encoding}", 400: "Invalid path, a directory or a link",
                  404: "No such file", 501: "The workspace's backend has no file access"})
async def read_file(call: Call[None], file_path: str) -> Any:
    path = _path(file_path)
    found = next((m for m in await _tree(call.workspace_id) if m.name == path), None)
    if found is None:
        raise NotFound("file not found")
    if found.kind != "file" or found.data is None:
        raise BadRequest(f"{path} is a {found.kind}, not a file (links are not followed)")
    try:
        content, encoding = found.data.decode(), "utf-8"
    except UnicodeDecodeError:
        content, encoding = base64.b64encode(found.data).decode(), "base64"
    return respond({"path": path, "content": content, "size": found.size, "encoding": encoding})


@route(bp, "/workspaces/<raw_id>/files/<path:file_path>", "PUT", summary="Write one config file",
       auth="workspace", body=PutFile, load="live", limit=BODY_LIMIT,
       query={"restart": "true: restart a running workload afterwards"},
       responses={200: "{status, path, size, restarted}", 400: "Invalid path (absolute, '..', through a link)",
                  413: "Body too large", 501: "The workspace's backend has no file access"})
async def write_file(call: Call[PutFile], file_path: str) -> Any:
    path = _path(file_path)
    data = _decode(call.body.content, call.body.encoding)
    await box().supervisor.write_files(call.workspace_id, ar.pack([ar.Entry(path, data)]))
    restarted = await _restart_if(call, call.body.restart)
    return respond({"status": "saved", "path": path, "size": len(data), "restarted": restarted})


@route(bp, "/workspaces/<raw_id>/files", "PUT", summary="Replace all config files", auth="workspace",
       body=ReplaceFiles, load="live", limit=BODY_LIMIT,
       query={"restart": "true: restart a running workload afterwards"},
       responses={200: "{status, files, restarted}", 400: "An invalid path", 413: "Body too large",
                  501: "The workspace's backend has no file access"})
async def replace_files(call: Call[ReplaceFiles]) -> Any:
    entries = [ar.Entry(_path(name), _decode(content, call.body.encoding))
               for name, content in call.body.files.items()]
    await box().supervisor.write_files(call.workspace_id, ar.pack(entries), replace=True)
    restarted = await _restart_if(call, call.body.restart)
    return respond({"status": "replaced", "files": sorted(e.name for e in entries), "restarted": restarted})


@route(bp, "/workspaces/<raw_id>/files/<path:file_path>", "DELETE", summary="Delete a config file or directory",
       auth="workspace", load="live", query={"restart": "true: restart a running workload afterwards"},
       responses={200: "{status, path, restarted}", 400: "Invalid path", 404: "No such file",
                  501: "The workspace's backend has no file access"})
async def delete_file(call: Call[None], file_path: str) -> Any:
    path = _path(file_path)
    if not any(m.name == path for m in await _tree(call.workspace_id)):
        raise NotFound("file not found")
    await box().supervisor.delete_files(call.workspace_id, [path])
    restarted = await _restart_if(call, False)
    return respond({"status": "deleted", "path": path, "restarted": restarted})
