"""Helpers for the operations tests: a real ``molecule-box run`` subprocess on 127.0.0.1, and CLI runs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
import trio

ADMIN_TOKEN = "ops-test-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
#: Variables a test runner might itself have from systemd; a box under test must see only what the test sets.
INHERITED_OUT = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM", "STATE_DIRECTORY",
                 "MOLECULE_BOX_DATA", "ADMIN_TOKEN", "SECRETS_ENCRYPTION_KEY", "DOCKER_HOST", "PORT", "BIND_ADDR")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def box_env(data_dir: Path, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in INHERITED_OUT}
    env.update({
        "MOLECULE_BOX_DATA": str(data_dir),
        "PORT": str(port),
        "BIND_ADDR": "127.0.0.1",
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "CONTAINER_BACKEND": "external",
        "MOLECULE_BOX_SHUTDOWN_GRACE": "10",
        "DOCKER_HOST": "unix:///nonexistent/docker.sock",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env


def cli(*args: str, env: Mapping[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``molecule-box ARGS`` to completion (blocking; call through trio.to_thread in async tests)."""
    return subprocess.run([sys.executable, "-m", "molecule_box", *args], env=dict(env), capture_output=True,
                          text=True, timeout=timeout, check=False)


async def acli(*args: str, env: Mapping[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return await trio.to_thread.run_sync(lambda: cli(*args, env=env, timeout=timeout))


class BoxProcess:
    """A ``molecule-box run`` subprocess; its stderr is kept in a file for failure messages."""

    def __init__(self, data_dir: Path, log: Path, *, port: int | None = None, **extra: str) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = box_env(data_dir, self.port, **extra)
        self.log_path = log
        #: How the box is run (a test may run it in another interpreter).
        self.command = [sys.executable, "-m", "molecule_box", "run"]
        self.proc: trio.Process | None = None
        self._log: IO[bytes] | None = None

    async def start(self, *, wait: bool = True, **options: Any) -> None:
        """Start it (again, after a kill: the log file is appended to). ``options`` go to the process
        (a ``umask``, a terminal as ``stderr``)."""
        if self._log is None or self._log.closed:
            self._log = open(self.log_path, "ab")
        options = {"stdout": self._log, "stderr": self._log, **options}
        self.proc = await trio.lowlevel.open_process(self.command, env=self.env, **options)
        if wait:
            await self.wait_healthy()

    async def wait_healthy(self, timeout: float = 30) -> None:
        with trio.fail_after(timeout):
            async with httpx.AsyncClient(timeout=2) as client:
                while True:
                    assert self.proc is not None and self.proc.returncode is None, self.log()
                    try:
                        if (await client.get(f"{self.url}/health")).status_code == 200:
                            return
                    except httpx.TransportError:
                        pass
                    await trio.sleep(0.05)

    def signal(self, signum: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    async def wait(self, timeout: float = 30) -> int:
        assert self.proc is not None
        with trio.fail_after(timeout):
            return await self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            with trio.move_on_after(10):
                await self.proc.wait()
        if self._log is not None:
            self._log.close()


@pytest.fixture
async def box_process(tmp_path: Path) -> AsyncIterator[BoxProcess]:
    box = BoxProcess(tmp_path / "data", tmp_path / "box.log")
    try:
        yield box
    finally:
        await box.kill()
