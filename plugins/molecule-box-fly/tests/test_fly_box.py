"""flyio workspaces end to end: a real box process (``CONTAINER_BACKEND=flyio``) driving the emulator.

In Docker-backed mode each machine is a container of the local test agent image, which reads the token the
plugin delivered as a machine file and registers with the box; that is how a workspace gets ``online``.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import trio
from flyutil import APP, Fly, containers, docker

pytestmark = pytest.mark.slow


async def until(check: Callable[[], Awaitable[bool] | bool], what: str, timeout: float = 60) -> None:
    with trio.move_on_after(timeout):
        while True:
            result = check()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await trio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def online(fly: Fly, box_of: Any, **fields: Any) -> tuple[Any, str, Any]:
    """A started box with one online workspace: (the box, the workspace's id, its machine)."""
    box = box_of(fly)
    await box.start()
    wid = await box.create(**fields)
    await box.wait_for(wid, "online")
    return box, wid, machine_of(fly, wid)


def machine_of(fly: Fly, wid: str) -> Any:
    mine = [m for m in fly.live() if m.config["metadata"]["workspace_id"] == wid]
    assert len(mine) == 1, mine
    return mine[0]


async def test_create_registers_pause_resume_delete(docker_fly: Fly, box_of: Any) -> None:
    box = box_of(docker_fly)
    await box.start()
    response = await box.client.post("/workspaces", json={"name": "fly", "runtime": "langgraph", "tier": 2,
                                                          "metadata": {"region": "ams"}})
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "provisioning" and response.json()["backend"] == "flyio"
    wid = response.json()["id"]
    await box.wait_for(wid, "online")
    machine = machine_of(docker_fly, wid)
    assert machine.name == f"ws-{wid[:12]}" and machine.region == "ams" and machine.state == "started"
    config = machine.config
    assert config["metadata"]["workspace_id"] == wid and config["metadata"]["tier"] == "2"
    assert config["guest"] == {"cpu_kind": "shared", "cpus": 1, "memory_mb": 512}
    assert config["restart"] == {"policy": "on-failure"}
    assert config["env"]["WORKSPACE_ID"] == wid and config["env"]["PLATFORM_URL"] == box.url
    assert all("TOKEN" not in key for key in config["env"])  # the token is a file, never an env var
    [token_file] = config["files"]
    assert token_file["guest_path"] == "/configs/.auth_token" and token_file["mode"] == 0o600
    token = base64.b64decode(token_file["raw_value"]).decode()
    # The file reached the agent (mode 0600) and is the workspace's live credential: the agent registered.
    assert (await docker("exec", machine.container, "stat", "-c", "%a", "/configs/.auth_token")).strip() == "600"
    state = await box.client.get(f"/workspaces/{wid}/state", headers={"Authorization": f"Bearer {token}"})
    assert state.status_code == 200, state.text

    assert (await box.client.post(f"/workspaces/{wid}/pause")).status_code == 200
    await box.wait_for(wid, "paused")
    await until(lambda: machine.state == "stopped", "the machine to stop")
    instance = machine.instance_id
    assert (await box.client.post(f"/workspaces/{wid}/resume")).status_code == 200
    await box.wait_for(wid, "online")
    assert machine_of(docker_fly, wid) is machine and machine.instance_id != instance  # same machine, new token

    assert (await box.client.delete(f"/workspaces/{wid}", params={"confirm": "true"})).status_code == 200
    await until(lambda: not docker_fly.live(), "the machine to be destroyed")

    async def no_container() -> bool:
        return await containers(docker_fly) == []

    await until(no_container, "its container to be gone")


async def test_sigkill_then_restart_adopts_the_machine(docker_fly: Fly, box_of: Any) -> None:
    box, wid, machine = await online(docker_fly, box_of, tier=3)
    starts = len(machine.events)
    await box.kill()
    await box.start()
    await box.wait_for(wid, "online")
    await until(lambda: docker_fly.emulator.calls["GET machines/{id}"] > 0, "the box to look at the machine")
    assert machine_of(docker_fly, wid) is machine and machine.state == "started"
    assert len(machine.events) == starts, "adopt must not restart a running machine"
    assert len(await containers(docker_fly)) == 1


async def test_an_outage_does_not_fail_the_workspace_and_is_reconciled(docker_fly: Fly, box_of: Any) -> None:
    box, wid, machine = await online(docker_fly, box_of, tier=2)
    faults = docker_fly.emulator.faults
    await box.kill()
    faults.server_errors = 10**6
    await box.start()  # the box comes back during the outage: adopt and inspect cannot tell
    await until(lambda: faults.server_errors <= 10**6 - 2, "adopt and inspect to meet the outage")
    assert (await box.get(wid))["status"] == "online"
    faults.server_errors, faults.drop_connections = 0, 10**6
    assert (await box.client.post(f"/workspaces/{wid}/restart")).status_code in (200, 202)
    await until(lambda: faults.drop_connections <= 10**6 - 3, "the restart to meet dropped connections")
    assert (await box.get(wid))["status"] != "failed"
    faults.drop_connections = 0  # recovered: the restart goes through, on the same machine
    await box.wait_for(wid, "online")
    assert machine_of(docker_fly, wid) is machine and machine.state == "started"
    assert len(await containers(docker_fly)) == 1


async def test_server_errors_and_dropped_connections_on_create_are_retried(docker_fly: Fly, box_of: Any) -> None:
    box = box_of(docker_fly)
    await box.start()
    docker_fly.emulator.faults.server_errors = 2
    first = await box.create()
    await box.wait_for(first, "online")
    docker_fly.emulator.faults.drop_connections = 2
    second = await box.create()
    await box.wait_for(second, "online")
    machine_of(docker_fly, first), machine_of(docker_fly, second)  # one machine each


@pytest.mark.parametrize(("knob", "value", "reason"), [
    ("capacity_errors", 1, "workspace start failed: Fly refused the machine: insufficient resources"),
    ("launch_failures", 1, "workspace start failed: Fly machine "),  # ... did not start: it is failed (launch_failed)
    ("start_seconds", 120.0, "provisioning did not finish within 20s"),
])
async def test_each_fault_knob_ends_in_a_clear_state(fly: Fly, box_of: Any, knob: str, value: Any,
                                                     reason: str) -> None:
    box = box_of(fly)
    await box.start(PROVISION_TIMEOUT_SECONDS="20")
    setattr(fly.emulator.faults, knob, value)
    wid = await box.create()
    body = await box.wait_for(wid, "failed")
    shown = body.get("failure_reason") or body.get("last_sample_error") or ""
    assert reason in shown, body
    if knob == "launch_failures":
        assert shown.endswith("did not start: it is failed (launch_failed)"), shown


async def test_create_is_refused_for_an_unknown_tier_or_without_settings(fly: Fly, box_of: Any) -> None:
    box = box_of(fly)
    await box.start()
    response = await box.client.post("/workspaces", json={"name": "t1", "runtime": "langgraph", "tier": 1})
    assert response.status_code == 400 and "tier 1 is not supported by backend flyio" in response.text
    assert not fly.machines
    await box.stop()
    await box.start(FLY_API_TOKEN="")
    response = await box.client.post("/workspaces", json={"name": "x", "runtime": "langgraph"})
    assert response.status_code == 400 and response.json()["code"] == "workload_refused", response.text
    assert "FLY_API_TOKEN" in response.text


async def test_the_emulator_refuses_a_wrong_token(fly: Fly) -> None:
    async with httpx.AsyncClient(base_url=fly.url) as client:
        for auth in ("Bearer nope", "FlyV1 nope", "", f"Basic {APP}"):
            response = await client.get(f"/apps/{APP}/machines", headers={"Authorization": auth})
            assert response.status_code == 401 and response.json() == {"error": "unauthorized"}


async def test_a_crash_is_restarted_by_fly_and_a_crash_loop_ends_with_the_box(docker_fly: Fly, box_of: Any) -> None:
    """``restart.policy=on-failure`` as flyd applies it: one crash and Fly restarts the machine (the box leaves
    it alone); a crash loop and Fly gives up after 10 restarts, the machine ``stopped``: the plugin's watch
    reports it and the box's own restart policy takes over, here failing the workspace with the exit code."""
    box = box_of(docker_fly)
    await box.start(FLY_WATCH_INTERVAL="0.3", RESTART_LIMIT="1")
    wid = await box.create(tier=2)
    await box.wait_for(wid, "online")
    machine = machine_of(docker_fly, wid)
    container, instance = machine.container, machine.instance_id
    await docker("kill", container)  # SIGKILL: exit code 137
    await until(lambda: machine.restarts == 1 and machine.state == "started", "Fly to restart the machine")
    exit_event = next(e for e in machine.public()["events"] if e["type"] == "exit")
    assert exit_event["request"]["exit_event"]["exit_code"] == 137 and exit_event["status"] == "restarting"
    assert machine.container == container and machine.instance_id == instance  # the same machine, restarted
    assert (await docker("inspect", "-f", "{{.State.Running}}", container)).strip() == "true"
    await box.wait_for(wid, "online")
    assert machine_of(docker_fly, wid).instance_id == instance  # the box did not start it again

    crashing = await box.create(name="crashing", tier=2, secrets={"TEST_AGENT_EXIT": "3"})
    body = await box.wait_for(crashing, "failed", timeout=180)
    assert "last time it exited with code 3" in body["failure_reason"], body
    loop = machine_of(docker_fly, crashing)
    assert loop.state == "stopped" and loop.restarts == 10, (loop.state, loop.restarts)
    last_exit = next(e for e in loop.public()["events"] if e["type"] == "exit")
    assert last_exit["status"] == "stopped" and last_exit["request"]["exit_event"]["exit_code"] == 3
    # The box restarted it once (RESTART_LIMIT=1) before giving up: one update of the machine.
    assert sum(e["type"] == "update" for e in loop.events) == 1, loop.events
    assert machine_of(docker_fly, wid).state == "started"  # the other workspace is untouched
