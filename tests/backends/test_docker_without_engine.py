"""Without a reachable engine the docker backend never stops the box and never fails a workspace for it."""

from __future__ import annotations

import httpx
import trio

from molecule_box.backends.base import WorkloadState

from ..conftest import ADMIN, BoxRunner
from .dockerutil import IMAGE_PREFIX, RUNTIME


async def test_box_serves_and_workspaces_wait_for_the_engine(runner: BoxRunner) -> None:
    box = await runner.start(CONTAINER_BACKEND="docker", DOCKER_HOST="unix:///nonexistent/docker.sock",
                             WORKSPACE_IMAGE_PREFIX=IMAGE_PREFIX, WORKSPACE_NETWORK="host")
    backend = await box.backends.get("docker")  # the loaded instance
    async with httpx.AsyncClient(base_url=runner.url, timeout=10) as client:
        assert (await client.get("/health")).status_code == 200
        response = await client.post("/workspaces", json={"name": "w", "runtime": RUNTIME}, headers=ADMIN)
        assert response.status_code == 201, response.text
        wid = response.json()["id"]
        await trio.sleep(1.5)  # the start op retries against the missing engine
        body = (await client.get(f"/workspaces/{wid}", headers=ADMIN)).json()
        assert body["status"] == "provisioning" and body["failure_reason"] is None
        status = await backend.inspect({"workspace_id": wid, "container_id": "0" * 64})
        assert status.state is WorkloadState.UNKNOWN  # never "missing" when the engine cannot tell
        assert not backend.connected  # type: ignore[attr-defined]
        # Delete still answers at once; the cleanup is retried by the actor until the engine is back.
        assert (await client.delete(f"/workspaces/{wid}?confirm=true", headers=ADMIN)).status_code == 200


async def test_without_an_engine_a_bridge_network_that_cannot_reach_the_box_refuses_workspaces(
        runner: BoxRunner) -> None:
    """No engine to run containers: the box starts (external agents need none), docker workspaces are refused."""
    await runner.start(CONTAINER_BACKEND="docker", DOCKER_HOST="unix:///nonexistent/docker.sock",
                       WORKSPACE_IMAGE_PREFIX=IMAGE_PREFIX, WORKSPACE_NETWORK="molecule-box")
    async with httpx.AsyncClient(base_url=runner.url, timeout=10) as client:
        response = await client.post("/workspaces", json={"name": "w", "runtime": RUNTIME}, headers=ADMIN)
        assert response.status_code == 400, response.text
        assert response.json()["code"] == "workload_refused"
        error = response.json()["error"]
        assert "BIND_ADDR=127.0.0.1" in error and "WORKSPACE_NETWORK=host" in error
        external = await client.post("/workspaces", json={"name": "x", "external": True}, headers=ADMIN)
        assert external.status_code == 201, external.text
