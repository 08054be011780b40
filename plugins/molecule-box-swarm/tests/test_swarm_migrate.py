"""``molecule-box migrate``: a docker workspace moves to the swarm through the running box while its A2A endpoint
keeps answering (every call counted: none may fail), and remote agents stay where they are."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from typing import Any

import httpx
import pytest
import trio
from swarmutil import ADMIN, ADMIN_TOKEN, IMAGE, IMAGE_PREFIX, RUNTIME, BoxProcess, Swarm
from test_swarm_box import A2A, running_task, service_of, until

pytestmark = pytest.mark.slow


def docker_main(*args: str) -> str:
    """The machine's own engine (where the docker backend runs its containers)."""
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60, check=False).stdout


async def adocker_main(*args: str) -> str:
    return await trio.to_thread.run_sync(lambda: docker_main(*args))


def remove_main_workloads(box_id: str) -> None:
    """The docker backend's containers and volumes of the box under test, on the machine's engine."""
    leftovers = docker_main("ps", "-aq", "--filter", f"label=molecule-box.box={box_id}").split()
    if leftovers:
        docker_main("rm", "-f", "-v", *leftovers)
    volumes = docker_main("volume", "ls", "-q", "--filter", f"label=molecule-box.box={box_id}").split()
    if volumes:
        docker_main("volume", "rm", "-f", *volumes)


def cli_env(box: BoxProcess) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "VIRTUAL_ENV")},
            "MOLECULE_BOX_URL": box.url, "ADMIN_TOKEN": ADMIN_TOKEN}


async def test_migrate_docker_to_swarm_answering_throughout(swarm: Swarm, box_of: Any) -> None:
    if not (await adocker_main("version", "--format", "{{.Server.Version}}")).strip():
        pytest.skip("the machine's Docker engine is needed for the docker side")
    box: BoxProcess = box_of(swarm)
    base = random.randrange(20000, 32600, 100)
    box.extra = {"CONTAINER_BACKEND": "docker", "WORKSPACE_PORT_RANGE": f"{base}-{base + 99}",
                 "WORKSPACE_HEALTHCHECK_INTERVAL": "1"}
    await box.start()
    box_id = await box.box_id()
    try:
        wid = await box.create()
        remote = (await box.client.post("/workspaces", json={"name": "remote", "external": True})).json()["id"]
        before = await box.wait_for(wid, "online")
        assert before["backend"] == "docker"
        # A file written to the docker workspace's /configs moves with it.
        written = await box.client.put(f"/workspaces/{wid}/files/notes/carried.md", json={"content": "kept\n"})
        assert written.status_code == 200, written.text
        [container] = (await adocker_main("ps", "-q", "--filter", f"label=molecule-box.box={box_id}")).split()
        remote_before = await box.get(remote)

        calls = {"ok": 0, "failed": 0}
        failures: list[str] = []
        stop = trio.Event()

        async def hammer() -> None:
            async with httpx.AsyncClient(base_url=box.url, timeout=10, headers=ADMIN) as client:
                while not stop.is_set():
                    try:
                        response = await client.post(f"/workspaces/{wid}/a2a", json=A2A)
                        good = response.status_code == 200 and "result" in response.json()
                    except (httpx.HTTPError, ValueError) as exc:
                        good, response = False, None
                        failures.append(repr(exc))
                    calls["ok" if good else "failed"] += 1
                    if not good and response is not None:
                        failures.append(f"{response.status_code} {response.text[:200]}")
                    await trio.sleep(0.02)

        env = cli_env(box)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(hammer)
            done = await trio.run_process([sys.executable, "-m", "molecule_box", "migrate", "--all", "--to", "swarm"],
                                          env=env, capture_stdout=True, capture_stderr=True, check=False)
            # The old container goes after the switch (and a drain): keep calling until it has.
            with trio.fail_after(60):
                while True:
                    if not (await adocker_main("ps", "-aq", "--filter", f"id={container}")).strip():
                        break
                    await trio.sleep(0.2)
                seen = calls["ok"] + calls["failed"]
                while calls["ok"] + calls["failed"] < seen + 10:  # and a few calls more, to the new one only
                    await trio.sleep(0.05)
            stop.set()
        assert done.returncode == 0, done.stderr.decode()
        assert b"moved swarm-ws" in done.stdout and b"1 of 1 workspace(s) moved to swarm" in done.stdout

        after = await box.get(wid)
        assert after["backend"] == "swarm" and after["status"] == "online"
        port = int(service_of(swarm, box_id, wid)["Spec"]["Labels"]["molecule-box.port"])
        assert after["url"] == f"http://127.0.0.1:{port}"
        assert calls["failed"] == 0, failures[:5]
        assert calls["ok"] > 20
        carried = (await box.client.get(f"/workspaces/{wid}/files/notes/carried.md")).json()
        assert carried["content"] == "kept\n"
        listed = {e["path"] for e in (await box.client.get(f"/workspaces/{wid}/files")).json()}
        assert "config.yaml" in listed and ".auth_token" not in listed
        task = running_task(swarm, service_of(swarm, box_id, wid)["ID"])
        assert task is not None
        container = task["Status"]["ContainerStatus"]["ContainerID"]
        assert await swarm.adocker("exec", container, "cat", "/configs/notes/carried.md") == "kept\n"
        assert (await box.get(remote))["backend"] == remote_before["backend"] == "external"
        assert (await box.get(remote))["status"] == remote_before["status"]
        # The old token died with the old workload: only the swarm task's is live.
        tokens = (await box.client.get(f"/workspaces/{wid}/tokens")).json()
        assert len(tokens.get("tokens", tokens)) == 1
    finally:
        remove_main_workloads(box_id)


async def test_a_move_that_fails_says_why_and_keeps_the_old_workload(swarm: Swarm, box_of: Any) -> None:
    """The workspace's image exists on the machine's engine only (the swarm cannot pull it): the move fails, the
    CLI says why instead of waiting out its timeout, and the workspace keeps answering from its container."""
    if not (await adocker_main("version", "--format", "{{.Server.Version}}")).strip():
        pytest.skip("the machine's Docker engine is needed for the docker side")
    tag = f"main-only-{random.randrange(1 << 30)}"
    await adocker_main("tag", IMAGE, f"{IMAGE_PREFIX}{RUNTIME}:{tag}")
    box: BoxProcess = box_of(swarm)
    base = random.randrange(20000, 32600, 100)
    box.extra = {"CONTAINER_BACKEND": "docker", "WORKSPACE_PORT_RANGE": f"{base}-{base + 99}",
                 "WORKSPACE_IMAGE_TAG": tag}
    await box.start()
    box_id = await box.box_id()
    try:
        wid = await box.create()
        before = await box.wait_for(wid, "online")
        with trio.fail_after(150):
            done = await trio.run_process(
                [sys.executable, "-m", "molecule_box", "migrate", wid, "--to", "swarm", "--timeout", "120"],
                env=cli_env(box), capture_stdout=True, capture_stderr=True, check=False)
        assert done.returncode != 0, done.stdout.decode()
        said = done.stderr.decode()
        assert "was not moved to swarm" in said and "stays on docker" in said, said
        after = await box.get(wid)
        assert (after["backend"], after["status"], after["url"]) == ("docker", "online", before["url"])
        answer = await box.client.post(f"/workspaces/{wid}/a2a", json=A2A)
        assert answer.status_code == 200 and "result" in answer.json(), answer.text
        history = [e["event_type"] for e in (await box.client.get(f"/events/{wid}")).json()]
        assert history.index("WORKSPACE_MIGRATION_FAILED") < history.index("WORKSPACE_MIGRATING")  # newest first
        await until(lambda: not swarm.ids("service", box_id) and not swarm.ids("secret", box_id),
                    "the half-made service and its secret removed")
        tokens = (await box.client.get(f"/workspaces/{wid}/tokens")).json()
        assert len(tokens.get("tokens", tokens)) == 1  # the new workload's token went with it
    finally:
        remove_main_workloads(box_id)
        await adocker_main("rmi", f"{IMAGE_PREFIX}{RUNTIME}:{tag}")


async def test_a_swarm_workspace_moves_back_to_docker_with_its_files(swarm: Swarm, box_of: Any) -> None:
    """The way back (a swarm workspace onto the box's own engine) is the same move: the container starts beside
    the service with the service's files, the service, its secret and its configs go after the switch."""
    if not (await adocker_main("version", "--format", "{{.Server.Version}}")).strip():
        pytest.skip("the machine's Docker engine is needed for the docker side")
    box: BoxProcess = box_of(swarm)
    base = random.randrange(20000, 32600, 100)
    box.extra = {"WORKSPACE_PORT_RANGE": f"{base}-{base + 99}"}
    await box.start()
    box_id = await box.box_id()
    try:
        wid = await box.create()
        assert (await box.wait_for(wid, "online"))["backend"] == "swarm"
        written = await box.client.put(f"/workspaces/{wid}/files/notes/back.md", json={"content": "home\n"})
        assert written.status_code == 200, written.text
        with trio.fail_after(150):
            done = await trio.run_process(
                [sys.executable, "-m", "molecule_box", "migrate", wid, "--from", "swarm", "--to", "docker"],
                env=cli_env(box), capture_stdout=True, capture_stderr=True, check=False)
        assert done.returncode == 0, done.stderr.decode()
        after = await box.get(wid)
        assert (after["backend"], after["status"]) == ("docker", "online")
        answer = await box.client.post(f"/workspaces/{wid}/a2a", json=A2A)
        assert answer.status_code == 200 and "result" in answer.json(), answer.text
        assert (await box.client.get(f"/workspaces/{wid}/files/notes/back.md")).json()["content"] == "home\n"
        [container] = (await adocker_main("ps", "-q", "--filter", f"label=molecule-box.box={box_id}")).split()
        assert await adocker_main("exec", container, "cat", "/configs/notes/back.md") == "home\n"
        await until(lambda: not swarm.ids("service", box_id) and not swarm.ids("secret", box_id)
                    and not swarm.ids("config", box_id), "the service, its secret and its configs removed")
    finally:
        remove_main_workloads(box_id)
