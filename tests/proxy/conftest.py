"""Fixtures of the proxy tests: a real test agent on 127.0.0.1."""

from __future__ import annotations

import pytest
import trio

from .agents import TestAgent, serve_agent


@pytest.fixture
async def agent(nursery: trio.Nursery) -> TestAgent:
    agent = TestAgent()
    agent.url = await serve_agent(nursery, agent)
    return agent
