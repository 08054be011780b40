"""Docker workspaces reach the box with the defaults (issue #11 item 4), against a real engine and the test image.

With ``WORKSPACE_NETWORK=host`` and no ``PLATFORM_URL`` a workspace comes online; with a bridge network that cannot
reach a loopback-only box the box starts and refuses each docker workspace, naming the settings to change;
``molecule-box doctor`` fetches ``PLATFORM_URL`` from a real container on the configured network and fails when
nothing answers there.
Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import httpx
import pytest
import trio

from ..conftest import ADMIN, BoxRunner
from ..ops.conftest import box_env, cli
from .dockerutil import IMAGE_PREFIX, RUNTIME, docker, docker_env, free_port, remove_box
from .test_docker_workspaces import DockerBox

pytestmark = pytest.mark.docker

ENGINE = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


async def test_workspace_comes_online_without_platform_url(runner: BoxRunner) -> None:
    port = free_port()
    env = docker_env(port, WORKSPACE_NETWORK="host")
    del env["PLATFORM_URL"]
    box = await runner.start(**env)
    try:
        async with httpx.AsyncClient(base_url=runner.url, timeout=15) as client:
            docker_box = DockerBox(runner, box, client)
            wid = await docker_box.create(tier=2)
            await docker_box.wait_for(wid, "online", timeout=60)
            found = dict(item.split("=", 1) for item in docker_box.container_of(wid)["Config"]["Env"])
        assert found["PLATFORM_URL"] == f"http://127.0.0.1:{port}"
    finally:
        await runner.stop()
        await trio.to_thread.run_sync(remove_box, box.box_id)


def _doctor_env(data: Path, port: int, **extra: str) -> dict[str, str]:
    settings = {"CONTAINER_BACKEND": "docker", "DOCKER_HOST": ENGINE, "WORKSPACE_NETWORK": "host",
                "WORKSPACE_IMAGE_PREFIX": IMAGE_PREFIX, "ALLOWED_RUNTIMES": RUNTIME, **extra}
    env = box_env(data, port, **settings)
    if "PLATFORM_URL" not in extra:
        env.pop("PLATFORM_URL", None)
    return env


@pytest.mark.parametrize("default_backend", ["docker", "external"])
async def test_bridge_network_and_loopback_box_starts_and_refuses_docker_workspaces(
        runner: BoxRunner, default_backend: str) -> None:
    """The box starts (its remote agents need no bridge) and says once why docker workspaces cannot work; each
    docker create is refused with the settings to change, whether docker is the default backend or is loaded by
    the first create that asks for it."""
    network = f"molecule-box-test-refused-{secrets.token_hex(4)}"
    port = free_port()
    env = docker_env(port, WORKSPACE_NETWORK=network, CONTAINER_BACKEND=default_backend)
    del env["PLATFORM_URL"]
    await runner.start(**env)
    try:
        async with httpx.AsyncClient(base_url=runner.url, timeout=15) as client:
            refused = await client.post("/workspaces", headers=ADMIN,
                                        json={"name": "w", "runtime": RUNTIME, "backend": "docker"})
            assert refused.status_code == 400, refused.text
            body = refused.json()
            assert body["code"] == "workload_refused"
            for setting in (f"WORKSPACE_NETWORK={network}", "BIND_ADDR=127.0.0.1", "WORKSPACE_NETWORK=host"):
                assert setting in body["error"]
            remote = await client.post("/workspaces", headers=ADMIN, json={"name": "laptop", "external": True})
            assert remote.status_code == 201, remote.text
    finally:
        await runner.stop()
    assert network not in docker("network", "ls", "--format", "{{.Name}}").split()


def _platform_check(data: Path, port: int, **extra: str) -> tuple[int, dict[str, str]]:
    done = cli("doctor", "--json", env=_doctor_env(data, port, **extra), timeout=120)
    found = [c for c in json.loads(done.stdout)["checks"] if c["check"] == "platform url"]
    assert len(found) == 1, done.stdout + done.stderr
    return done.returncode, found[0]


async def test_doctor_reaches_the_running_box_from_a_container(runner: BoxRunner, tmp_path: Path) -> None:
    port = free_port()
    env = docker_env(port, WORKSPACE_NETWORK="host")
    del env["PLATFORM_URL"]
    box = await runner.start(**env)
    try:
        _, found = await trio.to_thread.run_sync(_platform_check, tmp_path / "doctor", port)
    finally:
        await runner.stop()
        await trio.to_thread.run_sync(remove_box, box.box_id)
    assert found["status"] == "ok", found
    assert f"reached PLATFORM_URL=http://127.0.0.1:{port}" in found["message"] and "not running" not in found["message"]
    assert docker("ps", "-aq", "--filter", "label=molecule-box.doctor=true").split() == []  # removed again


async def test_doctor_answers_for_a_box_that_is_not_running(tmp_path: Path) -> None:
    code, found = await trio.to_thread.run_sync(_platform_check, tmp_path / "data", free_port())
    assert code == 0 and found["status"] == "ok", found
    assert "it is not running" in found["message"]


async def test_doctor_fails_when_platform_url_does_not_answer(tmp_path: Path) -> None:
    closed = free_port()
    code, found = await trio.to_thread.run_sync(
        lambda: _platform_check(tmp_path / "data", free_port(), PLATFORM_URL=f"http://127.0.0.1:{closed}"))
    assert code == 1 and found["status"] == "fail", found
    assert f"cannot reach PLATFORM_URL=http://127.0.0.1:{closed}" in found["message"]
    assert "refused" in found["message"].lower() and "PLATFORM_URL" in found["fix"]
    assert docker("ps", "-aq", "--filter", "label=molecule-box.doctor=true").split() == []
