"""The volumes of a failed start go with the workspace (issue #10 item 11), against a real engine.

A start that fails after the engine created the container (here: an image whose ``USER`` does not exist)
leaves the workspace's volumes behind with no container and no stored handle."""

from __future__ import annotations

import functools
import os
import subprocess
import uuid

import httpx
import pytest
import trio

from ..conftest import ADMIN, BoxRunner
from .dockerutil import IMAGE, RUNTIME, containers, docker, docker_env, free_port, remove_box, volumes

pytestmark = pytest.mark.docker

BROKEN_PREFIX = "molecule-box-test-broken-"


@functools.cache
def broken_image() -> None:
    """The test agent with a USER the engine cannot find: create succeeds (volumes too), start fails."""
    done = subprocess.run(["docker", "build", "-q", "-t", f"{BROKEN_PREFIX}{RUNTIME}:latest", "-"],
                          input=f"FROM {IMAGE}\nUSER nosuchuser\n", text=True, capture_output=True, timeout=120,
                          check=False, env={**os.environ, "DOCKER_BUILDKIT": "0"})
    assert done.returncode == 0, done.stderr


async def failed_start(client: httpx.AsyncClient, box_id: str) -> tuple[str, list[str]]:
    """A tier 3 workspace (a /configs and a /workspace volume) whose start failed; (its id, its volumes)."""
    created = await client.post("/workspaces", json={"name": "broken", "runtime": RUNTIME, "tier": 3}, headers=ADMIN)
    assert created.status_code == 201, created.text
    wid = created.json()["id"]
    with trio.fail_after(60):
        while (body := (await client.get(f"/workspaces/{wid}", headers=ADMIN)).json())["status"] != "failed":
            await trio.sleep(0.1)
    assert "nosuchuser" in body["failure_reason"], body
    left = await trio.to_thread.run_sync(volumes, box_id)
    assert len(left) == 2 and await trio.to_thread.run_sync(containers, box_id) == []
    return wid, left


async def until_no_volumes(box_id: str, timeout: float = 30) -> None:
    with trio.move_on_after(timeout):
        while await trio.to_thread.run_sync(volumes, box_id):
            await trio.sleep(0.2)
        return
    raise AssertionError(f"volumes still there after {timeout}s: {volumes(box_id)}")


async def test_a_failed_starts_volumes_are_removed_with_the_workspace(runner: BoxRunner) -> None:
    await trio.to_thread.run_sync(broken_image)
    box = await runner.start(**docker_env(free_port(), WORKSPACE_IMAGE_PREFIX=BROKEN_PREFIX))
    box_id = box.box_id
    try:
        async with httpx.AsyncClient(base_url=runner.url, timeout=15) as client:
            wid, _ = await failed_start(client, box_id)
            deleted = await client.delete(f"/workspaces/{wid}", headers=ADMIN)
            assert deleted.status_code == 200, deleted.text
            await until_no_volumes(box_id)
    finally:
        await runner.stop()
        await trio.to_thread.run_sync(remove_box, box_id)


async def test_volumes_of_a_failed_start_whose_cleanup_was_cut_short_are_swept(runner: BoxRunner) -> None:
    """The delete's cleanup fails (a volume is in use), and the box stops before its retry: the removed
    workspace has no actor after the restart, and its volumes have no container for the orphan sweep to
    find. The sweep looks at this box's volumes too."""
    await trio.to_thread.run_sync(broken_image)
    port = free_port()
    box = await runner.start(**docker_env(port, WORKSPACE_IMAGE_PREFIX=BROKEN_PREFIX))
    box_id = box.box_id
    blocker = f"blocker-{uuid.uuid4().hex[:8]}"
    try:
        async with httpx.AsyncClient(base_url=runner.url, timeout=15) as client:
            wid, left = await failed_start(client, box_id)
            await trio.to_thread.run_sync(lambda: docker("create", "--name", blocker, "-v", f"{left[0]}:/held",
                                                         "-v", f"{left[1]}:/held2", IMAGE))
            deleted = await client.delete(f"/workspaces/{wid}", headers=ADMIN)
            assert deleted.status_code == 200, deleted.text
            await trio.sleep(0.5)  # the cleanup tried and failed (volume in use); its retry waits
        await runner.stop()
        await trio.to_thread.run_sync(lambda: docker("rm", "-f", blocker))
        assert sorted(await trio.to_thread.run_sync(volumes, box_id)) == sorted(left)
        await runner.start(**docker_env(port, WORKSPACE_IMAGE_PREFIX=BROKEN_PREFIX, ORPHAN_GRACE_SECONDS="0.5"))
        await until_no_volumes(box_id, timeout=20)
    finally:
        if runner.box is not None:
            await runner.stop()
        await trio.to_thread.run_sync(lambda: docker("rm", "-f", blocker, check=False))
        await trio.to_thread.run_sync(remove_box, box_id)
