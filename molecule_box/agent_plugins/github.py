"""Fetching a ``github://owner/repo#ref`` source with git: tags, branches and commit SHAs alike.

The platform ran ``git clone --branch <ref>``, which cannot check out a commit SHA (git answers "Remote branch
not found", which it mapped to 404) although its own refusal told callers to pin one. Here the repository is
initialised empty and the ref fetched (``git fetch --depth=1 <url> <ref>``, which takes any of the three), then
``FETCH_HEAD`` checked out. git runs with a deadline, without a terminal prompt or system config, and only over
https; its output goes to the log, never into a response.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import trio

from ..errors import BadGateway, GatewayTimeout, NotFound
from .sources import Source

log = logging.getLogger(__name__)

GITHUB = "https://github.com"
_NOT_FOUND = ("repository not found", "couldn't find remote ref", "could not find remote branch",
              "not found", "does not appear to be a git repository")


def _env(protocols: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "HTTPS_PROXY", "https_proxy", "NO_PROXY"}}
    return keep | {"LANG": "C", "LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1",
                   "GIT_ALLOW_PROTOCOL": protocols}


async def _git(args: list[str], *, env: dict[str, str], source: Source) -> None:
    result = await trio.run_process(["git", *args], capture_stdout=True, capture_stderr=True, check=False,
                                    env=env, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        said = result.stderr.decode(errors="replace").strip()
        log.warning("git %s for %s failed: %s", args[2] if len(args) > 2 else args[0], source.raw, said[-500:])
        if any(phrase in said.lower() for phrase in _NOT_FOUND):
            raise NotFound("failed to fetch plugin from github", source=source.raw)
        raise BadGateway("failed to fetch plugin from github", source=source.raw)


async def fetch(source: Source, dest: Path, *, timeout: float, base_url: str = GITHUB) -> None:
    """Check ``source`` out into the empty directory ``dest`` (its ``.git`` stays: the tree scan skips it).

    ``base_url`` is where ``owner/repo`` is found; only tests point it elsewhere (a local repository)."""
    assert source.scheme == "github" and source.owner is not None
    url = f"{base_url.rstrip('/')}/{source.owner}/{source.name}.git"
    env = _env("https" if base_url == GITHUB else "https:file")
    with trio.move_on_after(timeout) as scope:
        await _git(["init", "-q", str(dest)], env=env, source=source)
        await _git(["-C", str(dest), "fetch", "-q", "--depth=1", "--no-tags", url, source.ref or "HEAD"],
                   env=env, source=source)
        await _git(["-C", str(dest), "-c", "advice.detachedHead=false", "checkout", "-q", "FETCH_HEAD"],
                   env=env, source=source)
    if scope.cancelled_caught:
        raise GatewayTimeout("failed to fetch plugin from github", source=source.raw)
