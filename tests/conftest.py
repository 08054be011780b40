"""Shared fixtures: a real box (hypercorn on 127.0.0.1, a real SQLite file) and real HTTP clients."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from molecule_box.box import Box, serve
from molecule_box.config import Settings

ADMIN_TOKEN = "test-admin-token-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def make_settings(data_dir: Path, **env: str) -> Settings:
    values = {
        # Boxes under test start only the backends they use: the docker tests ask for docker (its engine
        # watcher's timers would make every MockClock test wait on real engine calls).
        "CONTAINER_BACKEND": "external",
        "PORT": "0",
        "BIND_ADDR": "127.0.0.1",
        "MOLECULE_BOX_DATA": str(data_dir),
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "MOLECULE_BOX_ALLOW_AGENT_NETWORKS": "127.0.0.0/8",
        "MOLECULE_BOX_SHUTDOWN_GRACE": "2",
        # A loopback-only box's docker backend refuses a bridge network its containers could not reach from.
        "WORKSPACE_NETWORK": "host",
    }
    values.update(env)
    return Settings.from_mapping(values, environ={})


class BoxRunner:
    """Starts and stops real boxes (in this trio run) on one data directory."""

    def __init__(self, nursery: trio.Nursery, data_dir: Path) -> None:
        self.nursery = nursery
        self.data_dir = data_dir
        self.box: Box | None = None
        self._stopped: trio.Event | None = None

    async def start(self, *, extra_backends: Mapping[str, Any] | None = None, **env: str) -> Box:
        settings = make_settings(self.data_dir, **env)
        stopped = self._stopped = trio.Event()

        async def run(task_status: trio.TaskStatus[Box]) -> None:
            try:
                await serve(settings, task_status=task_status, extra_backends=extra_backends,
                            announce=lambda token: None)
            finally:
                stopped.set()

        self.box = await self.nursery.start(run)
        return self.box

    async def stop(self) -> None:
        assert self.box is not None and self._stopped is not None
        self.box.shutdown_requested.set()
        with trio.fail_after(15):
            await self._stopped.wait()
        self.box = None

    @property
    def url(self) -> str:
        assert self.box is not None
        return self.box.urls[0]


@pytest.fixture
async def runner(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[BoxRunner]:
    runner = BoxRunner(nursery, tmp_path / "data")
    yield runner
    if runner.box is not None:
        await runner.stop()


@pytest.fixture
async def box(runner: BoxRunner) -> Box:
    return await runner.start()


@pytest.fixture
async def client(box: Box) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=box.urls[0], timeout=10) as client:
        yield client


async def create_external(client: httpx.AsyncClient, name: str = "agent", **fields: Any) -> dict[str, Any]:
    response = await client.post("/workspaces", json={"name": name, "external": True, **fields}, headers=ADMIN)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def register(client: httpx.AsyncClient, wid: str, *, url: str = "http://127.0.0.1:9/",
                   token: str | None = None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = await client.post("/registry/register", json={"id": wid, "url": url, "agent_card": {"name": wid[:8]}},
                                 headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def joined(client: httpx.AsyncClient, name: str = "agent", *, url: str = "http://127.0.0.1:9/",
                 **fields: Any) -> tuple[str, str]:
    """An external workspace whose agent registered with the token from its connection block; returns
    (id, that token)."""
    created = await create_external(client, name, **fields)
    token = created["connection"]["auth_token"]
    await register(client, created["id"], url=url, token=token)
    return created["id"], token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def docker_available() -> bool:
    return os.path.exists("/var/run/docker.sock") or bool(os.environ.get("DOCKER_HOST"))
