"""Workspace templates: folders of config files copied into a new workspace's ``/configs``.

The layout is the platform's ``CONFIGS_DIR``: ``<root>/<template>/config.yaml`` plus whatever else the
template ships (prompts, skills ...); ``org-templates/`` holds org trees, not templates. A template is named
by its folder, and a name resolves inside the root or not at all (no absolute names, no ``..``, no link out
of the root). Create with a template pre-fills ``runtime`` and ``model`` from its ``config.yaml`` as the
platform does (``runtime:``; ``model:`` or ``runtime_config.model``); without one the box writes the minimal
``config.yaml`` the platform generates. Imports are tars checked like every archive (``backends/archive``).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from .backends import archive as ar
from .errors import BadRequest, Conflict

#: Caps of a template (an import, or a folder copied into a workspace).
MAX_BYTES = 20 * 1024 * 1024
MAX_FILES = 2000
NOT_TEMPLATES = frozenset({"org-templates"})
#: The platform's runtime allowlist without a manifest; an unknown runtime becomes langgraph in a generated
#: config.yaml.
KNOWN_RUNTIMES = frozenset({"langgraph", "claude-code", "openclaw", "crewai", "autogen", "deepagents", "hermes",
                            "codex", "gemini-cli"})
#: Files whose CRLF line ends become LF when copied into a workspace (the platform's rule).
LF_SUFFIXES = (".sh", ".py", ".md")


@dataclasses.dataclass(frozen=True)
class Prefill:
    runtime: str | None
    model: str | None


def resolve(root: Path, name: str) -> Path:
    """The template's folder, or 400 ``invalid template`` (with a body saying why)."""
    if not name or name.startswith("/") or "\\" in name or "\x00" in name or ".." in name.split("/"):
        raise BadRequest("invalid template: the name must be a folder under the templates directory")
    base = root.resolve()
    folder = (root / name).resolve()
    if folder == base or base not in folder.parents:
        raise BadRequest("invalid template: it resolves outside the templates directory")
    if not (folder / "config.yaml").is_file():
        raise BadRequest(f"invalid template: no template {name!r} (a folder with a config.yaml)")
    return folder


def read_config(folder: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load((folder / "config.yaml").read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def prefill(root: Path, name: str) -> Prefill:
    """``runtime`` and ``model`` as the template's config.yaml gives them (None where it says nothing)."""
    config = read_config(resolve(root, name))
    nested = config.get("runtime_config")
    model = config.get("model")
    if not model and isinstance(nested, dict):
        model = nested.get("model")
    runtime = config.get("runtime")
    return Prefill(runtime=str(runtime) if runtime else None, model=str(model) if model else None)


def listing(root: Path) -> list[dict[str, Any]]:
    """Every template under ``root`` (a folder with a config.yaml), by name."""
    if not root.is_dir():
        return []
    found = []
    for folder in sorted(root.iterdir()):
        if folder.name in NOT_TEMPLATES or folder.name.startswith(".") or folder.is_symlink():
            continue
        if not folder.is_dir() or not (folder / "config.yaml").is_file():
            continue
        config = read_config(folder)
        nested = config.get("runtime_config")
        model = config.get("model") or (nested.get("model") if isinstance(nested, dict) else None)
        skills = config.get("skills")
        found.append({"id": folder.name, "name": str(config.get("name") or folder.name),
                      "description": str(config.get("description") or ""), "tier": config.get("tier"),
                      "runtime": config.get("runtime"), "model": model,
                      "skills": [str(s) for s in skills] if isinstance(skills, list) else []})
    return found


def minimal_config(*, name: str, role: str | None, tier: int, runtime: str, model: str | None) -> bytes:
    """The ``config.yaml`` the platform generates for a workspace without a template."""
    runtime = runtime if runtime in KNOWN_RUNTIMES else "langgraph"
    if not model:
        model = "sonnet" if runtime == "claude-code" else "anthropic:claude-opus-4-7"
    config: dict[str, Any] = {"name": name, "description": role or "", "version": "1.0.0", "tier": tier,
                              "runtime": runtime, "model": model}
    if runtime not in ("langgraph", "deepagents"):
        config["runtime_config"] = {"timeout": 0}
    return yaml.safe_dump(config, sort_keys=False, default_style=None, allow_unicode=True).encode()


def seed(root: Path, template: str | None, *, name: str, role: str | None, tier: int, runtime: str,
         model: str | None) -> bytes:
    """The tar a new workspace's ``/configs`` starts from: the template's regular files (a link in it is
    refused, never followed), or the minimal config.yaml; ``model`` given at create wins over the template's."""
    if template is None:
        config = minimal_config(name=name, role=role, tier=tier, runtime=runtime, model=model)
        return ar.pack([ar.Entry("config.yaml", config)])
    folder = resolve(root, template)
    entries: list[ar.Entry] = []
    total = 0
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink():
            raise BadRequest(f"invalid template: {rel} is a link; links are refused")
        if path.is_dir():
            entries.append(ar.Entry(rel, None, 0o755))
            continue
        if not path.is_file():
            raise BadRequest(f"invalid template: {rel} is not a regular file")
        data = path.read_bytes()
        total += len(data)
        if total > MAX_BYTES or len(entries) >= MAX_FILES:
            raise BadRequest(f"invalid template: over {MAX_BYTES} bytes or {MAX_FILES} files")
        if rel.endswith(LF_SUFFIXES):
            data = data.replace(b"\r\n", b"\n")
        if rel == "config.yaml" and model:
            data = _with_model(data, model)
        entries.append(ar.Entry(rel, data, path.stat().st_mode & 0o777))
    return ar.pack(entries)


def _with_model(data: bytes, model: str) -> bytes:
    """The template's config.yaml with ``model`` set (the runtime reads the model there)."""
    try:
        config = yaml.safe_load(data)
    except yaml.YAMLError:
        return data
    if not isinstance(config, dict) or config.get("model") == model:
        return data
    config["model"] = model
    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True).encode()


def import_archive(root: Path, data: bytes, *, name: str | None, replace: bool) -> dict[str, Any]:
    """Unpack a tar of a template folder into ``root``: one top folder (its name, unless ``name`` is given),
    or loose files with ``name``; it must hold a config.yaml. The folder appears whole or not at all."""
    entries = ar.read(data, max_bytes=MAX_BYTES, max_files=MAX_FILES, what="template archive")
    tops = {e.name.split("/", 1)[0] for e in entries}
    nested = len(tops) == 1 and all("/" in e.name or e.is_dir for e in entries)
    if nested:
        top = tops.pop()
        entries = [dataclasses.replace(e, name=e.name.split("/", 1)[1]) for e in entries if "/" in e.name]
        name = name or top
    if not name:
        raise BadRequest("invalid template archive: name the template (?name=) or pack one top folder")
    if name in NOT_TEMPLATES or name.startswith(".") or ar.clean_path(name) != name or "/" in name:
        raise BadRequest(f"invalid template name {name!r}")
    if not any(e.name == "config.yaml" and not e.is_dir for e in entries):
        raise BadRequest("invalid template archive: no config.yaml at the template's top")
    root.mkdir(parents=True, exist_ok=True)
    target = root / name
    if (target.exists() or target.is_symlink()) and not replace:
        raise Conflict(f"template {name!r} exists (?replace=true replaces it)")
    staging = Path(tempfile.mkdtemp(prefix=".import-", dir=root))
    try:
        for entry in entries:
            path = staging / entry.name
            if entry.is_dir:
                path.mkdir(parents=True, exist_ok=True)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            assert entry.data is not None
            path.write_bytes(entry.data)
            os.chmod(path, entry.mode & 0o755)
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.exists():
            shutil.rmtree(target)
        try:
            staging.rename(target)
        except OSError:  # another import of the same name got there in between
            raise Conflict(f"template {name!r} was imported meanwhile; try again") from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    found = next(t for t in listing(root) if t["id"] == name)
    return found
