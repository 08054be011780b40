"""Two nodes: a third engine of the test's own joins the session's swarm as a worker, and the box places
workspaces on it, reaches them at its address, and restarts them elsewhere when the worker dies.

Both engines share this machine's kernel, so the worker advertises another loopback address (127.0.0.2; every
127/8 address is loopback on Linux): its gossip port (7946, which Swarm does not let a node move) would
otherwise clash with the manager's on 127.0.0.1. Host-network tasks run on it; overlay networks do not (both
engines would create the same VXLAN device in the one network namespace).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from swarmutil import SCRIPT, BoxProcess, Swarm, in_ci
from test_swarm_box import a2a, running_task, service_of, until

pytestmark = pytest.mark.slow

WORKER_ADDR = "127.0.0.2"


@dataclasses.dataclass
class Worker:
    host: str
    node_id: str
    directory: Path

    def docker(self, *args: str) -> str:
        return subprocess.run(["docker", "-H", self.host, *args], capture_output=True, text=True, timeout=60,
                              check=False).stdout


def _manager_dir(swarm: Swarm) -> Path:
    return swarm.directory or Path(swarm.host.removeprefix("unix://")).parent


@pytest.fixture
def worker(swarm: Swarm) -> Iterator[Worker]:
    """A worker engine joined to the session's swarm (left, stopped and removed from the swarm at the end)."""
    directory = Path(tempfile.mkdtemp(prefix="mbworker-", dir="/tmp"))
    done = subprocess.run([str(SCRIPT), "start", str(directory), "worker-of", str(_manager_dir(swarm))],
                          capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, "MOLECULE_BOX_SWARM_WORKER_ADDR": WORKER_ADDR})
    found: Worker | None = None
    try:
        if done.returncode != 0:
            problem = f"no worker could join the swarm: {done.stderr.strip()[-1500:]}"
            if in_ci():
                pytest.fail(problem, pytrace=False)
            pytest.skip(problem)
        host = done.stdout.strip().splitlines()[-1]
        node_id = subprocess.run(["docker", "-H", host, "info", "--format", "{{.Swarm.NodeID}}"],
                                 capture_output=True, text=True, timeout=30, check=True).stdout.strip()
        found = Worker(host, node_id, directory)
        yield found
    finally:
        subprocess.run([str(SCRIPT), "stop", str(directory)], capture_output=True, timeout=120, check=False)
        subprocess.run(["pkill", "-9", "-f", str(directory)], capture_output=True, timeout=30, check=False)
        if found is not None:
            swarm.docker("node", "rm", "--force", found.node_id, check=False)
        shutil.rmtree(directory, ignore_errors=True)


def die(worker: Worker) -> None:
    """The worker's machine dies: its engine and every container it ran are killed at once, with no word to
    the manager (which learns it only when the node's heartbeats stop)."""
    containers = worker.docker("ps", "-q").split()
    pids = [int(p) for p in worker.docker("inspect", "--format", "{{.State.Pid}}", *containers).split()] \
        if containers else []
    os.kill(int((worker.directory / "docker.pid").read_text()), signal.SIGKILL)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    subprocess.run(["pkill", "-9", "-f", str(worker.directory)], capture_output=True, timeout=30, check=False)


async def located(box: BoxProcess, wid: str, node_id: str) -> bool:
    return f"({node_id[:12]})" in str((await box.get(wid)).get("location"))


async def node_of(swarm: Swarm, box: BoxProcess, wid: str, timeout: float = 120) -> str:
    """The node of the workspace's running task once the workspace is online. (Every node's address is
    127.0.0.1 to the manager here, the source of their connections to it, so the URL does not tell.)"""
    box_id = await box.box_id()
    with trio.move_on_after(timeout):
        while True:
            if (await box.get(wid))["status"] == "online":
                task = running_task(swarm, service_of(swarm, box_id, wid)["ID"])
                if task is not None:
                    return str(task["NodeID"])
            await trio.sleep(0.2)
    raise AssertionError(f"workspace {wid} not online within {timeout}s: {await box.get(wid)}")


async def test_placed_on_the_worker_reached_there_and_restarted_on_the_manager_when_it_dies(
        swarm: Swarm, worker: Worker, box_of: Any) -> None:
    box: BoxProcess = box_of(swarm)
    await box.start()
    box_id = await box.box_id()
    manager_id = swarm.docker("info", "--format", "{{.Swarm.NodeID}}").strip()

    # Placed by metadata on each node, and answering there through the box.
    on_worker = await box.create(name="on-worker", metadata={"node_role": "worker"})
    on_manager = await box.create(name="on-manager", metadata={"node_id": manager_id})
    assert await node_of(swarm, box, on_worker) == worker.node_id
    assert worker.docker("ps", "-q", "--filter", f"label=molecule-box.workspace={on_worker}").strip()
    assert await node_of(swarm, box, on_manager) == manager_id
    # The record says where each runs: the node's hostname and short id (both nodes are "vm" here).
    for wid, node in ((on_worker, worker.node_id), (on_manager, manager_id)):
        await until(lambda w=wid, n=node: located(box, w, n), f"the location of {wid}")
    await a2a(box, on_worker)
    await a2a(box, on_manager)

    # A free workspace lands where Swarm puts it; with the manager drained, on the worker.
    swarm.docker("node", "update", "--availability", "drain", manager_id)
    try:
        free = await box.create(name="free")
        assert await node_of(swarm, box, free) == worker.node_id
    finally:
        swarm.docker("node", "update", "--availability", "active", manager_id)

    # The worker dies. Its tasks keep saying "running" to the manager, with desired state shutdown once the node
    # is down; the box takes that as the workload's end and starts it again where it can run: the free
    # workspace on the manager. The one placed on workers has nowhere to go and waits, provisioning.
    await trio.to_thread.run_sync(die, worker)
    with trio.fail_after(120):
        while running_task(swarm, service_of(swarm, box_id, free)["ID"]) is None or \
                await node_of(swarm, box, free) != manager_id:
            await trio.sleep(0.5)
    await a2a(box, free)
    assert swarm.docker("node", "inspect", "--format", "{{.Status.State}}", worker.node_id).strip() == "down"
    assert f"its node {worker.node_id[:12]} is down" in box.log_path.read_text()
    assert (await box.get(on_worker))["status"] != "online"
    assert (await box.get(on_manager))["status"] == "online"
    await a2a(box, on_manager)
