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
import secrets
import shutil
import tempfile
from collections import OrderedDict
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
    packed: PackCache = dataclasses.field(default_factory=lambda: PackCache())
    #: Download chunks read from disk at once, across all downloads (each download then holds its one chunk
    #: until it is sent): the event loop keeps turns for heartbeats between chunks.
    senders: trio.CapacityLimiter = dataclasses.field(default_factory=lambda: trio.CapacityLimiter(4))

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
        """The staged plugin as a gzip tar, packed whole into a file of the work directory before anything is
        sent (so a failure is a clean error), with its size; memory holds one block at a time however large the
        plugin. Concurrent downloads of an unchanged plugin share one packing (``PackCache``)."""
        return await self.packed.open(staged, self)


class PackCache:
    """Packed plugins by (source, every entry's path, size, mode and mtime): fifty agents downloading the same
    plugin at once cost one gzip run, and any change to a file (its size or mtime) is a new key. At most
    ``KEEP`` packings are kept on disk; an evicted file is unlinked, and a download still reading it keeps its
    open descriptor."""

    KEEP = 8

    def __init__(self) -> None:
        self._done: OrderedDict[tuple[object, ...], tuple[Path, int]] = OrderedDict()
        self._locks: dict[tuple[object, ...], trio.Lock] = {}

    async def open(self, staged: Staged, pipeline: Pipeline) -> tuple[IO[bytes], int]:
        key = (staged.source.raw, staged.tree.entries)
        lock = self._locks.setdefault(key, trio.Lock())
        async with lock:
            found = self._done.get(key)
            if found is None:
                found = await self._pack(staged, pipeline)
                self._done[key] = found
                while len(self._done) > self.KEEP:
                    old, (path, _) = self._done.popitem(last=False)
                    self._locks.pop(old, None)
                    path.unlink(missing_ok=True)
            self._done.move_to_end(key)
            path, size = found
            # Opened under the lock: an eviction cannot unlink it first.
            packed: IO[bytes] = await trio.to_thread.run_sync(lambda: open(path, "rb"))
            return packed, size

    @staticmethod
    async def _pack(staged: Staged, pipeline: Pipeline) -> tuple[Path, int]:
        work = pipeline.work_dir
        work.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = work / f"packed-{secrets.token_hex(8)}.tar.gz"

        def run() -> int:
            with open(path, "xb") as out:
                tree.pack(staged.tree, out)
                return out.tell()

        try:
            return path, await pipeline.run(run)
        except OSError as exc:
            log.warning("packing plugin %s failed: %s", staged.name, exc)
            path.unlink(missing_ok=True)
            raise PackFailed(plugin=staged.name) from None
        except BaseException:
            path.unlink(missing_ok=True)
            raise
