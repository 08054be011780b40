"""A real a2a-sdk (1.x) agent for the proxy tests, run as a subprocess: ``python a2a_sdk_agent.py MARKER_DIR``.

Starlette app from the SDK's own routes (JSON-RPC endpoint at ``/rpc`` with the
0.3 compatibility mode on, agent card at the well-known path) served by
hypercorn on asyncio on 127.0.0.1, a free port. The first stdout line is the
JSON-RPC URL. The executor reads its instructions from the message text,
``events=N gap=S``: it publishes the task, then N working status updates with S
seconds between them, then completes. When execute() returns it writes
``<MARKER_DIR>/<task id>.done`` (the time it finished), so a test can tell
whether an event reached the caller before the agent was done.
"""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import sys
import time
from pathlib import Path

import hypercorn.asyncio
import hypercorn.config
from a2a.helpers.proto_helpers import new_task_from_user_message, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types.a2a_pb2 import AgentCapabilities, AgentCard, AgentInterface, AgentSkill, TaskState
from starlette.applications import Starlette

RPC_PATH = "/rpc"


class StepsExecutor(AgentExecutor):
    def __init__(self, markers: Path) -> None:
        self.markers = markers

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        text = context.get_user_input()
        events = int(m.group(1)) if (m := re.search(r"events=(\d+)", text)) else 1
        gap = float(m.group(1)) if (m := re.search(r"gap=([0-9.]+)", text)) else 0.0
        assert context.message is not None
        task = context.current_task or new_task_from_user_message(context.message)
        await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        for i in range(events):
            await updater.update_status(TaskState.TASK_STATE_WORKING,
                                        updater.new_agent_message([new_text_part(f"step {i + 1}/{events}")]))
            await asyncio.sleep(gap)
        await updater.complete(updater.new_agent_message([new_text_part(f"done: {text}")]))
        (self.markers / f"{task.id}.done").write_text(repr(time.time()))

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        raise NotImplementedError


def build_app(url: str, markers: Path) -> Starlette:
    card = AgentCard(
        name="sdk-steps", description="Streams N status updates, then completes", version="1.0.0",
        supported_interfaces=[
            AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version="1.0"),
            AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version="0.3"),
        ],
        capabilities=AgentCapabilities(streaming=True),
        default_input_modes=["text/plain"], default_output_modes=["text/plain"],
        skills=[AgentSkill(id="steps", name="steps", description="counts steps", tags=["test"])],
    )
    handler = DefaultRequestHandler(agent_executor=StepsExecutor(markers), task_store=InMemoryTaskStore(),
                                    agent_card=card)
    routes = [*create_agent_card_routes(card), *create_jsonrpc_routes(handler, RPC_PATH, enable_v0_3_compat=True)]
    return Starlette(routes=routes)


async def main(markers: Path) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.set_inheritable(True)
    port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}{RPC_PATH}"
    config = hypercorn.config.Config()
    config.bind = [f"fd://{sock.fileno()}"]
    config.accesslog = None
    config.graceful_timeout = 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(url, flush=True)
    await hypercorn.asyncio.serve(build_app(url, markers), config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
