"""A swarm workspace's ``/configs`` through the box: the template's files are in the task from its first start,
the files API reads and changes them (a change reaches the task at its next start, ``restart=true`` makes that
now), and delete leaves no config behind. The files are Docker configs the swarm keeps, so they live on
whichever node runs the task."""

from __future__ import annotations

from typing import Any

import pytest
from swarmutil import BoxProcess, Swarm
from test_swarm_box import a2a, running_task, service_of, until

pytestmark = pytest.mark.slow

CONFIG = b"name: greeter\nmodel: test-model\n"
PROMPT = b"You greet.\n"


async def in_task(swarm: Swarm, service: str, *command: str) -> str:
    task = running_task(swarm, service)
    assert task is not None, "no running task"
    return await swarm.adocker("exec", task["Status"]["ContainerStatus"]["ContainerID"], *command)


async def test_template_files_and_the_files_api_on_a_swarm_workspace(swarm: Swarm, box_of: Any) -> None:
    box: BoxProcess = box_of(swarm)
    template = box.data_dir / "templates" / "greeter"
    (template / "prompts").mkdir(parents=True)
    (template / "config.yaml").write_bytes(CONFIG)
    (template / "prompts" / "system.md").write_bytes(PROMPT)
    await box.start()
    box_id = await box.box_id()
    wid = await box.create(template="greeter")
    await box.wait_for(wid, "online")
    service = service_of(swarm, box_id, wid)["ID"]

    # The template's files, in the task and through the API; the token stays out of the API.
    assert (await in_task(swarm, service, "cat", "/configs/config.yaml")).encode() == CONFIG
    assert (await in_task(swarm, service, "cat", "/configs/prompts/system.md")).encode() == PROMPT
    listed = (await box.client.get(f"/workspaces/{wid}/files")).json()
    assert {e["path"] for e in listed} == {"config.yaml", "prompts", "prompts/system.md"}
    read = (await box.client.get(f"/workspaces/{wid}/files/prompts/system.md")).json()
    assert read["content"] == PROMPT.decode()

    # A write is there at once for the API, and in the task after the restart it asks for.
    first = running_task(swarm, service)
    assert first is not None
    response = await box.client.put(f"/workspaces/{wid}/files/notes/today.md",
                                    json={"content": "remember\n", "restart": True})
    assert response.status_code == 200 and response.json()["restarted"] is True, response.text
    await until(lambda: (t := running_task(swarm, service)) is not None and t["ID"] != first["ID"], "a new task")
    await box.wait_for(wid, "online")
    assert await in_task(swarm, service, "cat", "/configs/notes/today.md") == "remember\n"
    # Each file keeps its mode; the token is still the secret's, mode 0600.
    assert await in_task(swarm, service, "stat", "-c", "%a", "/configs/notes/today.md") == "644\n"
    assert await in_task(swarm, service, "stat", "-c", "%a", "/configs/.auth_token") == "600\n"
    await a2a(box, wid)

    # A file over Docker's limit on a config is refused with 413, and nothing changes.
    big = (await box.client.put(f"/workspaces/{wid}/files/big.bin", json={"content": "x" * (600 * 1024)}))
    assert big.status_code == 413, big.text
    # Delete, then a replace of everything; neither restarts without being asked.
    assert (await box.client.delete(f"/workspaces/{wid}/files/prompts")).status_code == 200
    assert {e["path"] for e in (await box.client.get(f"/workspaces/{wid}/files")).json()} == {
        "config.yaml", "notes", "notes/today.md"}
    replaced = await box.client.put(f"/workspaces/{wid}/files", json={"files": {"config.yaml": "name: new\n"}})
    assert replaced.status_code == 200, replaced.text
    assert [e["path"] for e in (await box.client.get(f"/workspaces/{wid}/files")).json()] == ["config.yaml"]
    assert await in_task(swarm, service, "cat", "/configs/notes/today.md") == "remember\n"  # until the next start

    # Only the newest generation and what the service mounts are kept; delete leaves no config.
    assert (await box.client.post(f"/workspaces/{wid}/restart")).status_code == 200
    await box.wait_for(wid, "online")
    assert await in_task(swarm, service, "cat", "/configs/config.yaml") == "name: new\n"
    assert len(swarm.ids("config", box_id)) == 2  # the manifest and config.yaml
    assert (await box.client.delete(f"/workspaces/{wid}", params={"confirm": "true"})).status_code == 200
    await until(lambda: not swarm.ids("service", box_id) and not swarm.ids("config", box_id),
                "the service and its configs to be removed")


async def test_a_tier_1_workspace_has_its_files_on_a_read_only_root(swarm: Swarm, box_of: Any) -> None:
    """Tier 1 runs with a read-only root filesystem; the files and the token are mounts, so they are there."""
    box: BoxProcess = box_of(swarm)
    await box.start()
    box_id = await box.box_id()
    wid = await box.create(tier=1)
    await box.wait_for(wid, "online")
    service = service_of(swarm, box_id, wid)
    assert service["Spec"]["TaskTemplate"]["ContainerSpec"]["ReadOnly"] is True
    assert "name: swarm-ws" in await in_task(swarm, service["ID"], "cat", "/configs/config.yaml")
    await a2a(box, wid)


async def test_an_agent_plugin_installed_into_a_swarm_workspace_is_in_its_next_task(swarm: Swarm,
                                                                                    box_of: Any) -> None:
    """Installing a plugin copies it into ``/configs/plugins/<name>`` and restarts the workload: on a swarm, a
    new generation of configs and a new task that has them (a script keeps its mode)."""
    box: BoxProcess = box_of(swarm)
    registry = box.data_dir.parent / "registry"
    (registry / "hello" / "rules").mkdir(parents=True)
    (registry / "hello" / "plugin.yaml").write_text('name: hello\nversion: "1.0.0"\n')
    (registry / "hello" / "rules" / "r.md").write_text("# a rule\n")
    (registry / "hello" / "setup.sh").write_text("#!/bin/sh\n")
    (registry / "hello" / "setup.sh").chmod(0o755)
    await box.start(MOLECULE_BOX_PLUGINS_DIR=str(registry))
    box_id = await box.box_id()
    wid = await box.create()
    await box.wait_for(wid, "online")
    service = service_of(swarm, box_id, wid)["ID"]
    first = running_task(swarm, service)
    assert first is not None
    installed = await box.client.post(f"/workspaces/{wid}/plugins", json={"source": "local://hello"})
    assert installed.status_code == 200, installed.text
    await until(lambda: (t := running_task(swarm, service)) is not None and t["ID"] != first["ID"], "a new task")
    await box.wait_for(wid, "online")
    assert await in_task(swarm, service, "cat", "/configs/plugins/hello/rules/r.md") == "# a rule\n"
    assert await in_task(swarm, service, "stat", "-c", "%a", "/configs/plugins/hello/setup.sh") == "755\n"
    listed = (await box.client.get(f"/workspaces/{wid}/plugins")).json()
    assert [p["name"] for p in listed] == ["hello"]
