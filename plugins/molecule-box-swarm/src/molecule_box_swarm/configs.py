"""A swarm workspace's ``/configs`` as Docker configs, kept by the swarm itself in generations.

A task may run on any node, and node-local volumes would pin it to one, so the files live in the swarm's raft
store, which hands them to whichever node runs the task: each file is a Docker config (one per file and
generation, mounted at ``/configs/<path>`` with the agent's uid/gid and the file's mode), and each generation
has a **manifest**, a config of its own that lists the generation's files and directories and is never
mounted. The newest manifest is the workspace's ``/configs``; it is written last, so a write cut short leaves
only configs no manifest names, which the next start or destroy removes. Configs are immutable: a write or a
delete makes the next generation (unchanged files keep their config), and a start mounts the newest one. So
the files API changes what the next start delivers, and ``?restart=true`` delivers it at once; a running task
sees its files read-only, and what the agent writes elsewhere in ``/configs`` lives only as long as its task.
Swarm caps a config at 500 KiB: a larger file is refused (413).
"""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

import molecule_box.backends.archive as ar
from molecule_box.backends.docker.client import EngineError, EngineNotFound, EngineUnreachable

from . import service as sv
from .client import SwarmClient

#: Label of a workspace's configs: ``manifest`` or ``file``; the generation is ``sv.LABEL_GENERATION``.
LABEL_KIND = "molecule-box.config"
#: Swarm's limit on one config's data.
MAX_FILE = 500 * 1024
CONFIGS_ROOT = "/configs"


@dataclasses.dataclass(frozen=True)
class File:
    path: str
    mode: int
    config_id: str
    config_name: str


@dataclasses.dataclass(frozen=True)
class Generation:
    number: int
    manifest_id: str
    files: tuple[File, ...]
    dirs: tuple[str, ...]


def config_name(box_id: str, workspace_id: str, generation: int, index: int | None = None) -> str:
    base = f"{sv.service_name(box_id, workspace_id)}-cfg-{generation}"
    return base if index is None else f"{base}-{index}"


def _filters(box_id: str, workspace_id: str, kind: str | None = None) -> dict[str, list[str]]:
    found = sv.owned_filters(box_id, workspace_id)
    if kind is not None:
        found["label"].append(f"{LABEL_KIND}={kind}")
    return found


def _generation_of(config: dict[str, Any]) -> int:
    raw = ((config.get("Spec") or {}).get("Labels") or {}).get(sv.LABEL_GENERATION, "")
    return int(raw) if raw.isdigit() else -1


def _manifest(found: dict[str, Any]) -> Generation:
    data = json.loads(base64.b64decode((found.get("Spec") or {}).get("Data") or ""))
    files = tuple(File(str(f["path"]), int(f["mode"]), str(f["id"]), str(f["name"])) for f in data.get("files", []))
    return Generation(_generation_of(found), str(found["ID"]), files, tuple(str(d) for d in data.get("dirs", [])))


async def current(client: SwarmClient, box_id: str, workspace_id: str) -> Generation | None:
    """The newest generation of the workspace's files, or None when it never had any."""
    manifests = await client.configs(_filters(box_id, workspace_id, "manifest"))
    if not manifests:
        return None
    return _manifest(max(manifests, key=_generation_of))


async def _load(client: SwarmClient, box_id: str, workspace_id: str) -> tuple[Generation | None, list[ar.Entry]]:
    found = await current(client, box_id, workspace_id)
    if found is None:
        return None, []
    datas = {str(c["ID"]): base64.b64decode((c.get("Spec") or {}).get("Data") or "")
             for c in await client.configs(_filters(box_id, workspace_id, "file"))}
    entries = [ar.Entry(d, None, 0o755) for d in found.dirs]
    entries += [ar.Entry(f.path, datas.get(f.config_id, b""), f.mode) for f in found.files]
    return found, entries


async def read(client: SwarmClient, box_id: str, workspace_id: str) -> list[ar.Entry]:
    """The files and directories of the newest generation."""
    return (await _load(client, box_id, workspace_id))[1]


def merged(entries: list[ar.Entry], changes: list[ar.Entry], *, replace: bool = False,
           removed: tuple[str, ...] = ()) -> list[ar.Entry]:
    """``entries`` with ``changes`` written over them (or instead of them: ``replace``) and ``removed`` (files or
    whole directories) taken out; never the token file. Raises ``UnsafeArchive`` for a path that passes
    through a file (as the docker backend's ``check_inside`` does for a real directory)."""
    tree: dict[str, ar.Entry] = {} if replace else {e.name: e for e in entries}
    for change in changes:
        if change.name == ar.TOKEN_FILE:
            continue
        parts = change.name.split("/")
        for depth in range(1, len(parts)):
            parent = tree.get("/".join(parts[:depth]))
            if parent is not None and not parent.is_dir:
                raise ar.UnsafeArchive(f"{change.name!r} would pass through the file {parent.name!r}")
        existing = tree.get(change.name)
        if existing is not None and existing.is_dir != change.is_dir:
            raise ar.UnsafeArchive(f"{change.name!r} is a {'directory' if existing.is_dir else 'file'} already")
        tree[change.name] = change
    for path in removed:
        tree = {name: e for name, e in tree.items() if name != path and not name.startswith(path + "/")}
    return sorted(tree.values(), key=lambda e: e.name)


async def write(client: SwarmClient, box_id: str, workspace_id: str, entries: list[ar.Entry]) -> Generation:
    """Make ``entries`` the next generation: a config per new or changed file (an unchanged one keeps its own),
    then the manifest that names them."""
    for entry in entries:
        if entry.data is not None and len(entry.data) > MAX_FILE:
            raise ar.ArchiveTooLarge(f"{entry.name} is {len(entry.data)} bytes; a swarm workspace's file is at "
                                     f"most {MAX_FILE} bytes (Docker's limit on a config)")
    previous, old_entries = await _load(client, box_id, workspace_id)
    generation = max(sv.new_generation(), (previous.number + 1) if previous else 0)
    reusable: dict[tuple[str, int, bytes], File] = {}
    if previous is not None:
        old = {e.name: e.data for e in old_entries}
        for f in previous.files:
            data = old.get(f.path)
            if data is not None:
                reusable[(f.path, f.mode, data)] = f
    files: list[File] = []
    for index, entry in enumerate(e for e in entries if e.data is not None):
        assert entry.data is not None
        kept = reusable.get((entry.name, entry.mode, entry.data))
        if kept is not None:
            files.append(kept)
            continue
        name = config_name(box_id, workspace_id, generation, index)
        labels = sv.labels(box_id, workspace_id, **{LABEL_KIND: "file", sv.LABEL_GENERATION: str(generation)})
        files.append(File(entry.name, entry.mode, await client.create_config(name, entry.data, labels), name))
    dirs = tuple(e.name for e in entries if e.data is None)
    body = {"files": [{"path": f.path, "mode": f.mode, "id": f.config_id, "name": f.config_name} for f in files],
            "dirs": list(dirs)}
    labels = sv.labels(box_id, workspace_id, **{LABEL_KIND: "manifest", sv.LABEL_GENERATION: str(generation)})
    manifest_id = await client.create_config(config_name(box_id, workspace_id, generation),
                                             json.dumps(body).encode(), labels)
    return Generation(generation, manifest_id, tuple(files), dirs)


def mounts(generation: Generation | None, user: tuple[int, int]) -> list[dict[str, Any]]:
    """The ``ContainerSpec.Configs`` that put the generation's files at ``/configs/<path>``."""
    if generation is None:
        return []
    uid, gid = user
    return [{"File": {"Name": f"{CONFIGS_ROOT}/{f.path}", "UID": str(uid), "GID": str(gid), "Mode": f.mode},
             "ConfigID": f.config_id, "ConfigName": f.config_name} for f in generation.files]


async def remove_unused(client: SwarmClient, box_id: str, workspace_id: str, keep: Generation | None, *,
                        everything: bool = False) -> bool:
    """Remove the workspace's configs of generations older than the newest manifest's that ``keep`` (what the
    service mounts now) does not name, or ``everything`` (a destroy). A newer one belongs to a write in
    progress, and one a service still mounts stays for a later call. True when none is left over."""
    found = await client.configs(sv.owned_filters(box_id, workspace_id))
    newest = max((_generation_of(c) for c in found
                  if ((c.get("Spec") or {}).get("Labels") or {}).get(LABEL_KIND) == "manifest"), default=-1)
    wanted = set() if keep is None else {keep.manifest_id, *(f.config_id for f in keep.files)}
    clean = True
    for config in found:
        if not everything and (config.get("ID") in wanted or _generation_of(config) >= newest):
            continue
        try:
            await client.delete_config(str(config["ID"]))
        except EngineNotFound:
            pass
        except EngineError as exc:
            if isinstance(exc, EngineUnreachable):
                raise
            clean = False
    return clean
