"""Fixtures of the proxy tests: a real test agent on 127.0.0.1."""

from __future__ import annotations

import httpx
import pytest
import trio

from ..conftest import ADMIN
from .agents import TestAgent, serve_agent


@pytest.fixture
async def agent(nursery: trio.Nursery) -> TestAgent:
    agent = TestAgent()
    agent.url = await serve_agent(nursery, agent)
    return agent


async def wait_logged(client: httpx.AsyncClient, wid: str, calls: int) -> None:
    """Until ``calls`` calls to ``wid`` are in its activity (written off the request path), at most 5 s."""
    with trio.fail_after(5):
        while len((await client.get(f"/workspaces/{wid}/activity?type=a2a_receive", headers=ADMIN)).json()) < calls:
            await trio.sleep(0.02)
