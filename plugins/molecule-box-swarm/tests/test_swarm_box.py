"""swarm workspaces end to end: a real box process (``CONTAINER_BACKEND=swarm``) on the session's real swarm.

Each workspace is a service of the test agent image; its task reads the token the plugin delivered as a Docker
secret and registers with the box, which is how the workspace gets ``online``.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from swarmutil import ADMIN, BoxProcess, Swarm

pytestmark = pytest.mark.slow

A2A = {"jsonrpc": "2.0", "id": 1, "method": "message/send",
       "params": {"message": {"role": "user", "parts": [{"kind": "text", "text": "hello swarm"}]}}}


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


def service_of(swarm: Swarm, box_id: str, wid: str) -> dict[str, Any]:
    [found] = [swarm.inspect(ref) for ref in swarm.ids("service", box_id)
               if swarm.inspect(ref)["Spec"]["Labels"].get("molecule-box.workspace") == wid]
    return found


def running_task(swarm: Swarm, service: str) -> dict[str, Any] | None:
    out = swarm.docker("service", "ps", "-q", "--no-trunc", "--filter", "desired-state=running", service).split()
    for task_id in out:
        task = swarm.inspect(task_id)
        if task["Status"]["State"] == "running":
            return task
    return None


async def a2a(box: BoxProcess, wid: str) -> None:
    response = await box.client.post(f"/workspaces/{wid}/a2a", json=A2A, headers=ADMIN)
    assert response.status_code == 200, response.text
    assert response.json()["result"]["parts"][0]["text"] == "echo: hello swarm"


async def test_create_register_a2a_crash_pause_resume_delete(swarm: Swarm, box_of: Any) -> None:
    box: BoxProcess = box_of(swarm)
    await box.start()
    box_id = await box.box_id()
    response = await box.client.post("/workspaces", json={"name": "swarm", "runtime": "langgraph", "tier": 2})
    assert response.status_code == 201, response.text
    assert response.json()["backend"] == "swarm"
    wid = response.json()["id"]
    body = await box.wait_for(wid, "online")
    service = service_of(swarm, box_id, wid)
    spec = service["Spec"]
    port = int(spec["Labels"]["molecule-box.port"])
    # The record's URL is the task's node (its swarm address) and the workspace's port there.
    assert body["url"] == f"http://127.0.0.1:{port}"
    assert spec["Labels"]["molecule-box.managed"] == "true" and spec["Labels"]["molecule-box.tier"] == "2"
    assert spec["Mode"] == {"Replicated": {"Replicas": 1}}
    template = spec["TaskTemplate"]
    assert template["RestartPolicy"]["Condition"] == "none"
    assert template["Resources"]["Limits"]["MemoryBytes"] == 512 * 1024 * 1024
    assert template["Resources"]["Limits"]["NanoCPUs"] == 1_000_000_000
    assert template["Resources"]["Reservations"]["MemoryBytes"] == int(512 * 1024 * 1024 * 0.1)
    [secret_ref] = template["ContainerSpec"]["Secrets"]
    assert secret_ref["File"]["Name"] == "/configs/.auth_token" and secret_ref["File"]["Mode"] == 0o600
    assert all("TOKEN" not in item.split("=")[0] for item in template["ContainerSpec"]["Env"])
    [secret] = swarm.ids("secret", box_id)
    assert secret == secret_ref["SecretID"]
    task = running_task(swarm, service["ID"])
    assert task is not None
    container = task["Status"]["ContainerStatus"]["ContainerID"]
    assert swarm.inspect(container)["HostConfig"]["NetworkMode"] == "host"
    assert (await swarm.adocker("exec", container, "stat", "-c", "%a", "/configs/.auth_token")).strip() == "600"
    await a2a(box, wid)

    # A crash: the task's container dies; Swarm does not replace it (restarts are the box's), the actor does,
    # with a new task (and a new token secret, the old one removed).
    await swarm.adocker("kill", container)
    await until(lambda: (t := running_task(swarm, service["ID"])) is not None and t["ID"] != task["ID"],
                "a new task", timeout=90)
    await box.wait_for(wid, "online")
    await a2a(box, wid)
    [new_secret] = swarm.ids("secret", box_id)
    assert new_secret != secret
    assert len(swarm.ids("service", box_id)) == 1

    # Pause is scale 0 (the service stays), resume scale 1 with a new task.
    assert (await box.client.post(f"/workspaces/{wid}/pause")).status_code == 200
    await box.wait_for(wid, "paused")
    assert service_of(swarm, box_id, wid)["Spec"]["Mode"] == {"Replicated": {"Replicas": 0}}
    assert running_task(swarm, service["ID"]) is None
    assert (await box.client.post(f"/workspaces/{wid}/resume")).status_code == 200
    await box.wait_for(wid, "online")
    assert service_of(swarm, box_id, wid)["Spec"]["Mode"] == {"Replicated": {"Replicas": 1}}
    await a2a(box, wid)

    # Delete leaves no service, secret or config.
    assert (await box.client.delete(f"/workspaces/{wid}", params={"confirm": "true"})).status_code == 200
    await until(lambda: not swarm.ids("service", box_id) and not swarm.ids("secret", box_id),
                "the service and its secrets to be removed")
    assert swarm.ids("config", box_id) == []


async def test_a_resume_right_after_a_pause_waits_for_the_old_task(swarm: Swarm, box_of: Any) -> None:
    """A resume cancels the pause's stop, whose task still runs through its stop grace (desired state
    ``remove``); Swarm's scale-up does not wait for it. The start does: a new task beside it could not bind the
    workspace's port and would exit at once, which the box would take for a crash (before the fix: an exit 1,
    a restart, and sometimes ``failed``)."""
    box: BoxProcess = box_of(swarm)
    await box.start()
    box_id = await box.box_id()
    wid = await box.create()
    await box.wait_for(wid, "online")
    service = service_of(swarm, box_id, wid)["ID"]
    for _ in range(2):
        assert (await box.client.post(f"/workspaces/{wid}/pause")).status_code == 200
        assert (await box.client.post(f"/workspaces/{wid}/resume")).status_code == 200
        await box.wait_for(wid, "online")
        await a2a(box, wid)
    tasks = [swarm.inspect(ref) for ref in swarm.docker("service", "ps", "-q", "--no-trunc", service).split()]
    failed = [t["Status"] for t in tasks if t["Status"]["State"] in ("failed", "rejected")]
    assert failed == [], failed
    events = (await box.client.get(f"/events/{wid}")).json()
    crashes = [e for e in events if (e.get("payload") or {}).get("reason") in ("exited", "oom_killed")]
    assert crashes == [], crashes


async def test_a_tier_swarm_cannot_express_is_refused(swarm: Swarm, box_of: Any) -> None:
    box: BoxProcess = box_of(swarm)
    await box.start(DOCKER_ALLOW_PRIVILEGED="true")
    box_id = await box.box_id()
    for tier in (3, 4):
        response = await box.client.post("/workspaces", json={"name": "priv", "runtime": "langgraph", "tier": tier})
        assert response.status_code == 400, response.text
        assert "not supported by backend swarm" in response.json()["error"]
    health = (await box.client.get("/health")).json()
    assert "swarm" in str(health)
    assert (await box.client.get("/workspaces")).json() == []
    assert swarm.ids("service", box_id) == [] and swarm.ids("secret", box_id) == []


async def test_sigkilled_box_adopts_its_services(swarm: Swarm, box_of: Any) -> None:
    box: BoxProcess = box_of(swarm)
    await box.start()
    box_id = await box.box_id()
    wid = await box.create()
    await box.wait_for(wid, "online")
    service = service_of(swarm, box_id, wid)
    task = running_task(swarm, service["ID"])
    assert task is not None
    await box.kill()
    await box.start()
    await box.wait_for(wid, "online")
    await a2a(box, wid)
    again = service_of(swarm, box_id, wid)
    assert again["ID"] == service["ID"] and again["Version"]["Index"] == service["Version"]["Index"]
    still = running_task(swarm, service["ID"])
    assert still is not None and still["ID"] == task["ID"], "adoption must not restart the task"
    assert len(swarm.ids("service", box_id)) == 1 and len(swarm.ids("secret", box_id)) == 1


async def test_orphan_services_and_secrets_are_swept(swarm: Swarm, box_of: Any, tmp_path: Path) -> None:
    box: BoxProcess = box_of(swarm)
    await box.start()
    box_id = await box.box_id()
    await box.stop()
    orphan, stranger = str(uuid.uuid4()), str(uuid.uuid4())
    labels = ["--label", "molecule-box.managed=true", "--label", f"molecule-box.box={box_id}"]
    await swarm.adocker("service", "create", "-d", "--name", f"orphan-{orphan[:8]}", *labels,
                        "--label", f"molecule-box.workspace={orphan}", "--replicas", "0",
                        "molecule-box-test-agent-langgraph:latest")
    (tmp_path / "token").write_text("leftover")
    secret = await swarm.adocker("secret", "create", *labels, "--label", f"molecule-box.workspace={stranger}",
                                 f"orphan-secret-{stranger[:8]}", str(tmp_path / "token"))
    try:
        await trio.sleep(0.6)  # older than the grace, as a crash's leftovers would be
        await box.start(ORPHAN_GRACE_SECONDS="0.5")
        await until(lambda: not swarm.ids("service", box_id) and not swarm.ids("secret", box_id),
                    "the orphan service and secret to be swept", timeout=60)
    finally:
        swarm.docker("service", "rm", f"orphan-{orphan[:8]}", check=False)
        swarm.docker("secret", "rm", secret.strip(), check=False)
