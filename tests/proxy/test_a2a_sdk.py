"""The real a2a-sdk on both ends of the box's proxy: SDK client -> POST /workspaces/:id/a2a -> SDK agent.

The agent (tests/proxy/a2a_sdk_agent.py) is the SDK's own Starlette app on
hypercorn/asyncio in a subprocess, with its 0.3 compatibility mode on; the
client is the SDK's ``ClientFactory`` client built from the agent's card with
the interface URLs pointed at the box. Both are asyncio, so each client run
happens in ``asyncio.run`` on a worker thread. The 1.x generation only works
through the proxy when ``A2A-Version`` reaches the agent; the 0.3 generation is
driven by the same SDK's compat transport (``message/send``, ``message/stream``).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from molecule_box.box import Box

from ..conftest import ADMIN, ADMIN_TOKEN, bearer, create_external, joined

AGENT_SCRIPT = Path(__file__).with_name("a2a_sdk_agent.py")
GAP = 1.5  # seconds the agent waits between streamed events: long enough to tell "streamed" from "buffered"


@dataclass
class SdkAgent:
    url: str  # its JSON-RPC endpoint, as registered with the box
    base: str  # where its agent card is served
    markers: Path  # <task id>.done appears when execute() returned
    log: Path


@pytest.fixture
async def sdk_agent(tmp_path: Path) -> AsyncIterator[SdkAgent]:
    markers = tmp_path / "markers"
    markers.mkdir()
    log = tmp_path / "sdk-agent.log"
    with open(log, "wb") as err:
        proc = await trio.lowlevel.open_process([sys.executable, str(AGENT_SCRIPT), str(markers)],
                                                stdout=subprocess.PIPE, stderr=err)
    try:
        assert proc.stdout is not None
        line = b""
        with trio.fail_after(30):  # importing the SDK on a busy 2-core machine takes a few seconds
            while not line.endswith(b"\n"):
                chunk = await proc.stdout.receive_some(1024)
                if not chunk:
                    raise AssertionError(f"the a2a-sdk agent exited early: {log.read_text()}")
                line += chunk
        url = line.decode().strip()
        base = url.rsplit("/", 1)[0]
        async with httpx.AsyncClient(timeout=5) as client:
            with trio.fail_after(20):
                while True:
                    try:
                        if (await client.get(f"{base}/.well-known/agent-card.json")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await trio.sleep(0.1)
        yield SdkAgent(url, base, markers, log)
    finally:
        proc.terminate()
        with trio.move_on_after(10):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
            with trio.move_on_after(5):
                await proc.wait()


@dataclass
class Run:
    """What one SDK client call saw: (seconds since the call started, event summary) per event."""

    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    first_event_agent_done: bool | None = None  # did the agent's done-marker exist when the first event arrived?

    @property
    def states(self) -> list[str]:
        return [e["state"] for _, e in self.events if "state" in e]


async def _sdk_call(card_url: str, proxy_url: str, headers: dict[str, str], text: str, *, streaming: bool,
                    generation: str, markers: Path) -> Run:
    """One SDK client call (asyncio): card from the agent, interfaces rewritten to the box's proxy URL."""
    from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
    from a2a.types.a2a_pb2 import AgentCard, Message, Part, Role, SendMessageRequest

    run = Run()
    async with httpx.AsyncClient(timeout=30) as direct:
        card = await A2ACardResolver(direct, card_url).get_agent_card()
    via_box = AgentCard()
    via_box.CopyFrom(card)
    del via_box.supported_interfaces[:]
    for interface in card.supported_interfaces:
        if interface.protocol_version.startswith(generation):  # "1" -> the 1.0 interface, "0.3" -> the compat one
            rewritten = via_box.supported_interfaces.add()
            rewritten.CopyFrom(interface)
            rewritten.url = proxy_url
    assert len(via_box.supported_interfaces) == 1, card
    async with httpx.AsyncClient(headers=headers, timeout=30) as http:
        client = ClientFactory(ClientConfig(streaming=streaming, httpx_client=http)).create(via_box)
        request = SendMessageRequest(message=Message(
            message_id=f"sdk-{time.monotonic_ns()}", role=Role.ROLE_USER, parts=[Part(text=text)]))
        started = time.monotonic()
        async for response in client.send_message(request):
            summary: dict[str, Any] = {"kind": response.WhichOneof("payload")}
            if response.HasField("task"):
                summary["state"] = response.task.status.state
                summary["task_id"] = response.task.id
                summary["text"] = [p.text for p in response.task.status.message.parts]
            elif response.HasField("status_update"):
                summary["state"] = response.status_update.status.state
                summary["task_id"] = response.status_update.task_id
                summary["text"] = [p.text for p in response.status_update.status.message.parts]
            elif response.HasField("message"):
                summary["text"] = [p.text for p in response.message.parts]
            if not run.events:
                task_id = summary.get("task_id")
                run.first_event_agent_done = bool(task_id) and (markers / f"{task_id}.done").exists()
            run.events.append((time.monotonic() - started, summary))
        await client.close()
    return run


async def sdk_call(agent: SdkAgent, proxy_url: str, headers: dict[str, str], text: str, *, streaming: bool,
                   generation: str = "1") -> Run:
    """Runs the asyncio SDK client on a worker thread, bounded in time."""

    def in_thread() -> Run:
        return asyncio.run(asyncio.wait_for(_sdk_call(
            agent.base, proxy_url, headers, text, streaming=streaming, generation=generation,
            markers=agent.markers), 60))

    with trio.fail_after(75):
        return await trio.to_thread.run_sync(in_thread, abandon_on_cancel=True)


async def target_for(client: httpx.AsyncClient, agent: SdkAgent, name: str = "sdk-agent") -> str:
    """The agent as an external workspace: its JSON-RPC URL given at creation, so it is online at once."""
    created = await create_external(client, name, url=agent.url)
    assert created["status"] == "online", created
    return str(created["id"])


def _state(name: str) -> int:
    from a2a.types.a2a_pb2 import TaskState

    return int(TaskState.Value(name))


async def _activity(client: httpx.AsyncClient, wid: str, want: int) -> list[dict[str, Any]]:
    """The target's a2a_receive rows, once ``want`` of them are committed (they are written off the hot path)."""
    rows: list[dict[str, Any]] = []
    with trio.fail_after(10):
        while len(rows) < want:
            rows = (await client.get(f"/workspaces/{wid}/activity?type=a2a_receive", headers=ADMIN)).json()
            await trio.sleep(0.05)
    return rows


@pytest.mark.parametrize("generation, method", [("1", "SendMessage"), ("0.3", "message/send")])
async def test_send_message_through_the_proxy(box: Box, client: httpx.AsyncClient, sdk_agent: SdkAgent,
                                              generation: str, method: str) -> None:
    wid = await target_for(client, sdk_agent)
    caller, caller_token = await joined(client, "sdk-caller")  # a sibling root: may talk to the target
    proxy_url = f"{box.urls[0]}/workspaces/{wid}/a2a"
    run = await sdk_call(sdk_agent, proxy_url, {"X-Workspace-ID": caller, **bearer(caller_token)},
                         "events=2 gap=0.05 hello", streaming=False, generation=generation)
    assert len(run.events) == 1, run.events  # the blocking call: one final answer
    final = run.events[0][1]
    assert final["kind"] == "task" and final["state"] == _state("TASK_STATE_COMPLETED"), final
    assert final["text"] == ["done: events=2 gap=0.05 hello"]
    # The human/operator path (admin token, no X-Workspace-ID) goes through too.
    human = await sdk_call(sdk_agent, proxy_url, {"Authorization": f"Bearer {ADMIN_TOKEN}"}, "events=1 hi",
                           streaming=False, generation=generation)
    assert human.events[-1][1]["state"] == _state("TASK_STATE_COMPLETED")
    rows = await _activity(client, wid, 2)
    assert {(r["source_id"], r["method"], r["status"]) for r in rows} == {(caller, method, "ok"), (None, method, "ok")}


async def test_version_header_reaches_the_agent(client: httpx.AsyncClient, sdk_agent: SdkAgent) -> None:
    """The control for the 1.x tests: the agent refuses a 1.x method when A2A-Version does not reach it."""
    wid = await target_for(client, sdk_agent)
    body = {"jsonrpc": "2.0", "id": 7, "method": "SendMessage", "params": {"message": {
        "messageId": "v-1", "role": "ROLE_USER", "parts": [{"text": "events=1"}]}}}
    without = await client.post(f"/workspaces/{wid}/a2a", json=body, headers=ADMIN)
    assert without.status_code == 200 and "error" in without.json(), without.text  # treated as 0.3: refused
    body["params"]["message"]["messageId"] = "v-2"  # type: ignore[index]
    with_header = await client.post(f"/workspaces/{wid}/a2a", json=body, headers={**ADMIN, "A2A-Version": "1.0"})
    assert with_header.status_code == 200, with_header.text
    result = with_header.json()
    assert "error" not in result, result
    assert result["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"


@pytest.mark.parametrize("generation", ["1", "0.3"])
async def test_stream_events_arrive_while_the_agent_works(box: Box, client: httpx.AsyncClient,
                                                          sdk_agent: SdkAgent, generation: str) -> None:
    wid = await target_for(client, sdk_agent)
    caller, caller_token = await joined(client, "sdk-caller")
    proxy_url = f"{box.urls[0]}/workspaces/{wid}/a2a"
    events = 3
    run = await sdk_call(sdk_agent, proxy_url, {"X-Workspace-ID": caller, **bearer(caller_token)},
                         f"events={events} gap={GAP}", streaming=True, generation=generation)
    working, completed = _state("TASK_STATE_WORKING"), _state("TASK_STATE_COMPLETED")
    assert run.states[-1] == completed, run.events
    assert run.states.count(working) == events, run.events
    # Streamed, not buffered: the first event came while the agent was still working (its done-marker absent),
    # and the events are spread over the agent's gaps rather than arriving together at the end.
    assert run.first_event_agent_done is False, run.events
    first, last = run.events[0][0], run.events[-1][0]
    assert last - first >= events * GAP * 0.8, run.events
    task_id = run.events[-1][1]["task_id"]
    assert (sdk_agent.markers / f"{task_id}.done").exists()
    rows = await _activity(client, wid, 1)
    method = "SendStreamingMessage" if generation == "1" else "message/stream"
    assert rows[0]["source_id"] == caller and rows[0]["method"] == method and rows[0]["status"] == "ok"
    captured = rows[0].get("response_body")
    if isinstance(captured, str):  # the streamed reply is captured as text (SSE), when the row exposes it
        assert "data:" in captured


async def test_stream_rejected_caller_gets_no_agent_call(box: Box, client: httpx.AsyncClient,
                                                         sdk_agent: SdkAgent) -> None:
    """Hierarchy and auth still apply to the SDK's streaming call: a cousin is refused before the agent is hit."""
    root = await target_for(client, sdk_agent, "sdk-root")
    child = (await create_external(client, "sdk-child", url=sdk_agent.url, parent_id=root))["id"]
    other_root, _ = await joined(client, "other-root")
    cousin, cousin_token = await joined(client, "cousin", parent_id=other_root)
    proxy_url = f"{box.urls[0]}/workspaces/{child}/a2a"
    from a2a.client.errors import A2AClientError

    with pytest.raises(A2AClientError) as info:
        await sdk_call(sdk_agent, proxy_url, {"X-Workspace-ID": cousin, **bearer(cousin_token)}, "events=1",
                       streaming=True)
    assert "403" in str(info.value), info.value
    assert not any(sdk_agent.markers.iterdir())  # the agent never ran

