"""Crash safety of docker workspaces: the box SIGKILLed and restarted adopts its running containers (same ids,
never restarted, none duplicated), and an engine restarted under a running box is recovered from."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from ..conftest import ADMIN, ADMIN_TOKEN, BoxRunner
from ..ops.conftest import BoxProcess
from .dockerutil import (
    RUNTIME,
    containers,
    docker,
    docker_env,
    free_port,
    in_ci,
    inspect,
    remove_box,
)

pytestmark = pytest.mark.docker


@pytest.fixture
async def box_process(tmp_path: Path) -> AsyncIterator[BoxProcess]:
    """``molecule-box run`` as a child process on the docker test settings, so a test can SIGKILL it."""
    port = free_port()
    box = BoxProcess(tmp_path / "data", tmp_path / "box.log", port=port, ADMIN_TOKEN=ADMIN_TOKEN,
                     MOLECULE_BOX_ALLOW_AGENT_NETWORKS="127.0.0.0/8",
                     DOCKER_HOST=os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"), **docker_env(port))
    try:
        yield box
    finally:
        await box.kill()


async def wait_status(client: httpx.AsyncClient, wid: str, status: str, timeout: float = 30) -> dict[str, Any]:
    body: dict[str, Any] = {}
    with trio.move_on_after(timeout):
        while True:
            response = await client.get(f"/workspaces/{wid}", headers=ADMIN)
            if response.status_code == 200:
                body = response.json()
                if body["status"] == status:
                    return body
            await trio.sleep(0.1)
    raise AssertionError(f"workspace {wid} is {body.get('status')}, not {status}: {body}")


def snapshot(box_id: str) -> dict[str, tuple[str, str, int]]:
    """workspace id → (container id, StartedAt, RestartCount) of every container of the box."""
    found = {}
    for container_id in containers(box_id):
        data = inspect(container_id)
        found[data["Config"]["Labels"]["molecule-box.workspace"]] = (
            data["Id"], data["State"]["StartedAt"], data["RestartCount"])
    return found


async def test_sigkilled_box_adopts_its_containers(box_process: BoxProcess) -> None:
    await box_process.start()
    async with httpx.AsyncClient(base_url=box_process.url, timeout=15) as client:
        ids = []
        for tier in (1, 2, 3):
            response = await client.post("/workspaces", json={"name": f"a{tier}", "runtime": RUNTIME, "tier": tier},
                                         headers=ADMIN)
            assert response.status_code == 201, response.text
            ids.append(response.json()["id"])
        for wid in ids:
            await wait_status(client, wid, "online")
        box_id = inspect(f"ws-{ids[0][:12]}")["Config"]["Labels"]["molecule-box.box"]
        try:
            before = snapshot(box_id)
            assert set(before) == set(ids)
            events_before = {wid: (await client.get(f"/events/{wid}", headers=ADMIN)).json() for wid in ids}

            box_process.signal(signal.SIGKILL)
            await box_process.wait(timeout=10)
            assert snapshot(box_id) == before  # the containers do not notice the box dying
            await box_process.start()
            for wid in ids:
                await wait_status(client, wid, "online")
            await trio.sleep(2)  # adoption is done; any restart it wrongly caused would show by now
            assert snapshot(box_id) == before, "a container was restarted or replaced by the box's restart"
            for wid in ids:
                body = (await client.get(f"/workspaces/{wid}", headers=ADMIN)).json()
                assert body["status"] == "online"
                events = (await client.get(f"/events/{wid}", headers=ADMIN)).json()
                assert len(events) == len(events_before[wid]), f"new lifecycle events after adoption: {events}"
            assert box_process.log().count("adopted its running workload") == 3, box_process.log()
        finally:
            await trio.to_thread.run_sync(remove_box, box_id)


def _dockerd() -> tuple[int, list[str], str | None] | None:
    """(pid, argv, log file) of the local dockerd, when there is exactly one we can see."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "dockerd":
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            out = os.readlink(entry / "fd" / "1")
        except OSError:
            continue
        found.append((int(entry.name), [a.decode() for a in argv if a], out if out.startswith("/") else None))
    return found[0] if len(found) == 1 else None


def _gone(pid: int) -> bool:
    """Has ``pid`` exited? A zombie counts: when ``scripts/test`` started the engine and then exec'd pytest,
    the engine is this process's child, and its /proc entry stays until it is reaped here."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # not our child: init reaps it
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


def _engine_answers() -> bool:
    return subprocess.run(["docker", "version"], capture_output=True, timeout=10, check=False).returncode == 0


def _start_dockerd(argv: list[str], log: str | None) -> None:
    with open(log or "/tmp/molecule-box-test-dockerd.log", "ab") as out:  # the engine keeps its own copy
        # setsid --fork: the engine is nobody's child here (it outlives the test run).
        subprocess.run(["setsid", "--fork", *argv], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                       check=True)


def _restart_dockerd(pid: int, argv: list[str], log: str | None) -> None:
    """SIGTERM the engine, wait for it to exit, start it again with the same flags (blocking).

    The engine is started again whatever happens here: every later docker test needs it."""
    os.kill(pid, signal.SIGTERM)
    try:
        for _ in range(1200):
            if _gone(pid):
                break
            time.sleep(0.1)
        else:
            raise AssertionError("dockerd did not stop within 120s")
    finally:
        if not _gone(pid):
            os.kill(pid, signal.SIGKILL)
            for _ in range(100):
                if _gone(pid):
                    break
                time.sleep(0.1)
        _start_dockerd(argv, log)


def _ensure_engine(argv: list[str], log: str | None) -> None:
    """Teardown: the engine answers again before the next test (started once more if the test left it down)."""
    for attempt in range(2):
        for _ in range(120):
            if _engine_answers():
                return
            time.sleep(0.5)
        if attempt == 0 and _dockerd() is None:
            _start_dockerd(argv, log)
    raise AssertionError(f"the Docker engine did not come back after the test restarted it ({log})")


@pytest.mark.slow
async def test_engine_restart_under_a_running_box(runner: BoxRunner) -> None:
    if not (in_ci() or os.environ.get("MOLECULE_BOX_TEST_RESTART_DOCKERD") == "1"):
        pytest.skip("restarts the Docker engine (killing every container on it): runs under CI=true, or with "
                    "MOLECULE_BOX_TEST_RESTART_DOCKERD=1")
    engine = _dockerd()
    if engine is None:
        pytest.skip("no single local dockerd process to restart")
    pid, argv, log = engine
    box = await runner.start(**docker_env(free_port()))
    box_id = box.box_id
    try:
        async with httpx.AsyncClient(base_url=runner.url, timeout=15) as client:
            response = await client.post("/workspaces", json={"name": "survivor", "runtime": RUNTIME}, headers=ADMIN)
            wid = response.json()["id"]
            await wait_status(client, wid, "online")
            before = snapshot(box_id)[wid][0]
            backend = await box.backends.get("docker")  # the loaded instance

            await trio.to_thread.run_sync(_restart_dockerd, pid, argv, log)
            with trio.fail_after(60):
                while True:
                    done = await trio.to_thread.run_sync(
                        lambda: subprocess.run(["docker", "version"], capture_output=True, timeout=10, check=False))
                    if done.returncode == 0:
                        break
                    handle = box.supervisor.record(wid).backend_state  # type: ignore[union-attr]
                    status = await backend.inspect(handle)
                    assert status.state.value in ("unknown", "running", "stopped"), status  # never "missing"
                    await trio.sleep(0.2)
            # Without live-restore the engine stopped the container; the box notices on reconnection and
            # starts it again (one restart), and never marks the workspace failed for the outage.
            body = await wait_status(client, wid, "online", timeout=90)
            assert body["failure_reason"] is None
            after = snapshot(box_id)
            assert list(after) == [wid]
            if not backend.live_restore:  # type: ignore[attr-defined]
                assert after[wid][0] != before
            events = (await client.get(f"/events/{wid}", headers=ADMIN)).json()
            assert "WORKSPACE_PROVISION_FAILED" not in [e["event_type"] for e in events]
            assert docker("ps", "-q", "--filter", f"label=molecule-box.box={box_id}").strip()
    finally:
        await runner.stop()
        await trio.to_thread.run_sync(_ensure_engine, argv, log)
        await trio.to_thread.run_sync(remove_box, box_id)
