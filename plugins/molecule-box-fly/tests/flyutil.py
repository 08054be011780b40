"""Helpers and fixtures of the flyio plugin's tests: the emulator in this trio run, and real boxes as subprocesses.

A box here is what a user runs (``python -m molecule_box run`` with the plugin installed), so the tests see
the plugin exactly as an outside author's would be seen: found through its entry point, configured by
environment, and killable with SIGKILL.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from molecule_box_fly import FlySettings
from molecule_box_fly.emulator import DOCKER_LABEL, Emulator, Faults, serve
from molecule_box_fly.emulator.machines import docker, remove_containers

from molecule_box.backends.base import BackendContext, BackendEvent

TOKEN = "fly-test-token-0123456789abcdef"
APP = "molecule-test"
ADMIN_TOKEN = "fly-test-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
#: The local image the Docker-backed emulator runs for every machine (built by molecule-box's
#: scripts/docker-test-image; no registry is contacted).
AGENT_IMAGE = "molecule-box-test-agent-langgraph:latest"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Fly:
    """A running emulator: its state (``emulator``) and the base URL a backend is pointed at."""

    def __init__(self, emulator: Emulator, port: int) -> None:
        self.emulator = emulator
        self.port = port
        self.url = f"http://127.0.0.1:{port}/v1"

    @property
    def machines(self) -> dict[str, Any]:
        return self.emulator.apps[APP]

    def live(self) -> list[Any]:
        return [m for m in self.machines.values() if m.state != "destroyed"]

def context(fly: Fly, box_id: str, events: list[BackendEvent] | None = None, **settings: Any) -> BackendContext[Any]:
    """The context the box would hand the backend, its settings pointed at the emulator."""
    own = FlySettings(**{"api_token": TOKEN, "app": APP, "api_base_url": fly.url, "request_timeout": 5, **settings})
    return BackendContext(box_id=box_id, settings=own, report=(events if events is not None else []).append,
                          platform_url="http://127.0.0.1:9", bind_addr="127.0.0.1")


async def start_emulator(nursery: trio.Nursery, **kwargs: Any) -> Fly:
    faults = Faults(start_seconds=0.2, stop_seconds=0.1, destroy_seconds=0.05)
    emulator = Emulator(token=TOKEN, apps={APP}, faults=faults, **kwargs)
    port = await nursery.start(serve, emulator)
    return Fly(emulator, port)


@pytest.fixture
async def fly(nursery: trio.Nursery) -> Fly:
    return await start_emulator(nursery)


def docker_problem() -> str | None:
    if shutil.which("docker") is None:
        return "the docker CLI is not installed"
    done = subprocess.run(["docker", "image", "inspect", AGENT_IMAGE], capture_output=True, timeout=30, check=False)
    return None if done.returncode == 0 else f"no Docker engine or no image {AGENT_IMAGE} (scripts/docker-test-image)"


@pytest.fixture
async def docker_fly(nursery: trio.Nursery) -> AsyncIterator[Fly]:
    """The emulator in Docker-backed mode: each started machine is a container of the test agent image."""
    problem = docker_problem()
    if problem:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI=true and {problem}", pytrace=False)
        pytest.skip(problem)
    fly = await start_emulator(nursery, docker_image=AGENT_IMAGE)
    yield fly
    with trio.move_on_after(60):
        await remove_containers(fly.emulator.id)


async def containers(fly: Fly) -> list[str]:
    """Ids of the containers the emulator runs (running or not)."""
    out = await docker("ps", "-aq", "--filter", f"label={DOCKER_LABEL}={fly.emulator.id}")
    return out.split()


class BoxProcess:
    """``python -m molecule_box run`` with ``CONTAINER_BACKEND=flyio`` against an emulator, on one data dir."""

    def __init__(self, fly: Fly, data_dir: Path, log_path: Path) -> None:
        self.fly = fly
        self.data_dir = data_dir
        self.log_path = log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: trio.Process | None = None
        self.client = httpx.AsyncClient(base_url=self.url, timeout=15, headers=ADMIN)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "VIRTUAL_ENV")}
        env.update({
            "PORT": str(self.port), "BIND_ADDR": "127.0.0.1", "PLATFORM_URL": self.url,
            "MOLECULE_BOX_DATA": str(self.data_dir), "ADMIN_TOKEN": ADMIN_TOKEN,
            "MOLECULE_BOX_ALLOW_AGENT_NETWORKS": "127.0.0.0/8", "CONTAINER_BACKEND": "flyio",
            "FLY_API_TOKEN": TOKEN, "FLY_WORKSPACE_APP": APP, "FLY_API_BASE_URL": self.fly.url,
            "FLY_REQUEST_TIMEOUT": "5", "RESTART_BACKOFF_SECONDS": "0.2", "MOLECULE_BOX_SHUTDOWN_GRACE": "2",
        })
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

    async def create(self, **fields: Any) -> str:
        response = await self.client.post("/workspaces", json={"name": "fly-ws", "runtime": "langgraph", **fields})
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    async def get(self, wid: str) -> dict[str, Any]:
        response = await self.client.get(f"/workspaces/{wid}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def wait_for(self, wid: str, status: str, timeout: float = 60) -> dict[str, Any]:
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
    """``box_of(fly)``: a box process on ``tmp_path`` (stopped at teardown)."""
    boxes: list[BoxProcess] = []

    def make(fly: Fly) -> BoxProcess:
        box = BoxProcess(fly, tmp_path / "data", tmp_path / f"box-{len(boxes)}.log")
        boxes.append(box)
        return box

    yield make
    for box in boxes:
        await box.stop()
        await box.client.aclose()
