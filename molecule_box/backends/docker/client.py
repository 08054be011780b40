"""The bridge to the Docker engine: aiodocker (asyncio) on one trio-asyncio loop inside the box's trio run.

:func:`open_client` opens the asyncio loop (``trio_asyncio.open_loop``) in the
task that calls it — the backend's ``serve()``, in the box's nursery — and
creates one aiodocker client on it. :class:`DockerClient` is the only place
that crosses the boundary: each method is a trio coroutine that runs one
asyncio coroutine with ``loop.run_aio_coroutine`` (no threads), so trio
cancellation cancels the engine request, and engine failures come out as
this module's three exceptions instead of aiohttp's and aiodocker's.

``trio_asyncio`` is imported only when a client is opened: importing it
patches :mod:`asyncio` process-wide (``asyncio.run`` then runs on a trio-based
loop), which a box without Docker workspaces should not pay for.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import trio

if TYPE_CHECKING:
    import aiodocker

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Longest an ordinary engine call may take before the engine counts as unreachable.
CALL_DEADLINE = 30.0
DEFAULT_SOCKET = "unix:///var/run/docker.sock"
#: What the backend reads from ``GET /containers/json``.
SUMMARY_KEYS = ("Id", "Names", "State", "Status", "Labels", "Created")


class EngineError(Exception):
    """The engine answered with an error (``status`` is its HTTP status)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(f"[{status}] {message}")


class EngineNotFound(EngineError):
    """404: no such container, image, volume or network."""


class EngineUnreachable(EngineError):
    """No answer: the engine is down, restarting, or the socket is wrong. Never evidence that a workload died."""

    def __init__(self, message: str) -> None:
        super().__init__(0, message)


def _translate(exc: BaseException) -> EngineError | None:
    import aiodocker
    import aiohttp

    if isinstance(exc, aiodocker.DockerError):
        if exc.status == 900:  # aiodocker's "cannot connect"
            return EngineUnreachable(str(exc.message))
        if exc.status == 404:
            return EngineNotFound(exc.status, str(exc.message))
        return EngineError(exc.status, str(exc.message))
    if isinstance(exc, (aiohttp.ClientError, OSError, asyncio.TimeoutError, asyncio.CancelledError, EOFError)):
        return EngineUnreachable(f"{type(exc).__name__}: {exc}")
    return None


class DockerClient:
    """Trio-facing engine operations; safe to call from any task of the box's trio run, concurrently."""

    def __init__(self, loop: Any, docker: aiodocker.Docker) -> None:
        self._loop = loop
        self.docker = docker

    async def _run(self, factory: Callable[[], Awaitable[T]], *, deadline: float | None = CALL_DEADLINE) -> T:
        async def call() -> T:
            return await factory()

        try:
            with trio.fail_after(deadline if deadline is not None else math.inf):
                return await self._loop.run_aio_coroutine(call())  # type: ignore[no-any-return]
        except trio.TooSlowError:
            raise EngineUnreachable(f"the Docker engine did not answer within {deadline:g}s") from None
        except Exception as exc:
            translated = _translate(exc)
            if translated is None:
                raise
            raise translated from exc

    async def run(self, factory: Callable[[], Awaitable[T]], *, deadline: float | None = CALL_DEADLINE) -> T:
        """Run one asyncio coroutine against ``self.docker`` with this bridge's deadline and error translation:
        for backends built on the same engine connection (the swarm plugin) whose engine calls have no method
        here. ``deadline`` None: none of its own (the caller bounds it)."""
        return await self._run(factory, deadline=deadline)

    # -- engine -------------------------------------------------------------------------------

    async def info(self) -> dict[str, Any]:
        async def info() -> dict[str, Any]:
            return dict(await self.docker.system.info())

        return await self._run(info, deadline=10)

    # -- containers ---------------------------------------------------------------------------

    async def inspect_container(self, ref: str) -> dict[str, Any]:
        return await self._run(lambda: self.docker.containers.container(ref).show())

    async def list_containers(self, filters: dict[str, list[str]]) -> list[dict[str, Any]]:
        async def listing() -> list[dict[str, Any]]:
            found = await self.docker.containers.list(all=True, filters=json.dumps(filters))
            return [{key: c[key] for key in SUMMARY_KEYS if key in c} for c in found]

        return await self._run(listing)

    async def create_container(self, config: dict[str, Any], name: str) -> str:
        async def create() -> str:
            container = await self.docker.containers.create(config, name=name)
            return str(container.id)

        return await self._run(create)

    async def put_archive(self, container_id: str, path: str, data: bytes) -> None:
        container = self.docker.containers.container(container_id)
        await self._run(lambda: container.put_archive(path, data))  # type: ignore[no-untyped-call]

    async def get_archive(self, container_id: str, path: str) -> bytes:
        """The tar the engine makes of ``path`` in the container (running or not), as bytes."""

        async def read() -> bytes:
            tar = await self.docker.containers.container(container_id).get_archive(path)
            fileobj = tar.fileobj
            assert isinstance(fileobj, io.BytesIO)
            return fileobj.getvalue()

        return await self._run(read)

    async def wait_container(self, container_id: str, deadline: float) -> int:
        """Wait for the container to exit; its exit code."""

        async def wait() -> int:
            done = await self.docker.containers.container(container_id).wait()
            return int(done.get("StatusCode", -1))

        return await self._run(wait, deadline=deadline)

    async def start_container(self, container_id: str) -> None:
        await self._run(lambda: self.docker.containers.container(container_id).start())

    async def stop_container(self, container_id: str, grace: float) -> None:
        seconds = max(0, math.ceil(grace))
        await self._run(lambda: self.docker.containers.container(container_id).stop(t=seconds),
                        deadline=seconds + CALL_DEADLINE)

    async def remove_container(self, container_id: str) -> None:
        await self._run(lambda: self.docker.containers.container(container_id).delete(force=True, v=True))

    async def logs(self, container_id: str, tail: int) -> str:
        async def read() -> str:
            lines = await self.docker.containers.container(container_id).log(stdout=True, stderr=True, tail=tail)
            return "".join(lines)

        return await self._run(read)

    # -- images, volumes, networks ------------------------------------------------------------

    async def inspect_image(self, image: str) -> dict[str, Any]:
        return await self._run(lambda: self.docker.images.inspect(image))

    async def pull(self, repo: str, tag: str, on_progress: Callable[[dict[str, Any]], None]) -> None:
        """Pull ``repo:tag``, calling ``on_progress`` (synchronously, in this trio run) per progress record.
        No deadline of its own: the caller bounds it."""
        async def pull() -> None:
            async for record in self.docker.images.pull(repo, tag=tag, stream=True):
                on_progress(record)

        await self._run(pull, deadline=None)

    async def list_volumes(self, filters: dict[str, list[str]]) -> list[dict[str, Any]]:
        async def listing() -> list[dict[str, Any]]:
            found = await self.docker.volumes.list(filters=filters)  # type: ignore[no-untyped-call]
            return [dict(v) for v in (found or {}).get("Volumes") or []]

        return await self._run(listing)

    async def inspect_volume(self, name: str) -> dict[str, Any]:
        async def show() -> dict[str, Any]:
            volume = await self.docker.volumes.get(name)  # type: ignore[no-untyped-call]
            return dict(await volume.show())

        return await self._run(show)

    async def remove_volume(self, name: str) -> None:
        async def remove() -> None:
            volume = await self.docker.volumes.get(name)  # type: ignore[no-untyped-call]
            await volume.delete()

        await self._run(remove)

    async def find_network(self, name: str) -> dict[str, Any] | None:
        async def find() -> dict[str, Any] | None:
            found = await self.docker.networks.list(filters={"name": [name]})  # substring match: check exactly
            return next((dict(n) for n in found if n.get("Name") == name), None)

        return await self._run(find)

    async def create_network(self, config: dict[str, Any]) -> None:
        await self._run(lambda: self.docker.networks.create(config))

    # -- events -------------------------------------------------------------------------------

    async def watch_events(self, filters: dict[str, list[str]], sink: Callable[[dict[str, Any]], None]) -> None:
        """Stream engine events matching ``filters`` into ``sink`` until the engine closes the stream.

        ``sink`` is called from the asyncio side as each event arrives and must only enqueue (a trio memory
        channel's ``send_nowait``): a listener slower than 100 ms loses events at the engine.
        """
        from aiodocker.events import DockerEvents

        async def watch() -> None:
            events = DockerEvents(self.docker)  # type: ignore[no-untyped-call]  # fresh per subscription
            subscriber = events.subscribe(create_task=False)  # type: ignore[no-untyped-call]
            runner = asyncio.ensure_future(events.run(filters=json.dumps(filters)))
            try:
                while True:
                    item = await subscriber.get()
                    if item is None:
                        break
                    sink(item)
            finally:
                if not runner.done():
                    runner.cancel()
                    try:
                        await runner
                    except BaseException:  # already leaving; the reason is the outer one
                        log.debug("docker: event stream reader ended while closing", exc_info=True)
            await runner  # the stream's own error, if it ended with one

        await self._run(watch, deadline=None)


async def _make_docker(docker_host: str | None) -> aiodocker.Docker:
    import aiodocker
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
    try:
        return aiodocker.Docker(url=docker_host or None, timeout=timeout)
    except (ValueError, AssertionError):
        # No socket found anywhere yet (the engine may start later): use the default and keep retrying.
        return aiodocker.Docker(url=DEFAULT_SOCKET, timeout=timeout)


@asynccontextmanager
async def open_client(docker_host: str | None) -> AsyncIterator[DockerClient]:
    """Open the asyncio loop and the aiodocker client for the caller's lifetime; close both on exit.

    Never fails because the engine is unreachable: the client connects per request.
    """
    import trio_asyncio  # type: ignore[import-untyped]

    async with trio_asyncio.open_loop() as loop:
        docker = await loop.run_aio_coroutine(_make_docker(docker_host))
        try:
            yield DockerClient(loop, docker)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                try:
                    await loop.run_aio_coroutine(docker.close())
                except Exception:  # closing a client of a dead engine must not mask the real exit reason
                    log.debug("closing the Docker client failed", exc_info=True)
