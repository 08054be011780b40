"""The registry: one directory per plugin under the plugins directory, described by its ``plugin.yaml``.

The listing has the platform's ``pluginInfo`` fields; absent lists are ``[]`` (the platform sent ``null``) and a
scalar ``version`` is kept as text (the platform dropped an unquoted ``version: 1.0``). Links in the registry are
not followed: a plugin directory or ``plugin.yaml`` that is a link is not listed as one.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from .sources import valid_local_name

#: plugin.yaml beyond this size is not read (the listing shows the name only).
MANIFEST_LIMIT = 256 * 1024
LIST_FIELDS = ("tags", "skills", "runtimes")


def normalise_runtime(runtime: str) -> str:
    return runtime.strip().lower().replace("-", "_")


def read_manifest(plugin_dir: Path) -> dict[str, Any]:
    """The parsed ``plugin.yaml`` (a mapping), or ``{}`` when it is missing, a link, too large or not YAML."""
    try:
        fd = os.open(plugin_dir / "plugin.yaml", os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return {}
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return {}
        raw = f.read(MANIFEST_LIMIT + 1)
    if len(raw) > MANIFEST_LIMIT:
        return {}
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return ""


def info(name: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """The platform's ``pluginInfo`` of a plugin named ``name`` (the directory, never the manifest's ``name``)."""
    out: dict[str, Any] = {"name": name, "version": _text(manifest.get("version")),
                           "description": manifest.get("description") if isinstance(
                               manifest.get("description"), str) else "",
                           "author": manifest.get("author") if isinstance(manifest.get("author"), str) else ""}
    for field in LIST_FIELDS:
        value = manifest.get(field)
        out[field] = [item for item in value if isinstance(item, str)] if isinstance(value, list) else []
    return out


def supports(plugin: dict[str, Any], runtime: str) -> bool:
    """A plugin without ``runtimes`` runs everywhere; ``-`` and ``_`` are the same."""
    runtimes = plugin.get("runtimes") or []
    return not runtimes or normalise_runtime(runtime) in {normalise_runtime(r) for r in runtimes}


def plugin_dir(registry: Path, name: str) -> Path | None:
    """The registry's directory of ``name`` (a real directory, not a link), or None."""
    if not valid_local_name(name):
        return None
    path = registry / name
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return None
    return path if stat.S_ISDIR(mode) else None


def listing(registry: Path, runtime: str | None = None) -> list[dict[str, Any]]:
    """Every plugin of the registry by name (``[]`` for a missing or unreadable directory), only those that
    support ``runtime`` when given."""
    try:
        with os.scandir(registry) as it:
            names = sorted(e.name for e in it if e.is_dir(follow_symlinks=False) and valid_local_name(e.name))
    except OSError:
        return []
    plugins = [info(name, read_manifest(registry / name)) for name in names]
    return [p for p in plugins if runtime is None or supports(p, runtime)]
