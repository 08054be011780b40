"""The one pipeline behind install, download and ``molecule-box plugins add``: resolve, check, stage.

Its steps run in the platform's order, with its bugs fixed: the source is parsed and pinned (400/422) and the
org allowlist asked (403) before anything is fetched; a local plugin is read in place from the registry and a
github one fetched into a private work directory; the tree is scanned without following links under the byte
and file-count caps (413); then ``manifest.json`` integrity and the caller's ``sha256`` pin (422). Any failure
refuses: nothing is shipped or installed on an error (fail closed).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, ParamSpec, TypeVar

import trio

from ..errors import HTTPError, NotFound
from . import github, tree
from .registry import plugin_dir
from .sources import Source, parse

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")


class PackFailed(HTTPError):
    status = 500
    default_message = "failed to pack plugin"


@dataclasses.dataclass(frozen=True)
class Staged:
    """A checked plugin: where its files are (the registry's own directory, or a fetched checkout)."""

    source: Source
    tree: tree.Tree

    @property
    def name(self) -> str:
        return self.source.name


@dataclasses.dataclass(frozen=True)
class Pipeline:
    registry: Path
    #: Private directory for github checkouts and packed downloads (anonymous files, gone when closed).
    work_dir: Path
    limits: tree.Limits
    allow_unpinned: bool
    fetch_timeout: float
    github_url: str = github.GITHUB
    #: Worker threads packing or scanning at once: gzip is CPU work, and the event loop must keep its core.
    threads: trio.CapacityLimiter = dataclasses.field(default_factory=lambda: trio.CapacityLimiter(2))

    def parse(self, text: str | None) -> Source:
        return parse(text, allow_unpinned=self.allow_unpinned)

    @asynccontextmanager
    async def stage(self, source: Source, *, sha256: str | None = None) -> AsyncIterator[Staged]:
        """The checked plugin ``source`` names, for the duration of the block. The caller has parsed the source
        and asked the allowlist for ``source.name``: no fetch happens before both."""
        checkout: Path | None = None
        try:
            if source.scheme == "local":
                root = plugin_dir(self.registry, source.name)
                if root is None:
                    raise NotFound("failed to fetch plugin from local", source=source.raw)
                skip: frozenset[str] = frozenset()
            else:
                self.work_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
                root = checkout = Path(tempfile.mkdtemp(prefix="molecule-plugin-fetch-", dir=self.work_dir))
                await github.fetch(source, checkout, timeout=self.fetch_timeout, base_url=self.github_url)
                skip = frozenset({".git"})
            staged = Staged(source, await self.run(tree.scan, root, self.limits, skip=skip))
            await self.run(tree.check_manifest, staged.tree)
            if sha256 is not None:
                await self.run(tree.check_pin, staged.tree, sha256)
            yield staged
        finally:
            if checkout is not None:
                await trio.to_thread.run_sync(shutil.rmtree, checkout, True)

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn`` in a worker thread, at most ``threads`` at once."""
        return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs), limiter=self.threads)

    async def pack(self, staged: Staged) -> tuple[IO[bytes], int]:
        """The staged plugin packed whole into an anonymous file in the work directory, and its size: nothing is
        sent before packing succeeded, and memory holds one block at a time however large the plugin."""
        self.work_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        out = tempfile.TemporaryFile(dir=self.work_dir)
        try:
            await self.run(tree.pack, staged.tree, out)
            size = out.tell()
            out.seek(0)
        except OSError as exc:
            out.close()
            log.warning("packing plugin %s failed: %s", staged.name, exc)
            raise PackFailed(plugin=staged.name) from None
        except BaseException:
            out.close()
            raise
        return out, size
