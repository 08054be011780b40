"""An a2a-sdk client calls a poll-mode agent through the box and gets its answer (issue #11 item 8).

The client is the real a2a-sdk (1.x, and its 0.3 transport) on a card whose one interface is the box's
proxy URL; the agent is the platform's real SDK (``RemoteAgentClient``) fetching its inbox and replying. The
box answers the client's send with a ``Task`` in state submitted and its ``tasks/get`` / ``GetTask`` from
the inbox row: working once the agent fetched the message, completed with the reply once it replied.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from molecule_box.box import Box

from ..conftest import ADMIN, ADMIN_TOKEN, bearer, joined
from .test_proxy import send_body

pytest.importorskip("molecule_agent", reason="the platform's SDK (../shared/vendor) is not installed")

Action = Callable[[Any], Awaitable[Any]]


def _card(proxy_url: str, generation: str, streaming: bool) -> Any:
    from a2a.types.a2a_pb2 import AgentCapabilities, AgentCard, AgentInterface

    return AgentCard(
        name="poller", description="a poll-mode agent behind the box", version="1.0.0",
        supported_interfaces=[AgentInterface(url=proxy_url, protocol_binding="JSONRPC",
                                             protocol_version="1.0" if generation == "1" else "0.3")],
        capabilities=AgentCapabilities(streaming=streaming),
        default_input_modes=["text/plain"], default_output_modes=["text/plain"])


async def a2a(proxy_url: str, headers: dict[str, str], generation: str, action: Action, *,
              streaming: bool = False) -> Any:
    """One a2a-sdk client session (asyncio, on a worker thread, bounded in time) running ``action(client)``."""
    from a2a.client import ClientConfig, ClientFactory

    async def session() -> Any:
        async with httpx.AsyncClient(headers=headers, timeout=30) as http:
            client = ClientFactory(ClientConfig(streaming=streaming, httpx_client=http)).create(
                _card(proxy_url, generation, streaming))
            try:
                return await action(client)
            finally:
                await client.close()

    def in_thread() -> Any:
        return asyncio.run(asyncio.wait_for(session(), 60))

    with trio.fail_after(75):
        return await trio.to_thread.run_sync(in_thread, abandon_on_cancel=True)


def send(text: str) -> Action:
    """Sends ``text``; returns (task id, state) of every task the client got back."""

    async def action(client: Any) -> list[tuple[str, int]]:
        from a2a.types.a2a_pb2 import Message, Part, Role, SendMessageRequest

        request = SendMessageRequest(message=Message(message_id=f"sdk-{time.monotonic_ns()}", role=Role.ROLE_USER,
                                                     parts=[Part(text=text)]))
        return [(r.task.id, r.task.status.state) async for r in client.send_message(request) if r.HasField("task")]

    return action


def get(task_id: str) -> Action:
    """The task's (state, texts of its status message)."""

    async def action(client: Any) -> tuple[int, list[str]]:
        from a2a.types.a2a_pb2 import GetTaskRequest

        task = await client.get_task(GetTaskRequest(id=task_id))
        return task.status.state, [p.text for p in task.status.message.parts]

    return action


def cancel(task_id: str) -> Action:
    async def action(client: Any) -> Any:
        from a2a.types.a2a_pb2 import CancelTaskRequest

        return await client.cancel_task(CancelTaskRequest(id=task_id))

    return action


def state(name: str) -> int:
    from a2a.types.a2a_pb2 import TaskState

    return int(TaskState.Value(f"TASK_STATE_{name}"))


def agent_sdk(url: str, wid: str, token: str, tokens: Path) -> Any:
    from molecule_agent import RemoteAgentClient

    sdk = RemoteAgentClient(wid, url, token_dir=tokens, origin=None)
    sdk.save_token(token)
    return sdk


@pytest.mark.parametrize("generation", ["1", "0.3"])
async def test_a_peer_gets_the_answer_of_a_poll_mode_agent(box: Box, client: httpx.AsyncClient, tmp_path: Path,
                                                           generation: str) -> None:
    poller, token = await joined(client, "poller", url="remote://no-inbound")
    peer, peer_token = await joined(client, "peer", url="remote://no-inbound")  # the reply lands in its inbox
    proxy_url = f"{box.urls[0]}/workspaces/{poller}/a2a"
    as_peer = {"X-Workspace-ID": peer, **bearer(peer_token)}
    tasks = await a2a(proxy_url, as_peer, generation, send("what is 6 x 7?"))
    assert [s for _, s in tasks] == [state("SUBMITTED")], tasks
    task_id = tasks[0][0]
    assert await a2a(proxy_url, as_peer, generation, get(task_id)) == (state("SUBMITTED"), [])

    sdk = agent_sdk(box.urls[0], poller, token, tmp_path / "tokens")
    inbound = await trio.to_thread.run_sync(sdk.fetch_inbound)
    assert [(m.text, m.source, m.source_id) for m in inbound] == [("what is 6 x 7?", "peer_agent", peer)]
    assert await a2a(proxy_url, as_peer, generation, get(task_id)) == (state("WORKING"), [])
    await trio.to_thread.run_sync(sdk.reply, inbound[0], "42")
    assert await a2a(proxy_url, as_peer, generation, get(task_id)) == (state("COMPLETED"), ["42"])

    # The task is its sender's: another workspace asking for it is told there is no such task.
    other, other_token = await joined(client, "other")
    from a2a.utils.errors import TaskNotFoundError

    with pytest.raises(TaskNotFoundError):
        await a2a(proxy_url, {"X-Workspace-ID": other, **bearer(other_token)}, generation, get(task_id))
    # A task operation other than reading it is not the agent's inbox's business: refused, and not stored.
    from a2a.utils.errors import UnsupportedOperationError

    with pytest.raises(UnsupportedOperationError):
        await a2a(proxy_url, as_peer, generation, cancel(task_id))
    assert (await client.get(f"/workspaces/{poller}/inbox", headers=ADMIN)).json()["counts"]["replied"] == 1
    # A caller without A2A-Version (the platform's canvas and SDK) still gets the platform's 202.
    plain = await client.post(f"/workspaces/{poller}/a2a", json=send_body("plain"), headers=as_peer)
    assert plain.status_code == 202 and plain.json()["delivery"] == "poll", plain.text


async def test_the_user_streams_and_reads_the_answer_sent_by_notify(box: Box, client: httpx.AsyncClient,
                                                                    tmp_path: Path) -> None:
    """The operator's a2a-sdk client (admin token, no caller workspace) asks by stream; the agent answers its
    user through /notify, as the SDK's reply() does for a canvas message."""
    poller, token = await joined(client, "poller", url="remote://no-inbound")
    proxy_url = f"{box.urls[0]}/workspaces/{poller}/a2a"
    as_admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    tasks = await a2a(proxy_url, as_admin, "1", send("summarise the day"), streaming=True)
    assert [s for _, s in tasks] == [state("SUBMITTED")], tasks
    sdk = agent_sdk(box.urls[0], poller, token, tmp_path / "tokens")
    inbound = await trio.to_thread.run_sync(sdk.fetch_inbound)
    assert [m.source for m in inbound] == ["canvas_user"]
    await trio.to_thread.run_sync(sdk.reply, inbound[0], "a quiet day")
    assert await a2a(proxy_url, as_admin, "1", get(tasks[0][0])) == (state("COMPLETED"), ["a quiet day"])
    rows = (await client.get(f"/workspaces/{poller}/inbox", headers=ADMIN)).json()
    assert rows["counts"]["replied"] == 1, rows
