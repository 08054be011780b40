"""Agent plugins: the registry's listing, a workspace's installs, the download remote agents install from, and
an org's allowlist (docs/agent-plugins.md).

Install and download run the same pipeline (``agent_plugins.pipeline``): the source is parsed and pinned and the
org allowlist asked before anything is fetched, and nothing is sent before the plugin is packed whole. A remote
workspace's install is a record (its agent fetches the plugin with the SDK); a box-run workspace's is a copy into
its ``/configs/plugins/<name>`` and a restart, through the backend's file operations.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import AsyncIterator
from typing import IO, Any

import trio
from quart import Blueprint, Response, current_app, request

from ..agent_plugins import registry
from ..agent_plugins import tree as plugin_tree
from ..agent_plugins.pipeline import Pipeline, Staged
from ..agent_plugins.sources import SCHEMES, Source, check_name, valid_name
from ..agent_plugins.tree import CHUNK, Limits
from ..errors import BadRequest, Forbidden, NotFound
from ..models import Workspace, WorkspaceStatus, rfc3339
from ..schemas import InstallPlugin, PluginAllowlist
from ..store import plugins as plugin_rows
from ..store import workspaces as workspace_rows
from .routing import Call, box, find, parse, respond, route

bp = Blueprint("plugins", __name__)


def pipeline() -> Pipeline:
    """The box's pipeline, built once from its settings."""
    found = current_app.extensions.get("agent_plugins")
    if found is None:
        s = box().settings
        work = s.data_dir / "plugin-work"
        shutil.rmtree(work, ignore_errors=True)  # a previous run's checkouts and packings
        found = current_app.extensions["agent_plugins"] = Pipeline(
            registry=s.plugins_dir, work_dir=work,
            limits=Limits(s.plugin_max_dir_bytes, s.plugin_max_files), allow_unpinned=s.plugin_allow_unpinned,
            fetch_timeout=s.plugin_fetch_timeout)
    assert isinstance(found, Pipeline)
    return found


def org_of(workspace_id: str) -> str:
    """The org a workspace belongs to: its root ancestor (the platform looked one level up only)."""
    up = workspace_rows.ancestors(box().store.db, workspace_id)
    return up[-1] if up else workspace_id


def check_allowed(workspace_id: str, name: str) -> None:
    """403 unless the workspace's org allows ``name``. A failing lookup refuses too (the platform let it in)."""
    if not plugin_rows.allows(box().store.db, org_of(workspace_id), name):
        raise Forbidden(f'plugin "{name}" is not in the org allowlist')


def _with_runtime(plugins: list[dict[str, Any]], runtime: str) -> list[dict[str, Any]]:
    return [p | {"supported_on_runtime": registry.supports(p, runtime)} for p in plugins]


def _installed(ws: Workspace) -> list[dict[str, Any]]:
    """The workspace's installs, each described by the registry's copy when it has one."""
    out = []
    for row in plugin_rows.installed(box().store.db, ws.id):
        plugin_dir = registry.plugin_dir(pipeline().registry, row["name"])
        manifest = registry.read_manifest(plugin_dir) if plugin_dir is not None else {}
        out.append(registry.info(row["name"], manifest) | {"source": row["source"],
                                                             "installed_at": rfc3339(row["installed_at"])})
    return _with_runtime(out, ws.runtime)


@route(bp, "/plugins", "GET", auth="none", summary="The plugin registry (only those for ?runtime= when given)",
       query={"runtime": "Keep plugins that support this runtime"})
async def list_registry(call: Call[None]) -> Any:
    runtime = request.args.get("runtime") or None
    return respond(await trio.to_thread.run_sync(registry.listing, pipeline().registry, runtime))


@route(bp, "/plugins/sources", "GET", auth="none", summary="The plugin source schemes the box resolves")
async def list_sources(call: Call[None]) -> Any:
    return respond({"schemes": list(SCHEMES)})


@route(bp, "/workspaces/<raw_id>/plugins", "GET", auth="workspace", load="live",
       summary="The plugins installed into a workspace")
async def list_installed(call: Call[None]) -> Any:
    return respond(_installed(call.ws))


@route(bp, "/workspaces/<raw_id>/plugins/available", "GET", auth="workspace", load="live",
       summary="The registry's plugins that support the workspace's runtime")
async def list_available(call: Call[None]) -> Any:
    found = await trio.to_thread.run_sync(registry.listing, pipeline().registry, call.ws.runtime)
    return respond(_with_runtime(found, call.ws.runtime))


@route(bp, "/workspaces/<raw_id>/plugins/compatibility", "GET", auth="workspace", load="live",
       summary="Which installed plugins support ?runtime= (before changing the workspace's runtime)",
       query={"runtime": "The runtime to check (required)"}, responses={200: "OK", 400: "No runtime"})
async def compatibility(call: Call[None]) -> Any:
    runtime = (request.args.get("runtime") or "").strip()
    if not runtime:
        raise BadRequest("runtime query parameter is required")
    installed = _installed(call.ws)
    compatible = [p for p in installed if registry.supports(p, runtime)]
    incompatible = [p for p in installed if not registry.supports(p, runtime)]
    return respond({"target_runtime": runtime, "compatible": compatible, "incompatible": incompatible,
                    "all_compatible": not incompatible})


async def deliver_to_workload(ws: Workspace, staged: Staged) -> None:
    """Put the staged plugin into the box-run workload's ``/configs/plugins/<name>`` as one archive, through the
    backend's config-file operations (by the workspace's actor), which own every file as the agent's uid. A
    backend without them answers 501 and nothing is recorded."""
    def packed() -> bytes:
        out = io.BytesIO()
        plugin_tree.pack(staged.tree, out, prefix=f"plugins/{staged.name}/")
        return out.getvalue()

    await box().supervisor.write_files(ws.id, await trio.to_thread.run_sync(packed))


async def remove_from_workload(ws: Workspace, name: str) -> None:
    """Remove ``/configs/plugins/<name>`` from the box-run workload (the counterpart of
    :func:`deliver_to_workload`)."""
    try:
        await box().supervisor.delete_files(ws.id, [f"plugins/{name}"])
    except NotFound:  # its files are gone already (removed through /files): uninstalling stays idempotent
        pass


async def _is_remote(ws: Workspace) -> bool:
    return (await box().backends.get(ws.backend)).capabilities().remote


@route(bp, "/workspaces/<raw_id>/plugins", "POST", auth="workspace", load="live",
       summary="Install a plugin: recorded for a remote agent (it downloads it), copied in and restarted for a "
               "box-run workload",
       responses={200: "{status: installed, plugin, source}", 400: "Bad source or name", 403: "Not allowed",
                  404: "No such plugin", 413: "Over the size or file cap", 422: "Unpinned or integrity failed",
                  501: "The backend cannot install files"})
async def install(call: Call[None]) -> Any:
    b, ws, p = box(), call.ws, pipeline()
    body: InstallPlugin = await parse(InstallPlugin, limit=b.settings.plugin_body_max_bytes)
    source = p.parse(body.source)
    check_allowed(ws.id, source.name)
    remote = await _is_remote(ws)
    async with p.stage(source, sha256=body.sha256) as staged:
        if not remote:
            await deliver_to_workload(ws, staged)
    event = b.bus.make("PLUGIN_INSTALLED", ws.id, {"plugin": source.name, "source": source.raw})
    await b.store.write(plugin_rows.record_install(ws.id, source.name, source.raw, event))
    b.bus.publish(event)
    if not remote and ws.status is not WorkspaceStatus.PAUSED:
        await b.supervisor.restart(ws.id)
    return respond({"status": "installed", "plugin": source.name, "source": source.raw})


@route(bp, "/workspaces/<raw_id>/plugins/<name>", "DELETE", auth="workspace", load="live",
       summary="Uninstall a plugin (idempotent: 200 when it was not installed)",
       responses={200: "{status: uninstalled, plugin}", 400: "Invalid name"})
async def uninstall(call: Call[None], name: str) -> Any:
    b, ws = box(), call.ws
    check_name(name)
    recorded = any(row["name"] == name for row in plugin_rows.installed(b.store.db, ws.id))
    remote = await _is_remote(ws)
    if recorded and not remote:
        await remove_from_workload(ws, name)
    event = b.bus.make("PLUGIN_UNINSTALLED", ws.id, {"plugin": name})
    if await b.store.write(plugin_rows.remove_install(ws.id, name, event)):
        b.bus.publish(event)
        if not remote and ws.status is not WorkspaceStatus.PAUSED:
            await b.supervisor.restart(ws.id)
    return respond({"status": "uninstalled", "plugin": name})


async def _stream(f: IO[bytes], senders: trio.CapacityLimiter) -> AsyncIterator[bytes]:
    """The packed file in chunks, each read holding one of the ``senders`` and sent without it (a client that
    reads slowly holds up only its own download)."""
    try:
        while True:
            async with senders:
                block = await trio.to_thread.run_sync(f.read, CHUNK)
            if not block:
                return
            yield block
    finally:
        f.close()


@route(bp, "/workspaces/<raw_id>/plugins/<name>/download", "GET", auth="workspace", load="live",
       summary="A plugin as a gzip tar of its files (what the SDK's install_plugin fetches)",
       query={"source": "Where the plugin comes from (default local://<name>)"},
       responses={200: "application/gzip", 400: "Bad source or name", 401: "Not this workspace's token",
                  403: "Not allowed", 404: "No such plugin", 413: "Over the size or file cap",
                  422: "Unpinned or integrity failed"})
async def download(call: Call[None], name: str) -> Any:
    check_name(name)
    p = pipeline()
    source: Source = p.parse(request.args.get("source") or f"local://{name}")
    if source.name != name:
        raise BadRequest(f'source resolved to plugin "{source.name}" but URL requested "{name}"',
                         resolved_name=source.name, requested_name=name)
    check_allowed(call.workspace_id, name)
    async with p.stage(source) as staged:
        packed, size = await p.pack(staged)
    headers = {"Content-Disposition": f'attachment; filename="{name}.tar.gz"', "Content-Length": str(size),
               "X-Plugin-Name": name, "X-Plugin-Source": source.raw, "Cache-Control": "no-store"}
    return Response(_stream(packed, p.senders), status=200, content_type="application/gzip", headers=headers)


def _org(org_id: str) -> str:
    org = find(org_id)
    if org is None or org.status is WorkspaceStatus.REMOVED:
        raise NotFound("org not found")
    return org.id


@route(bp, "/orgs/<raw_id>/plugins/allowlist", "GET", auth="admin", summary="An org's plugin allowlist",
       responses={200: "{org_id, plugins, allow_all}", 404: "No such org"})
async def get_allowlist(call: Call[None]) -> Any:
    org = _org(call.workspace_id)
    rows = plugin_rows.allowlist(box().store.db, org)
    return respond({"org_id": org, "allow_all": not rows, "plugins": [
        {"plugin_name": r["plugin_name"], "enabled_by": r["enabled_by"], "enabled_at": rfc3339(r["enabled_at"])}
        for r in rows]})


@route(bp, "/orgs/<raw_id>/plugins/allowlist", "PUT", auth="admin", body=PluginAllowlist,
       summary="Replace an org's plugin allowlist (empty: every plugin allowed)",
       responses={200: "{org_id, plugins, allow_all}", 400: "Bad name or no enabled_by", 404: "No such org"})
async def put_allowlist(call: Call[PluginAllowlist]) -> Any:
    org, body = _org(call.workspace_id), call.body
    if not body.enabled_by.strip():
        raise BadRequest("enabled_by is required")
    for plugin in body.plugins:
        if not valid_name(plugin):
            raise BadRequest("invalid plugin name", plugin_name=plugin)
    await box().store.write(plugin_rows.replace_allowlist(org, body.plugins, body.enabled_by.strip()))
    names = sorted(set(body.plugins))
    return respond({"org_id": org, "plugins": names, "allow_all": not names})
