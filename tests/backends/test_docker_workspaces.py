"""Docker workspaces end to end: a real box (in this trio run) driving a real engine and the test agent image.

Each test's box has its own id, so its containers are told apart by label and removed at teardown (stopping a
box leaves its containers running, by design). Deadlines are generous for a loaded 2-CPU machine, but every
wait polls every 0.1 s and returns as soon as the condition holds.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from molecule_box.box import Box

from ..conftest import ADMIN, BoxRunner, bearer
from .dockerutil import (
    RUNTIME,
    containers,
    docker,
    docker_env,
    free_port,
    inspect,
    remove_box,
    volumes,
)

pytestmark = pytest.mark.docker

MIB = 1024 * 1024


class DockerBox:
    """A box whose default backend is ``docker``, plus an HTTP client and cleanup of its containers."""

    def __init__(self, runner: BoxRunner, box: Box, client: httpx.AsyncClient) -> None:
        self.runner = runner
        self.box = box
        self.client = client

    async def create(self, name: str = "ws", **fields: Any) -> str:
        body = {"name": name, "runtime": RUNTIME, **fields}
        response = await self.client.post("/workspaces", json=body, headers=ADMIN)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    async def get(self, wid: str) -> dict[str, Any]:
        response = await self.client.get(f"/workspaces/{wid}", headers=ADMIN)
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def wait_for(self, wid: str, status: str, timeout: float = 30) -> dict[str, Any]:
        body: dict[str, Any] = {}
        with trio.move_on_after(timeout):
            while True:
                body = await self.get(wid)
                record = self.box.supervisor.record(wid)
                # online can come (the agent registered) a moment before the start op stores the handle
                if body["status"] == status and (status == "failed" or (record and record.backend_state)):
                    return body
                await trio.sleep(0.1)
        raise AssertionError(f"workspace {wid} is {body.get('status')}, not {status}, after {timeout}s: {body}")

    def container_of(self, wid: str) -> dict[str, Any]:
        record = self.box.supervisor.record(wid)
        assert record is not None and record.backend_state, f"no handle for {wid}"
        return inspect(record.backend_state["container_id"])


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 30) -> None:
    with trio.move_on_after(timeout):
        while not await check():
            await trio.sleep(0.1)
        return
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def cli(*args: str) -> str:
    return await trio.to_thread.run_sync(lambda: docker(*args))


@pytest.fixture
async def docker_box(runner: BoxRunner) -> AsyncIterator[DockerBox]:
    box = await runner.start(**docker_env(free_port()))
    box_id = box.box_id
    try:
        async with httpx.AsyncClient(base_url=runner.url, timeout=15) as client:
            yield DockerBox(runner, box, client)
    finally:
        if runner.box is not None:
            await runner.stop()
        await trio.to_thread.run_sync(remove_box, box_id)


async def test_container_registers_with_the_prewritten_token(docker_box: DockerBox) -> None:
    wid = await docker_box.create(tier=2)
    body = await docker_box.wait_for(wid, "online")
    handle = docker_box.box.supervisor.record(wid).backend_state  # type: ignore[union-attr]
    data = inspect(handle["container_id"])
    assert data["Name"] == f"/ws-{wid[:12]}" and data["State"]["Running"]
    labels = data["Config"]["Labels"]
    assert labels["molecule-box.managed"] == "true" and labels["molecule-box.workspace"] == wid
    assert labels["molecule-box.box"] == docker_box.box.box_id
    env = dict(item.split("=", 1) for item in data["Config"]["Env"])
    assert env["WORKSPACE_ID"] == wid and env["PORT"] == str(handle["port"]) and env["TIER"] == "2"
    assert env["PLATFORM_URL"] == env["MOLECULE_URL"] == docker_box.box.settings.platform_url
    assert "AUTH_TOKEN" not in " ".join(env)  # the token is a file, never an env var
    assert body["url"] == f"http://127.0.0.1:{handle['port']}"
    # The token file: mode 0600, and it is the workspace's live credential (the agent registered with it).
    mode = await cli("exec", data["Id"], "stat", "-c", "%a %s", "/configs/.auth_token")
    assert mode.split()[0] == "600" and int(mode.split()[1]) > 20
    token = (await cli("exec", data["Id"], "cat", "/configs/.auth_token")).strip()
    state = await docker_box.client.get(f"/workspaces/{wid}/state", headers=bearer(token))
    assert state.status_code == 200, state.text
    host = data["HostConfig"]
    assert host["RestartPolicy"]["Name"] == "no"  # the actor owns restarts
    assert host["LogConfig"] == {"Type": "json-file", "Config": {"max-file": "3", "max-size": "10m"}}
    assert host["PidsLimit"] == 1024 and host["Init"] is True
    assert "python3" in " ".join(data["Config"]["Healthcheck"]["Test"])
    assert (await docker_box.client.get(f"/workspaces/{wid}/logs", headers=ADMIN)).status_code == 200


async def test_tier_limits_are_applied(docker_box: DockerBox) -> None:
    ids = {tier: await docker_box.create(f"t{tier}", tier=tier) for tier in (1, 2, 3, 4)}
    for wid in ids.values():
        await docker_box.wait_for(wid, "online")
    cpus = int(docker("info", "--format", "{{.NCPU}}").strip())
    expected = {1: (512, 1.0), 2: (512, 1.0), 3: (2048, 2.0), 4: (4096, 4.0)}
    for tier, wid in ids.items():
        host = docker_box.container_of(wid)["HostConfig"]
        memory, cpu = expected[tier]
        assert host["Memory"] == memory * MIB and host["MemorySwap"] == memory * MIB
        assert host["NanoCpus"] == int(min(cpu, cpus) * 1e9)
        assert host["PidsLimit"] == 1024
        # Never privileged, never the host's PID namespace or the Docker socket without the operator's opt-in.
        assert not host["Privileged"] and host["PidMode"] == ""
        targets = {m["Target"] for m in host["Mounts"]}
        assert "/var/run/docker.sock" not in targets
        if tier == 1:
            assert host["ReadonlyRootfs"] is True
            assert host["Tmpfs"] == {"/tmp": "rw,noexec,nosuid,size=64m"}
            assert targets == {"/configs"}
        else:
            assert not host["ReadonlyRootfs"] and targets == {"/configs", "/workspace"}


async def test_killed_container_is_restarted_by_the_actor(docker_box: DockerBox) -> None:
    wid = await docker_box.create()
    await docker_box.wait_for(wid, "online")
    first = docker_box.container_of(wid)["Id"]
    with docker_box.box.bus.subscribe(lambda e: e.workspace_id == wid and e.type == "WORKSPACE_PROVISIONING") as seen:
        await cli("kill", first)
        with trio.fail_after(20):
            event = await seen.receive()
    assert event.payload["restart"] is True and event.payload["exit_code"] == 137
    await docker_box.wait_for(wid, "online")
    second = docker_box.container_of(wid)
    assert second["Id"] != first and second["State"]["Running"]
    assert len(containers(docker_box.box.box_id)) == 1  # replaced, not duplicated


async def test_crash_loop_ends_failed_with_exit_code_and_output(runner: BoxRunner) -> None:
    box = await runner.start(**docker_env(free_port(), RESTART_LIMIT="2", RESTART_BACKOFF_SECONDS="0.1"))
    try:
        async with httpx.AsyncClient(base_url=runner.url, timeout=15) as client:
            dbox = DockerBox(runner, box, client)
            wid = await dbox.create("crasher", secrets={"TEST_AGENT_EXIT": "3"})
            body = await dbox.wait_for(wid, "failed", timeout=60)
            reason = body["failure_reason"]
            assert "3 times" in reason and "exited with code 3" in reason, reason
            assert "exiting with code 3 as asked" in reason, reason  # the container's own last words
            events = (await client.get(f"/events/{wid}", headers=ADMIN)).json()
            kinds = [e["event_type"] for e in events]
            assert kinds.count("WORKSPACE_PROVISIONING") == 3  # created, then restarted twice
            assert len(containers(box.box_id)) == 1
            await trio.sleep(1)  # failed is final: nothing restarts it any more
            assert (await dbox.get(wid))["status"] == "failed"
            assert len(containers(box.box_id, all=False)) == 0
    finally:
        box_id = box.box_id
        await runner.stop()
        await trio.to_thread.run_sync(remove_box, box_id)


async def test_health_check_degrades_and_recovers(docker_box: DockerBox) -> None:
    wid = await docker_box.create()
    body = await docker_box.wait_for(wid, "online")

    async def agent_health(ok: bool) -> None:
        async with httpx.AsyncClient(timeout=5) as agent:
            response = await agent.post(f"{body['url']}/_test/health", json={"ok": ok})
            assert response.status_code == 200

    async def docker_health(wanted: str) -> bool:
        return bool(docker_box.container_of(wid)["State"]["Health"]["Status"] == wanted)

    await until(lambda: docker_health("healthy"), "the first passing health check")
    await agent_health(False)
    degraded = await docker_box.wait_for(wid, "degraded", timeout=30)
    assert "health check" in degraded["failure_reason"]
    await trio.sleep(3)  # heartbeats keep arriving (every 1.5 s) but do not paper over the failing check
    assert (await docker_box.get(wid))["status"] == "degraded"
    await agent_health(True)
    online = await docker_box.wait_for(wid, "online", timeout=30)
    assert online["failure_reason"] is None
    assert docker_box.container_of(wid)["State"]["Running"]  # degraded is not a reason to restart


async def test_pause_resume_hibernate_wake(docker_box: DockerBox) -> None:
    wid = await docker_box.create()
    await docker_box.wait_for(wid, "online")
    client = docker_box.client
    assert (await client.post(f"/workspaces/{wid}/pause", headers=ADMIN)).status_code == 200
    await until(lambda: trio.to_thread.run_sync(lambda: not docker_box.container_of(wid)["State"]["Running"]),
                "the container to stop")
    await trio.sleep(0.5)
    assert (await docker_box.get(wid))["status"] == "paused"  # the box's own stop is no crash
    assert (await client.post(f"/workspaces/{wid}/resume", headers=ADMIN)).status_code == 200
    await docker_box.wait_for(wid, "online")
    assert (await client.post(f"/workspaces/{wid}/hibernate", headers=ADMIN)).status_code == 200
    await docker_box.wait_for(wid, "hibernated")
    assert not docker_box.container_of(wid)["State"]["Running"]
    assert (await client.post(f"/workspaces/{wid}/wake", headers=ADMIN)).status_code == 200
    await docker_box.wait_for(wid, "online")
    assert len(containers(docker_box.box.box_id)) == 1


async def test_secret_change_restarts_the_container(docker_box: DockerBox) -> None:
    wid = await docker_box.create()
    await docker_box.wait_for(wid, "online")
    first = docker_box.container_of(wid)["Id"]
    response = await docker_box.client.put(f"/workspaces/{wid}/secrets", json={"key": "MODEL_KEY", "value": "s3cret"},
                                           headers=ADMIN)
    assert response.status_code == 200, response.text

    async def replaced() -> bool:
        record = docker_box.box.supervisor.record(wid)
        return bool(record and record.backend_state and record.backend_state["container_id"] != first)

    await until(replaced, "a new container")
    await docker_box.wait_for(wid, "online")
    env = docker_box.container_of(wid)["Config"]["Env"]
    assert "MODEL_KEY=s3cret" in env


async def test_delete_leaves_nothing_behind(docker_box: DockerBox) -> None:
    wid = await docker_box.create(tier=3)
    await docker_box.wait_for(wid, "online")
    box_id = docker_box.box.box_id
    assert len(containers(box_id)) == 1 and len(volumes(box_id)) == 2
    response = await docker_box.client.delete(f"/workspaces/{wid}?confirm=true", headers=ADMIN)
    assert response.status_code == 200, response.text

    async def gone() -> bool:
        return not containers(box_id) and not volumes(box_id)

    await until(gone, "the container and its volumes to be removed")
    assert docker("ps", "-a", "-q", "--filter", f"name=ws-{wid[:12]}").strip() == ""


async def test_a2a_reaches_the_container_through_the_box(docker_box: DockerBox) -> None:
    wid = await docker_box.create()
    await docker_box.wait_for(wid, "online")
    body = {"jsonrpc": "2.0", "id": 1, "method": "message/send",
            "params": {"message": {"role": "user", "parts": [{"kind": "text", "text": "hello container"}]}}}
    response = await docker_box.client.post(f"/workspaces/{wid}/a2a", json=body, headers=ADMIN)
    assert response.status_code == 200, response.text
    assert response.json()["result"]["parts"][0]["text"] == "echo: hello container"


async def test_orphans_of_this_box_are_swept(runner: BoxRunner, tmp_path: Path) -> None:
    port = free_port()
    box = await runner.start(**docker_env(port))
    box_id = box.box_id
    await runner.stop()
    other_box = "other" + uuid.uuid4().hex[:8]
    orphan = f"orphan-{uuid.uuid4().hex[:8]}"
    stranger = f"stranger-{uuid.uuid4().hex[:8]}"
    for name, owner in ((orphan, box_id), (stranger, other_box)):
        await cli("create", "--name", name, "--label", "molecule-box.managed=true",
                  "--label", f"molecule-box.box={owner}", "--label", f"molecule-box.workspace={uuid.uuid4()}",
                  "molecule-box-test-agent-langgraph:latest")
    try:
        await trio.sleep(0.6)  # older than the grace, as a leftover of a crash would be
        await runner.start(**docker_env(port, ORPHAN_GRACE_SECONDS="0.5"))

        async def swept() -> bool:
            return not await cli("ps", "-a", "-q", "--filter", f"name={orphan}")

        await until(swept, "the orphan to be removed", timeout=20)
        assert await cli("ps", "-a", "-q", "--filter", f"name={stranger}"), "another box's container was touched"
    finally:
        await runner.stop()
        await trio.to_thread.run_sync(remove_box, box_id)
        await trio.to_thread.run_sync(remove_box, other_box)


async def test_unpullable_image_fails_fast_with_the_reason(runner: BoxRunner) -> None:
    box = await runner.start(**docker_env(free_port(), WORKSPACE_IMAGE_PREFIX="127.0.0.1:9/no-such-"))
    try:
        async with httpx.AsyncClient(base_url=runner.url, timeout=15) as client:
            dbox = DockerBox(runner, box, client)
            with box.bus.subscribe(lambda e: e.type == "WORKSPACE_PROVISION_PROGRESS") as progress:
                wid = await dbox.create()
                with trio.fail_after(10):
                    first = await progress.receive()
            assert "pulling image 127.0.0.1:9/no-such-langgraph:latest" in first.payload["detail"]
            body = await dbox.wait_for(wid, "failed", timeout=30)
            assert "could not be pulled" in body["failure_reason"], body["failure_reason"]
            assert containers(box.box_id) == []
    finally:
        box_id = box.box_id
        await runner.stop()
        await trio.to_thread.run_sync(remove_box, box_id)


async def test_runtime_outside_allowed_runtimes_is_refused(runner: BoxRunner) -> None:
    await runner.start(**docker_env(free_port(), ALLOWED_RUNTIMES="langgraph,hermes"))
    async with httpx.AsyncClient(base_url=runner.url, timeout=15) as client:
        response = await client.post("/workspaces", json={"name": "x", "runtime": "crewai"}, headers=ADMIN)
        assert response.status_code == 400
        body = response.json()
        assert body["code"] == "workload_refused" and "crewai" in body["error"] and "hermes" in body["error"]
        assert (await client.get("/workspaces", headers=ADMIN)).json() == []
