"""Every deployment model in one box: a docker workspace, a Fly Machine, a control-plane instance and a remote
agent, calling each other through the A2A proxy under the hierarchy rules.

Both plugins are installed and found through their entry points; their emulators run as their users run them
(``python -m molecule_box_fly.emulator --docker-image ...``, ``python -m molecule_box_controlplane.emulator``).
Every agent is the test agent (``tests/docker/agent.py``), really registering and heartbeating: in a container
of the docker backend, in a container the Fly emulator runs for the machine (its token read from the machine
file), as a process started for the control-plane instance with the env the instance was provisioned with
(its token in ``MOLECULE_WORKSPACE_TOKEN``, as the control plane hands it over), and as a remote agent with the
token of its connection block. The tree::

    parent (docker)
    ├── fly (flyio)
    │   └── remote (external)
    └── cp (controlplane, the default: MOLECULE_ORG_ID is set)
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from ..conftest import ADMIN, ADMIN_TOKEN, BoxRunner, bearer
from .dockerutil import IMAGE, ROOT, docker, docker_env, free_port, remove_box

pytestmark = [pytest.mark.docker, pytest.mark.slow]

FLY_TOKEN = "mixed-fly-token-0123456789"
FLY_APP = "mixed-workspaces"
CP_SECRET = "mixed-cp-shared-secret-0123"
CP_ADMIN = "mixed-cp-admin-token-0123"
AGENT = ROOT / "tests" / "docker" / "agent.py"
DENIED = "access denied: workspaces cannot communicate per hierarchy rules"


class Processes:
    """Subprocesses of one test (emulators, agents), each with a log; SIGTERM, then SIGKILL, at teardown."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.running: list[tuple[str, trio.Process]] = []

    async def start(self, name: str, command: list[str], env: dict[str, str] | None = None) -> trio.Process:
        with (self.logs / f"{name}.log").open("wb") as log:
            process = await trio.lowlevel.open_process(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.running.append((name, process))
        return process

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    async def stop_all(self) -> None:
        for _, process in reversed(self.running):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                with trio.move_on_after(60):  # the Fly emulator removes its containers first
                    await process.wait()
                if process.poll() is None:
                    process.kill()
                    await process.wait()


@pytest.fixture
async def processes(tmp_path: Path) -> AsyncIterator[Processes]:
    running = Processes(tmp_path)
    try:
        yield running
    finally:
        with trio.CancelScope(shield=True):
            await running.stop_all()


async def until_up(url: str, what: str, processes: Processes) -> None:
    async with httpx.AsyncClient(timeout=5) as client:
        with trio.move_on_after(60):
            while True:
                try:
                    await client.get(url)
                    return
                except httpx.TransportError:
                    await trio.sleep(0.1)
    raise AssertionError(f"{what} did not come up: {processes.log(what)}")


async def status_of(client: httpx.AsyncClient, wid: str) -> dict[str, Any]:
    answer = await client.get(f"/workspaces/{wid}", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def wait_online(client: httpx.AsyncClient, names: dict[str, str], processes: Processes) -> None:
    bodies: dict[str, dict[str, Any]] = {}
    with trio.move_on_after(120):
        while True:
            bodies = {name: await status_of(client, wid) for name, wid in names.items()}
            if all(body["status"] == "online" for body in bodies.values()):
                return
            await trio.sleep(0.2)
    shown = {name: (b["status"], b.get("failure_reason")) for name, b in bodies.items()}
    raise AssertionError(f"not all online: {shown}; cp agent: {processes.log('cp-agent')}; "
                         f"remote agent: {processes.log('remote-agent')}")


def agent_env(wid: str, platform_url: str, token: str, **extra: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", ""), "WORKSPACE_ID": wid, "PLATFORM_URL": platform_url,
            "MOLECULE_WORKSPACE_TOKEN": token, "PORT": str(free_port()), "TEST_AGENT_HEARTBEAT": "1",
            "PYTHONUNBUFFERED": "1", **extra}


def send(text: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 1, "method": "message/send",
            "params": {"message": {"role": "user", "messageId": f"m-{text}", "parts": [{"kind": "text",
                                                                                       "text": text}]}}}


async def test_docker_fly_controlplane_and_remote_in_one_box(runner: BoxRunner, processes: Processes,
                                                             tmp_path: Path) -> None:
    fly_port, cp_port, box_port = free_port(), free_port(), free_port()
    await processes.start("fly-emulator", [
        sys.executable, "-m", "molecule_box_fly.emulator", "--port", str(fly_port), "--token", FLY_TOKEN,
        "--app", FLY_APP, "--docker-image", IMAGE, "--start-seconds", "0.2"])
    await processes.start("cp-emulator", [
        sys.executable, "-m", "molecule_box_controlplane.emulator", "--port", str(cp_port),
        "--shared-secret", CP_SECRET, "--admin-api-token", CP_ADMIN, "--tenant-admin-token", ADMIN_TOKEN,
        "--boot", "0.3", "--stop", "0.2"])
    fly_url, cp_url = f"http://127.0.0.1:{fly_port}", f"http://127.0.0.1:{cp_port}"
    await until_up(f"{fly_url}/_emulator/stats", "fly-emulator", processes)
    await until_up(f"{cp_url}/_emulator/instances", "cp-emulator", processes)
    env = {**docker_env(box_port), "MOLECULE_ORG_ID": "org-mixed", "CP_PROVISION_URL": cp_url,
           "MOLECULE_CP_SHARED_SECRET": CP_SECRET, "CP_ADMIN_API_TOKEN": CP_ADMIN, "CP_HTTP_TIMEOUT": "5",
           "CP_WATCH_INTERVAL": "1", "FLY_API_TOKEN": FLY_TOKEN, "FLY_WORKSPACE_APP": FLY_APP,
           "FLY_API_BASE_URL": f"{fly_url}/v1", "FLY_REQUEST_TIMEOUT": "5"}
    box = await runner.start(**env)
    platform_url = box.settings.platform_url
    try:
        async with httpx.AsyncClient(base_url=runner.url, timeout=15) as client, \
                httpx.AsyncClient(timeout=10) as emulators:

            async def create(name: str, **fields: Any) -> dict[str, Any]:
                answer = await client.post("/workspaces", json={"name": name, **fields}, headers=ADMIN)
                assert answer.status_code == 201, answer.text
                return dict(answer.json())

            parent = (await create("parent", runtime="langgraph", backend="docker", tier=2))["id"]
            fly = (await create("fly", runtime="langgraph", backend="flyio", tier=2, parent_id=parent))["id"]
            cp = (await create("cp", runtime="langgraph", tier=3, parent_id=parent))["id"]
            remote = await create("remote", external=True, parent_id=fly)
            ids = {"parent": parent, "fly": fly, "cp": cp, "remote": remote["id"]}

            # The remote agent registers with its connection block's token and heartbeats.
            tokens = {"remote": remote["connection"]["auth_token"]}
            await processes.start("remote-agent", [sys.executable, str(AGENT)],
                                  agent_env(ids["remote"], platform_url, tokens["remote"]))
            # The control-plane instance's agent: once the emulator runs the instance, a process with its env.
            with trio.fail_after(60):
                while True:
                    listed = (await emulators.get(f"{cp_url}/_emulator/instances")).json()["instances"]
                    running = [i for i in listed if i["workspace_id"] == cp and i["state"] == "running"]
                    if running:
                        break
                    await trio.sleep(0.1)
            instance_env = (await emulators.get(f"{cp_url}/_emulator/instances/{running[0]['instance_id']}/env"))
            cp_env = instance_env.json()["env"]
            tokens["cp"] = cp_env.pop("MOLECULE_WORKSPACE_TOKEN")
            await processes.start("cp-agent", [sys.executable, str(AGENT)],
                                  agent_env(cp, cp_env["PLATFORM_URL"], tokens["cp"],
                                            **{k: v for k, v in cp_env.items() if k != "PORT"}))
            await wait_online(client, ids, processes)
            with trio.fail_after(30):  # and every agent heartbeats (each heartbeat carries its uptime)
                while True:
                    beats = {name: (await status_of(client, wid))["uptime_seconds"] for name, wid in ids.items()}
                    if all(beats.values()):
                        break
                    await trio.sleep(0.2)

            # Each one's backend, as the list shows it.
            listed = {w["id"]: w for w in (await client.get("/workspaces", headers=ADMIN)).json()}
            assert {name: listed[wid]["backend"] for name, wid in ids.items()} == {
                "parent": "docker", "fly": "flyio", "cp": "controlplane", "remote": "external"}
            # The Fly agent runs in a machine of the emulator, with its token as the machine's file.
            machines = (await emulators.get(f"{fly_url}/v1/apps/{FLY_APP}/machines",
                                            params={"metadata.workspace_id": fly},
                                            headers={"Authorization": f"Bearer {FLY_TOKEN}"})).json()
            assert [m["state"] for m in machines] == ["started"], machines
            [token_file] = machines[0]["config"]["files"]
            tokens["fly"] = base64.b64decode(token_file["raw_value"]).decode()
            handle = box.supervisor.record(parent).backend_state  # type: ignore[union-attr]
            tokens["parent"] = (await trio.to_thread.run_sync(
                lambda: docker("exec", handle["container_id"], "cat", "/configs/.auth_token"))).strip()

            async def call(caller: str, target: str) -> httpx.Response:
                return await client.post(f"/workspaces/{ids[target]}/a2a", json=send(f"{caller}-to-{target}"),
                                         headers={"X-Workspace-ID": ids[caller], **bearer(tokens[caller])})

            allowed = [("fly", "cp"), ("cp", "fly"),  # siblings
                       ("parent", "fly"), ("parent", "cp"), ("cp", "parent"), ("fly", "remote"),  # parent, child
                       ("remote", "fly"), ("remote", "parent"), ("parent", "remote")]  # and further up or down
            for caller, target in allowed:
                answer = await call(caller, target)
                assert answer.status_code == 200, (caller, target, answer.text)
                text = answer.json()["result"]["parts"][0]["text"]
                assert text == f"echo: {caller}-to-{target}", (caller, target, answer.text)
            for caller, target in [("remote", "cp"), ("cp", "remote")]:  # an uncle and his nephew: unrelated
                answer = await call(caller, target)
                assert answer.status_code == 403 and answer.json()["error"] == DENIED, (caller, target, answer.text)

            # doctor, as an operator runs it next to this box: every installed plugin, versions, settings.
            doctor_env = {**{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}, **env,
                          "MOLECULE_BOX_DATA": str(box.settings.data_dir), "ADMIN_TOKEN": ADMIN_TOKEN,
                          "BIND_ADDR": "127.0.0.1", "PORT": str(box_port)}
            done = await trio.run_process([sys.executable, "-m", "molecule_box", "doctor", "--json"],
                                          env=doctor_env, capture_stdout=True, capture_stderr=True, check=False)
            found = {row["message"].split(":", 1)[0]: row for row in json.loads(done.stdout)["checks"]
                     if row["check"] == "backends"}
            for name, distribution in (("flyio", "molecule-box-fly"), ("controlplane", "molecule-box-controlplane"),
                                       ("docker", "molecule-box"), ("external", "molecule-box")):
                row = found[name]
                assert row["status"] == "ok" and row["message"].startswith(f"{name}: distribution {distribution} ")
                assert "contract version 2" in row["message"] and row["message"].endswith("settings ok"), row
    finally:
        if runner.box is not None:
            await runner.stop()
        await trio.to_thread.run_sync(remove_box, box.box_id)
