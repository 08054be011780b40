"""``molecule-box plugins add|list``: the agent plugin registry on the box's host.

``add`` stages a plugin into the registry (``MOLECULE_BOX_PLUGINS_DIR``) through the same checks an install
runs: links are left out and never followed, the byte and file caps are counted while reading, a github source
must be pinned, and ``manifest.json`` integrity must hold. The copy is made beside the registry's entry and
renamed into place, so a failed add leaves the registry as it was.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

import click
import trio

from ..agent_plugins import registry, tree
from ..agent_plugins.pipeline import Pipeline
from ..agent_plugins.sources import valid_local_name
from ..config import Settings
from ..errors import HTTPError
from .service import _settings, env_file_option


def _pipeline(settings: Settings) -> Pipeline:
    # Its own work directory: the running box empties its own at start.
    return Pipeline(registry=settings.plugins_dir, work_dir=Path(tempfile.gettempdir()),
                    limits=tree.Limits(settings.plugin_max_dir_bytes, settings.plugin_max_files),
                    allow_unpinned=settings.plugin_allow_unpinned, fetch_timeout=settings.plugin_fetch_timeout)


def _install(staged: tree.Tree, dest: Path, *, force: bool) -> None:
    """Copy ``staged`` into the registry as ``dest``, atomically (a rename), replacing it only with ``force``."""
    if dest.exists() and not force:
        raise click.ClickException(f"{dest.name} is already in the registry (--force replaces it)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tag = secrets.token_hex(4)
    fresh = dest.parent / f".staging-{dest.name}-{tag}"
    try:
        tree.copy(staged, fresh)
        if dest.exists():
            old = dest.parent / f".old-{dest.name}-{tag}"
            os.rename(dest, old)
            os.rename(fresh, dest)
            shutil.rmtree(old)
        else:
            os.rename(fresh, dest)
    finally:
        shutil.rmtree(fresh, ignore_errors=True)


async def _add_github(settings: Settings, source: str, name: str | None, force: bool) -> str:
    pipeline = _pipeline(settings)
    parsed = pipeline.parse(source)
    if parsed.scheme != "github":
        raise click.ClickException("only a directory or a github://owner/repo#ref source can be added")
    async with pipeline.stage(parsed) as staged:
        target = _target(name or staged.name)
        _install(staged.tree, settings.plugins_dir / target, force=force)
    return target


def _target(name: str) -> str:
    if not valid_local_name(name):
        raise click.ClickException(f"{name!r} is not a plugin name: lower-case letters, digits, '.', '_', '-' "
                                   "(use --name)")
    return name


def _add(settings: Settings, source: str, name: str | None, force: bool) -> str:
    if "://" in source:
        return trio.run(_add_github, settings, source, name, force)
    path = Path(source).expanduser()
    if not path.is_dir() or path.is_symlink():
        raise click.ClickException(f"{source} is not a directory")
    target = _target(name or path.resolve().name)
    scanned = tree.scan(path, _pipeline(settings).limits)
    tree.check_manifest(scanned)
    _install(scanned, settings.plugins_dir / target, force=force)
    return target


@click.group("plugins")
def plugins_group() -> None:
    """The agent plugin registry (docs/agent-plugins.md)."""


@plugins_group.command("add")
@click.argument("source")
@click.option("--name", help="Registry name (default: the directory's or the repository's name).")
@click.option("--force", is_flag=True, help="Replace a plugin of the same name.")
@env_file_option
def add(source: str, name: str | None, force: bool, env_file: Path | None) -> None:
    """Stage SOURCE (a directory, or github://owner/repo#ref) into the registry."""
    settings = _settings(env_file)
    try:
        added = _add(settings, source, name, force)
    except HTTPError as exc:
        details = "".join(f" ({k}: {v})" for k, v in exc.extra.items() if k != "source")
        click.echo(f"molecule-box: refused: {exc.message}{details}", err=True)
        sys.exit(1)
    except OSError as exc:
        click.echo(f"molecule-box: {exc}", err=True)
        sys.exit(1)
    click.echo(f"added {added} to {settings.plugins_dir}")


@plugins_group.command("list")
@env_file_option
def list_plugins(env_file: Path | None) -> None:
    """The registry's plugins, one per line: name, version, runtimes."""
    settings = _settings(env_file)
    for plugin in registry.listing(settings.plugins_dir):
        runtimes = ",".join(plugin["runtimes"]) or "any runtime"
        click.echo(f"{plugin['name']}\t{plugin['version'] or '-'}\t{runtimes}")


def register(group: click.Group) -> None:
    group.add_command(plugins_group)
