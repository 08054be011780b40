"""Placement from a workspace's metadata: ``node`` (a hostname) and ``node.<label>`` become constraints; a
service no node satisfies stays pending, with Swarm's reason sent as progress, and never runs elsewhere."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import trio
from molecule_box_swarm import SwarmBackend
from molecule_box_swarm.service import constraints
from swarmutil import RUNTIME, Swarm, swarm_env

from molecule_box.backends.base import BackendEvent, WorkloadState
from molecule_box.config import Settings
from molecule_box.testing.conformance import make_spec


@pytest.fixture
def backend_factory() -> Any:
    return SwarmBackend


@pytest.fixture
def backend_settings(tmp_path: Path, swarm: Swarm) -> Settings:
    return Settings.from_mapping({"MOLECULE_BOX_DATA": str(tmp_path), **swarm_env(swarm)}, environ={})


def test_metadata_keys_become_constraints() -> None:
    assert constraints({"node": "gpu-1", "node.molecule-box.pool": "a", "node_role": "worker", "region": "x",
                        "node_id": "abc", "node_role_bad": "manager"}) == [
        "node.hostname==gpu-1", "node.labels.molecule-box.pool==a", "node.id==abc", "node.role==worker"]
    assert constraints({"node": "a==b"}) == [] and constraints({"node_role": "boss"}) == []


async def test_a_service_runs_only_where_its_metadata_places_it(open_backend: Any, swarm: Swarm,
                                                                conformance_box_id: str,
                                                                backend_events: list[BackendEvent]) -> None:
    backend = await open_backend()
    hostname = swarm.docker("info", "--format", "{{.Name}}").strip() or socket.gethostname()
    placed = make_spec(runtime=RUNTIME, metadata={"node": hostname})
    nowhere = make_spec(runtime=RUNTIME, metadata={"node.molecule-box.pool": "nowhere"})
    try:
        workload = await backend.start(placed)
        assert workload.handle["node"] == hostname and workload.handle["node_id"]
        with trio.move_on_after(5):  # a start with no node to run on never returns: the actor's deadline ends it
            await backend.start(nowhere)
            raise AssertionError("a service no node satisfies must not start")
        status = await backend.inspect({"workspace_id": nowhere.workspace_id})
        assert status.state is WorkloadState.STARTING
        reasons = [e.detail or "" for e in backend_events if e.workspace_id == nowhere.workspace_id]
        assert any("no suitable node" in reason for reason in reasons), reasons
    finally:
        swarm.remove_box(conformance_box_id)
