"""An emulator of the Fly Machines API, for tests and for trying the flyio backend without a Fly account.

``python -m molecule_box_fly.emulator --help``; :func:`serve` runs it inside a trio program (the plugin's tests
do). See :mod:`.machines` for what it serves and its fault knobs.
"""

from __future__ import annotations

import trio

from .http import serve_http
from .machines import DOCKER_LABEL, Emulator, Faults

__all__ = ["DOCKER_LABEL", "Emulator", "Faults", "serve"]


async def serve(emulator: Emulator, host: str = "127.0.0.1", port: int = 0, *,
                task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Run ``emulator`` on ``host:port``; ``task_status.started`` gets the port. Returns when cancelled (in
    Docker-backed mode, after removing its containers)."""
    async with trio.open_nursery() as nursery:
        await nursery.start(emulator.run)
        bound = await nursery.start(serve_http, emulator.handle, host, port)
        task_status.started(bound)
