"""Helpers and fixtures of the plugin's tests: the control-plane emulator served in the test's own trio run,
and a real ``molecule-box run`` subprocess pointed at it (a subprocess, so a test can SIGKILL the box and start
it again). This directory is no package and this module's name is the plugin's own, so the box's ``tests``
package and other plugins' tests run beside these in one pytest run."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Collection
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
import trio

from molecule_box_controlplane.emulator import Emulator, serve

SHARED_SECRET = "cp-shared-secret-test"
ADMIN_API_TOKEN = "cp-admin-api-token-test"
TENANT_TOKEN = "cp-tenant-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {TENANT_TOKEN}"}
#: Variables the runner may have that a box under test must not inherit.
INHERITED_OUT = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM", "STATE_DIRECTORY",
                 "MOLECULE_BOX_DATA", "ADMIN_TOKEN", "SECRETS_ENCRYPTION_KEY", "PORT", "BIND_ADDR",
                 "CONTAINER_BACKEND", "MOLECULE_ORG_ID", "CP_PROVISION_URL", "MOLECULE_CP_URL",
                 "MOLECULE_CP_SHARED_SECRET", "PROVISION_SHARED_SECRET", "CP_ADMIN_API_TOKEN")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RunningEmulator:
    def __init__(self, emulator: Emulator, url: str) -> None:
        self.state = emulator
        self.url = url

    async def knob(self, name: str, **body: Any) -> Any:
        async with httpx.AsyncClient(timeout=30) as client:
            answer = await client.post(f"{self.url}/_emulator/{name}", json=body)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def live_of(self, workspace_id: str) -> list[str]:
        return [i.instance_id for i in self.state.live() if i.workspace_id == workspace_id]


@pytest.fixture
async def emulator(nursery: trio.Nursery) -> RunningEmulator:
    state = Emulator(shared_secret=SHARED_SECRET, admin_api_token=ADMIN_API_TOKEN, tenant_admin_token=TENANT_TOKEN,
                     boot=0.3, stop=0.2)
    port = free_port()
    await nursery.start(serve, state, "127.0.0.1", port)
    return RunningEmulator(state, f"http://127.0.0.1:{port}")


def cp_env(emulator: RunningEmulator, **extra: str) -> dict[str, str]:
    """The settings that point a box (or the backend alone) at the emulator, with every credential."""
    env = {"MOLECULE_ORG_ID": "org-test", "CP_PROVISION_URL": emulator.url,
           "MOLECULE_CP_SHARED_SECRET": SHARED_SECRET, "CP_ADMIN_API_TOKEN": ADMIN_API_TOKEN,
           "ADMIN_TOKEN": TENANT_TOKEN, "CP_HTTP_TIMEOUT": "2", "CP_DEPROVISION_TIMEOUT": "10",
           "CP_WATCH_INTERVAL": "0.3"}
    env.update(extra)
    return env


class BoxProcess:
    """A ``molecule-box run`` subprocess on 127.0.0.1; its output is kept in a file for failure messages."""

    def __init__(self, data_dir: Path, log: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if k not in INHERITED_OUT}
        self.env.update({"MOLECULE_BOX_DATA": str(data_dir), "PORT": str(self.port), "BIND_ADDR": "127.0.0.1",
                         "PLATFORM_URL": self.url, "PYTHONUNBUFFERED": "1",
                         "MOLECULE_BOX_ALLOW_AGENT_NETWORKS": "127.0.0.0/8", "MOLECULE_BOX_SHUTDOWN_GRACE": "5",
                         **env})
        self.log_path = log
        self.proc: trio.Process | None = None
        self._log: IO[bytes] | None = None

    async def start(self) -> None:
        if self._log is None or self._log.closed:
            self._log = open(self.log_path, "ab")  # closed by kill()
        self.proc = await trio.lowlevel.open_process([sys.executable, "-m", "molecule_box", "run"], env=self.env,
                                                     stdout=self._log, stderr=self._log)
        with trio.fail_after(30):
            async with httpx.AsyncClient(timeout=2) as client:
                while True:
                    assert self.proc.returncode is None, self.log()
                    try:
                        if (await client.get(f"{self.url}/health")).status_code == 200:
                            return
                    except httpx.TransportError:
                        pass
                    await trio.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def kill(self, signum: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signum)
            with trio.move_on_after(15):
                await self.proc.wait()
        if self._log is not None:
            self._log.close()


@pytest.fixture
async def box_factory(tmp_path: Path) -> AsyncIterator[Callable[..., BoxProcess]]:
    made: list[BoxProcess] = []

    def make(env: dict[str, str]) -> BoxProcess:
        box = BoxProcess(tmp_path / "data", tmp_path / f"box{len(made)}.log", env)
        made.append(box)
        return box

    try:
        yield make
    finally:
        for box in made:
            await box.kill()


async def wait_until(check: Callable[[], Any], *, timeout: float = 20, what: str = "condition") -> Any:
    """Poll an async ``check`` until it returns something truthy (bounded)."""
    with trio.fail_after(timeout):
        while True:
            found = await check()
            if found:
                return found
            await trio.sleep(0.05)


async def create(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    answer = await client.post("/workspaces", json={"name": "cp-ws", **body}, headers=ADMIN)
    assert answer.status_code in (200, 201), answer.text
    created: dict[str, Any] = answer.json()
    return created


async def workspace(client: httpx.AsyncClient, wid: str) -> dict[str, Any]:
    answer = await client.get(f"/workspaces/{wid}", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


async def status_is(client: httpx.AsyncClient, wid: str, *wanted: str, timeout: float = 20) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        ws = await workspace(client, wid)
        return ws if ws["status"] in wanted else None
    try:
        found: dict[str, Any] = await wait_until(check, timeout=timeout)
    except trio.TooSlowError:
        raise AssertionError(f"never {wanted}: {await workspace(client, wid)}") from None
    return found


async def running_instance(emulator: RunningEmulator, wid: str, *, not_in: Collection[str] = ()) -> str:
    """The workspace's instance once it runs, once it is its only live one (an old one still being replaced
    carries a revoked token), leaving out ``not_in``."""
    async def check() -> str | None:
        live = [i for i in emulator.state.live() if i.workspace_id == wid]
        if len(live) != 1 or live[0].instance_id in not_in or live[0].state(time.time()) != "running":
            return None
        return live[0].instance_id
    found: str = await wait_until(check)
    return found


async def register_as_agent(client: httpx.AsyncClient, emulator: RunningEmulator, wid: str, *,
                            not_in: Collection[str] = ()) -> None:
    """What the agent on the instance does: register with the token from its env."""
    instance_id = await running_instance(emulator, wid, not_in=not_in)
    token = emulator.state.instances[instance_id].env["MOLECULE_WORKSPACE_TOKEN"]
    answer = await client.post("/registry/register", headers={"Authorization": f"Bearer {token}"},
                               json={"id": wid, "url": "http://127.0.0.1:9/agent",
                                     "agent_card": {"name": "cp-agent"}})
    assert answer.status_code == 200, answer.text


async def none_live(emulator: RunningEmulator, wid: str) -> bool:
    return not emulator.live_of(wid)
