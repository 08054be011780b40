"""The flyio backend against the emulator, call by call: what it sends, how it reads every non-2xx, how many
calls a start costs."""

from __future__ import annotations

import base64
import dataclasses
import logging
from typing import Any

import httpx
import pytest
import trio
from flyutil import APP, TOKEN, Fly, context
from molecule_box_fly import FlyBackend

from molecule_box.backends.base import BackendError, WorkloadState
from molecule_box.testing import make_spec


async def open_backend(nursery: trio.Nursery, fly: Fly, **settings: Any) -> FlyBackend:
    backend = FlyBackend(context(fly, "box-" + APP, **settings))
    await nursery.start(backend.serve)
    return backend


async def test_start_sends_the_documented_machine(nursery: trio.Nursery, fly: Fly) -> None:
    backend = await open_backend(nursery, fly, region="fra")
    spec = make_spec(runtime="langgraph", tier=4, metadata={"region": "syd"})
    fly.emulator.calls.clear()
    workload = await backend.start(spec)
    # Happy path: list (leftovers), create, one /wait.
    assert sum(fly.emulator.calls.values()) == 3, fly.emulator.calls
    [machine] = fly.live()
    assert workload.handle == {"workspace_id": spec.workspace_id, "machine_id": machine.id, "app": APP,
                               "instance_id": machine.instance_id, "region": "syd",
                               "created": workload.handle["created"]}
    config = machine.config
    assert machine.name == f"ws-{spec.workspace_id[:12]}" and machine.state == "started"
    assert config["image"] == "ghcr.io/molecule-ai/workspace-langgraph:latest"
    assert config["guest"] == {"cpu_kind": "shared", "cpus": 4, "memory_mb": 4096}
    assert config["metadata"] == {"molecule_box": "box-" + APP, "workspace_id": spec.workspace_id, "tier": "4"}
    assert config["env"] == {**spec.env, "PORT": "8000"}
    assert base64.b64decode(config["files"][0]["raw_value"]).decode() == spec.auth_token
    # Without metadata.region, FLY_REGION decides.
    other = await backend.start(make_spec(runtime="langgraph", tier=3))
    assert other.handle["region"] == "fra"


async def test_a_flyv1_token_is_sent_as_it_is(nursery: trio.Nursery, fly: Fly) -> None:
    backend = await open_backend(nursery, fly, api_token=f"FlyV1 {TOKEN}")
    assert backend.client.http.headers["Authorization"] == f"FlyV1 {TOKEN}"
    assert (await backend.list_managed()) == []
    wrong = await open_backend(nursery, fly, api_token="FlyV1 wrong")
    with pytest.raises(BackendError, match="unauthorized"):
        await wrong.list_managed()
    assert (await wrong.inspect({"workspace_id": "w", "machine_id": "m"})).state is WorkloadState.UNKNOWN


async def test_outages_are_unknown_never_gone(nursery: trio.Nursery, fly: Fly) -> None:
    backend = await open_backend(nursery, fly)
    workload = await backend.start(make_spec(runtime="langgraph"))
    fly.emulator.faults.server_errors = 1
    assert (await backend.inspect(workload.handle)).state is WorkloadState.UNKNOWN
    fly.emulator.faults.drop_connections = 1
    assert (await backend.inspect(workload.handle)).state is WorkloadState.UNKNOWN
    fly.emulator.faults.server_errors = 1
    assert await backend.adopt(workload.handle) == workload.handle  # kept: the actor decides later
    assert (await backend.inspect(workload.handle)).state is WorkloadState.RUNNING
    # A stop and a destroy during an outage are retried until the API answers (the caller's deadline bounds it).
    fly.emulator.faults.server_errors, fly.emulator.faults.drop_connections = 2, 2
    await backend.stop(workload.handle)
    assert (await backend.inspect(workload.handle)).state is WorkloadState.STOPPED
    fly.emulator.faults.server_errors = 3
    await backend.destroy(workload.handle)
    assert fly.live() == []


async def test_refusals_become_reasons(nursery: trio.Nursery, fly: Fly) -> None:
    backend = await open_backend(nursery, fly)
    fly.emulator.faults.capacity_errors = 1
    with pytest.raises(BackendError, match="Fly refused the machine: insufficient resources"):
        await backend.start(make_spec(runtime="langgraph"))
    fly.emulator.faults.launch_failures = 1
    with pytest.raises(BackendError, match=r"did not start: it is failed \(launch_failed\)"):
        await backend.start(make_spec(runtime="langgraph"))
    with pytest.raises(BackendError, match="tier 1 is not supported"):
        await backend.start(make_spec(runtime="langgraph", tier=1))


async def test_the_token_is_never_logged(nursery: trio.Nursery, fly: Fly, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    backend = await open_backend(nursery, fly)
    spec = make_spec(runtime="langgraph")
    fly.emulator.faults.server_errors = 2
    fly.emulator.faults.drop_connections = 1
    await backend.start(spec)
    assert "retrying" in caplog.text
    assert TOKEN not in caplog.text and str(spec.auth_token) not in caplog.text


async def test_admit_names_missing_settings(nursery: trio.Nursery, fly: Fly) -> None:
    backend = await open_backend(nursery, fly, api_token="", app="")
    with pytest.raises(BackendError, match="needs FLY_API_TOKEN and FLY_WORKSPACE_APP"):
        backend.admit(runtime="langgraph", tier=2)


async def test_an_update_is_made_under_a_lease_of_its_own(nursery: trio.Nursery, fly: Fly) -> None:
    """A start that finds the workspace's machine updates it under a lease (Fly's advice when more than one
    client may touch an app): a lease another client holds is waited out, the update carries the nonce (the
    emulator refuses a change of a leased machine without it), and the lease is released after."""
    backend = await open_backend(nursery, fly)
    spec = make_spec(runtime="langgraph")
    first = await backend.start(spec)
    [machine] = fly.live()
    version = machine.version
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=f"{fly.url}/apps/{APP}/machines/{machine.id}", headers=headers) as other:
        held = await other.post("/lease", json={"ttl": 60})
        assert held.status_code == 201, held.text
        fly.emulator.calls.clear()
        done = trio.Event()

        async def restart() -> None:
            await backend.start(dataclasses.replace(spec, previous=first.handle))
            done.set()

        nursery.start_soon(restart)
        with trio.fail_after(20):  # refused at least once: the other client's lease is held
            while True:
                if fly.emulator.calls["POST machines/{id}/lease"] >= 2:
                    break
                await trio.sleep(0.05)
        assert machine.version == version and not done.is_set()  # nothing changed under another's lease
        released = await other.request("DELETE", "/lease", headers={"fly-machine-lease-nonce":
                                                                    held.json()["data"]["nonce"]})
        assert released.status_code == 200
    with trio.fail_after(20):
        await done.wait()
    assert machine.version == version + 1 and machine.state == "started"
    assert machine.lease is None, "the backend released its lease"
    assert fly.emulator.calls["POST machines/{id}"] == 1 and fly.emulator.calls["DELETE machines/{id}/lease"] == 2
