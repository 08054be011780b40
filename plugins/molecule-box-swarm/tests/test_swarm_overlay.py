"""On an overlay network (``SWARM_NETWORK`` other than host) the backend creates an attachable overlay labelled
with the box, and the agent answers at its node's address on its host-mode published port (ingress publishing,
which needs IPVS and iptables, is not used)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
import test_swarm_conformance as conformance
import trio
from molecule_box_swarm import SwarmBackend
from swarmutil import RUNTIME, Swarm, swarm_env

from molecule_box.backends.base import WorkloadSpec
from molecule_box.config import Settings
from molecule_box.testing.conformance import make_spec

OVERLAY = "mb-test-overlay-" + uuid.uuid4().hex[:6]


class TestSwarmBackendOverlay(conformance.TestSwarmBackend):
    network: ClassVar[str] = OVERLAY

    @pytest.fixture
    def backend_settings(self, tmp_path: Path, swarm: Swarm) -> Settings:
        return Settings.from_mapping({"MOLECULE_BOX_DATA": str(tmp_path), "ADMIN_TOKEN": "conformance-admin-token",
                                      **swarm_env(swarm), "SWARM_NETWORK": OVERLAY}, environ={})


@pytest.fixture
def backend_factory() -> Any:
    return SwarmBackend


@pytest.fixture
def backend_settings(tmp_path: Path, swarm: Swarm) -> Settings:
    return Settings.from_mapping({"MOLECULE_BOX_DATA": str(tmp_path), "ADMIN_TOKEN": "conformance-admin-token",
                                  **swarm_env(swarm), "SWARM_NETWORK": OVERLAY}, environ={})


@pytest.fixture(autouse=True, scope="module")
def _remove_overlay(swarm: Swarm) -> Iterator[None]:
    yield
    swarm.docker("network", "rm", OVERLAY, check=False)


async def test_the_agent_answers_on_its_published_port(open_backend: Any, swarm: Swarm,
                                                       conformance_box_id: str) -> None:
    backend = await open_backend()
    spec: WorkloadSpec = make_spec(runtime=RUNTIME)
    workload = await backend.start(spec)
    try:
        network = swarm.inspect(OVERLAY)
        assert network["Driver"] == "overlay" and network["Attachable"] is True
        assert network["Labels"]["molecule-box.managed"] == "true"  # made by the first box that needed it
        assert workload.url == f"http://127.0.0.1:{workload.handle['port']}"
        card = None
        async with httpx.AsyncClient(timeout=2) as client:
            with trio.move_on_after(30):
                while card is None:
                    try:
                        card = (await client.get(f"{workload.url}/.well-known/agent-card.json")).json()
                    except httpx.HTTPError:
                        await trio.sleep(0.2)
        # The agent listens on 8000 in its task; the node's published port reaches it.
        assert card is not None and card["url"] == "http://127.0.0.1:8000"
    finally:
        await backend.destroy(workload.handle)
        swarm.remove_box(conformance_box_id)
