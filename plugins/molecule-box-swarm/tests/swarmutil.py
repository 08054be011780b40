"""Helpers and fixtures of the swarm plugin's tests: a real one-node swarm, and real boxes as subprocesses.

The swarm is a second Docker engine of the test session's own (``scripts/swarm-engine``: its own socket, data
root, exec root and pid file; never the machine's engine), in swarm mode, with the test agent image loaded
from the main engine. It is stopped, with everything in it, at the end of the session. With
``MOLECULE_BOX_SWARM_HOST`` set the tests use that manager instead and leave it running. Without a swarm the
tests skip, except under ``CI=true``, where they fail: CI must not go green by skipping the backend it ships.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "scripts" / "swarm-engine"
IMAGE_PREFIX = "molecule-box-test-agent-"
RUNTIME = "langgraph"
IMAGE = f"{IMAGE_PREFIX}{RUNTIME}:latest"
ADMIN_TOKEN = "swarm-test-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


class Swarm:
    """A swarm manager the tests reach at ``host`` (a DOCKER_HOST)."""

    def __init__(self, host: str, directory: Path | None) -> None:
        self.host = host
        self.directory = directory

    def docker(self, *args: str, timeout: float = 60, check: bool = True) -> str:
        done = subprocess.run(["docker", "-H", self.host, *args], capture_output=True, text=True, timeout=timeout,
                              check=False)
        if check and done.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    async def adocker(self, *args: str, timeout: float = 60, check: bool = True) -> str:
        return await trio.to_thread.run_sync(lambda: self.docker(*args, timeout=timeout, check=check))

    def ids(self, kind: str, box_id: str) -> list[str]:
        """Ids of the services, secrets or configs labelled for ``box_id``."""
        return self.docker(kind, "ls", "-q", "--filter", f"label=molecule-box.box={box_id}").split()

    def tasks(self, service: str) -> list[dict[str, Any]]:
        out = self.docker("service", "ps", "--no-trunc", "--format", "{{json .}}", service)
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def inspect(self, ref: str) -> dict[str, Any]:
        return dict(json.loads(self.docker("inspect", ref))[0])

    def remove_box(self, box_id: str) -> None:
        """Remove every service, then every secret and config, labelled for ``box_id``."""
        services = self.ids("service", box_id)
        if services:
            self.docker("service", "rm", *services, check=False)
        for kind in ("secret", "config"):
            for _ in range(50):  # a secret goes once its service's tasks are gone
                found = self.ids(kind, box_id)
                if not found:
                    break
                self.docker(kind, "rm", *found, check=False)
                time.sleep(0.2)


def _problem() -> str | None:
    if shutil.which("docker") is None or shutil.which("dockerd") is None:
        return "docker and dockerd are needed for the swarm tests"
    if os.geteuid() != 0:
        return "starting a private swarm engine needs root"
    done = subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True, timeout=30, check=False)
    if done.returncode != 0:
        return f"the test image {IMAGE} is missing (./scripts/docker-test-image)"
    return None


@pytest.fixture(scope="session")
def swarm() -> Iterator[Swarm]:
    """The session's swarm (started once, stopped at the end)."""
    given = os.environ.get("MOLECULE_BOX_SWARM_HOST")
    if given:
        yield Swarm(given, None)
        return
    problem = _problem()
    directory = Path(tempfile.mkdtemp(prefix="mbswarm-", dir="/tmp"))
    if problem is None:
        done = subprocess.run([str(SCRIPT), "start", str(directory)], capture_output=True, text=True, timeout=600,
                              check=False)
        if done.returncode != 0:
            problem = f"scripts/swarm-engine could not start a swarm: {done.stderr.strip()[-2000:]}"
    if problem is not None:
        subprocess.run([str(SCRIPT), "stop", str(directory)], capture_output=True, timeout=120, check=False)
        shutil.rmtree(directory, ignore_errors=True)
        if in_ci():
            pytest.fail(f"CI=true and {problem}", pytrace=False)
        pytest.skip(problem)
    try:
        yield Swarm(done.stdout.strip(), directory)
    finally:
        subprocess.run([str(SCRIPT), "stop", str(directory)], capture_output=True, timeout=120, check=False)
        shutil.rmtree(directory, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_range(size: int = 100) -> str:
    """A random ``SWARM_PORT_RANGE`` per box under test, below Linux's ephemeral ports (32768+), where an
    outgoing connection's local port could take an agent's (the allocator skips ports in use)."""
    base = random.randrange(20000, 32700 - size, size)
    return f"{base}-{base + size - 1}"


def swarm_env(swarm: Swarm) -> dict[str, str]:
    """The swarm backend's settings of the tests: the session's manager, the local image, the host network."""
    return {"SWARM_DOCKER_HOST": swarm.host, "WORKSPACE_IMAGE_PREFIX": IMAGE_PREFIX, "WORKSPACE_NETWORK": "host",
            "SWARM_PORT_RANGE": port_range()}


class BoxProcess:
    """``python -m molecule_box run`` with the swarm backend on one data dir (several runs: a restart)."""

    def __init__(self, swarm: Swarm, data_dir: Path, log_path: Path, port: int | None = None) -> None:
        self.swarm = swarm
        self.data_dir = data_dir
        self.log_path = log_path
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: trio.Process | None = None
        self.client = httpx.AsyncClient(base_url=self.url, timeout=15, headers=ADMIN)
        self.extra: dict[str, str] = {}

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "VIRTUAL_ENV")}
        env.update({
            "PORT": str(self.port), "BIND_ADDR": "127.0.0.1", "PLATFORM_URL": self.url,
            "MOLECULE_BOX_DATA": str(self.data_dir), "ADMIN_TOKEN": ADMIN_TOKEN,
            "MOLECULE_BOX_ALLOW_AGENT_NETWORKS": "127.0.0.0/8", "CONTAINER_BACKEND": "swarm",
            "RESTART_BACKOFF_SECONDS": "0.2", "MOLECULE_BOX_SHUTDOWN_GRACE": "2",
            **swarm_env(self.swarm),
        })
        env.update(self.extra)
        env.update(extra)
        return env

    async def start(self, **extra: str) -> None:
        with self.log_path.open("ab") as log:
            self.process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "molecule_box", "run"], env=self.env(**extra), stdout=log,
                stderr=subprocess.STDOUT)
        with trio.move_on_after(60):
            while self.process.poll() is None:
                try:
                    if (await self.client.get("/health")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await trio.sleep(0.1)
        raise AssertionError(f"the box did not come up: {self.log_path.read_text()[-3000:]}")

    async def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        with trio.fail_after(30):
            await self.process.wait()
        self.process = None

    async def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        with trio.move_on_after(30):
            await self.process.wait()
            self.process = None
            return
        await self.kill()

    async def box_id(self) -> str:
        return str((await self.client.get("/health")).json()["box_id"])

    async def create(self, **fields: Any) -> str:
        response = await self.client.post("/workspaces", json={"name": "swarm-ws", "runtime": RUNTIME, "tier": 2,
                                                              **fields})
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    async def get(self, wid: str) -> dict[str, Any]:
        response = await self.client.get(f"/workspaces/{wid}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def wait_for(self, wid: str, status: str, timeout: float = 90) -> dict[str, Any]:
        body: dict[str, Any] = {}
        with trio.move_on_after(timeout):
            while True:
                body = await self.get(wid)
                if body["status"] == status:
                    return body
                await trio.sleep(0.1)
        raise AssertionError(f"workspace {wid} is {body.get('status')}, not {status}, after {timeout}s: {body}; "
                             f"box log: {self.log_path.read_text()[-2000:]}")


@pytest.fixture
async def box_of(tmp_path: Path) -> AsyncIterator[Any]:
    """``box_of(swarm)``: a box process on ``tmp_path`` (stopped, and its services and secrets removed, at
    teardown)."""
    boxes: list[BoxProcess] = []
    ids: set[str] = set()

    def make(swarm: Swarm, **kwargs: Any) -> BoxProcess:
        box = BoxProcess(swarm, tmp_path / "data", tmp_path / f"box-{len(boxes)}.log", **kwargs)
        boxes.append(box)
        return box

    yield make
    for box in boxes:
        if box.process is not None:
            try:
                ids.add(await box.box_id())
            except (httpx.HTTPError, KeyError, ValueError):
                pass
        await box.stop()
        await box.client.aclose()
    for box_id in ids:
        await trio.to_thread.run_sync(boxes[0].swarm.remove_box, box_id)
