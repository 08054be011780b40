#!/usr/bin/env python3
"""Swarm benchmark: what the box adds on top of the swarm manager, and how fast it adopts after a crash.

    python bench/swarm.py                 # 50 services each way, then adoption of the 50
    python bench/swarm.py --count 10      # a quicker look

Runs on a private one-node swarm (``scripts/swarm-engine``: a second dockerd of its own, stopped at the end),
or on ``--swarm-host unix:///...`` (left running), with the local test agent image
``molecule-box-test-agent-langgraph:latest`` (``./scripts/docker-test-image``; no registry). Run as root.

1. **Direct.** ``--count`` services created at once straight through the Engine API (one secret, one config and
   one ``POST /services/create`` each, with the very service spec the plugin builds: the tier-2 limits, the
   token secret at ``/configs/.auth_token``, the first ``config.yaml`` as a config at ``/configs/config.yaml``,
   host network, restart condition none). Time until every service's task
   is ``running``, polled through ``GET /tasks`` every 50 ms.
2. **Through the box.** ``--count`` workspaces created at once with ``POST /workspaces`` against a real
   ``python -m molecule_box run`` (``CONTAINER_BACKEND=swarm``), timed the same way (every task running), and
   until every workspace is ``online``. Key figure: box/direct (ceiling 1.2).
3. **Adoption.** The box is SIGKILLed and started again; the time from the new process's exec until the last
   ``adopted its running workload`` log line (ceiling 1 s after ``/health`` answers; the process's own start
   is shown apart), checking that no service was updated and no task replaced.

``SWARM_RESERVATION=0`` for both: 50 tier-2 reservations would not fit a small machine's CPUs. Everything this
run creates is labelled and removed at the end, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import asyncio
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
import uuid
from pathlib import Path
from typing import Any

import httpx
from molecule_box_swarm import service as sv  # installed with the box (./scripts/test installs it)
from molecule_box_swarm.settings import SwarmSettings

from molecule_box.backends.base import WorkloadSpec
from molecule_box.config import Settings

REPO = Path(__file__).resolve().parent.parent

IMAGE_PREFIX = "molecule-box-test-agent-"
IMAGE = f"{IMAGE_PREFIX}langgraph:latest"
ADMIN_TOKEN = "bench-admin-token-0123456789abcdef0123"
ADOPTED = "adopted its running workload"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Engine:
    """The swarm manager's Engine API over its unix socket."""

    def __init__(self, host: str) -> None:
        path = host.removeprefix("unix://")
        self.http = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=path), base_url="http://engine",
                                      timeout=60)

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text}")
        return response.json() if response.content else None

    async def tasks(self, label: str) -> list[dict[str, Any]]:
        return list(await self.call("GET", "/tasks", params={"filters": json.dumps({"label": [label]})}))

    async def services(self, label: str) -> list[dict[str, Any]]:
        return list(await self.call("GET", "/services", params={"filters": json.dumps({"label": [label]})}))

    async def all_running(self, label: str, count: int, timeout: float = 300) -> float:
        """Seconds (monotonic clock) at which ``count`` tasks labelled ``label`` ran at once."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running = [t for t in await self.tasks(label) if t["Status"]["State"] == "running"]
            if len(running) >= count:
                return time.monotonic()
            await asyncio.sleep(0.05)
        raise TimeoutError(f"{count} tasks labelled {label} did not all run within {timeout}s")

    async def remove(self, label: str) -> None:
        for found in await self.services(label):
            await self.call("DELETE", f"/services/{found['ID']}")
        for _ in range(300):
            if not await self.tasks(label):
                break
            await asyncio.sleep(0.1)
        for kind in ("secrets", "configs"):
            for _ in range(100):
                found = await self.call("GET", f"/{kind}", params={"filters": json.dumps({"label": [label]})})
                if not found:
                    break
                for item in found:
                    response = await self.http.delete(f"/{kind}/{item['ID']}")
                    if response.status_code not in (204, 404):
                        await asyncio.sleep(0.1)


async def direct(engine: Engine, settings: SwarmSettings, run_id: str, count: int, ports: tuple[int, int]) -> float:
    """``count`` services of the plugin's own spec straight through the API; seconds until all run."""
    async def one(n: int) -> None:
        wid = str(uuid.uuid4())
        spec = WorkloadSpec(workspace_id=wid, name=f"direct-{n}", runtime="langgraph", tier=2,
                            env={"WORKSPACE_ID": wid, "PLATFORM_URL": "http://127.0.0.1:9"},
                            platform_url="http://127.0.0.1:9", auth_token=f"direct-token-{n}")
        labels = sv.labels(run_id, wid)
        name = sv.secret_name(run_id, wid, sv.new_generation())
        secret = await engine.call("POST", "/secrets/create", json={
            "Name": name, "Labels": labels, "Data": "ZGlyZWN0"})
        # The box's first start delivers the template's files too: config.yaml as a Docker config.
        config_name = f"{sv.service_name(run_id, wid)}-cfg-0"
        config = await engine.call("POST", "/configs/create", json={
            "Name": config_name, "Labels": labels, "Data": "bmFtZTogZGlyZWN0Cg=="})
        mount = {"File": {"Name": "/configs/config.yaml", "UID": "0", "GID": "0", "Mode": 0o644},
                 "ConfigID": config["ID"], "ConfigName": config_name}
        body = sv.service_spec(settings, run_id, spec, image=IMAGE, port=ports[0] + n, network_id=None,
                               secret=(secret["ID"], name), user=(0, 0), configs=[mount])
        await engine.call("POST", "/services/create", json=body)

    started = time.monotonic()
    await asyncio.gather(*(one(n) for n in range(count)))
    return await engine.all_running(f"molecule-box.box={run_id}", count) - started


class Box:
    def __init__(self, workdir: Path, swarm_host: str, ports: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "box.log"
        self.env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "VIRTUAL_ENV")}
        self.env.update({
            "PORT": str(self.port), "BIND_ADDR": "127.0.0.1", "PLATFORM_URL": self.url,
            "MOLECULE_BOX_DATA": str(workdir / "data"), "ADMIN_TOKEN": ADMIN_TOKEN,
            "MOLECULE_BOX_ALLOW_AGENT_NETWORKS": "127.0.0.0/8", "CONTAINER_BACKEND": "swarm",
            "SWARM_DOCKER_HOST": swarm_host, "WORKSPACE_IMAGE_PREFIX": IMAGE_PREFIX, "WORKSPACE_NETWORK": "host",
            "SWARM_PORT_RANGE": ports, "SWARM_RESERVATION": "0",
        })
        self.process: subprocess.Popen[bytes] | None = None
        self.client = httpx.AsyncClient(base_url=self.url, timeout=30,
                                        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})

    def start(self) -> float:
        with self.log_path.open("ab") as log:
            started = time.monotonic()
            self.process = subprocess.Popen([sys.executable, "-m", "molecule_box", "run"], env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT)
        return started

    async def healthy(self, timeout: float = 60) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if (await self.client.get("/health")).status_code == 200:
                    return time.monotonic()
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.02)
        raise TimeoutError(f"the box did not come up: {self.log()[-2000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None


async def through_box(box: Box, engine: Engine, box_id: str, count: int) -> tuple[float, float]:
    """``count`` workspaces at once; (seconds until every task runs, seconds until every workspace is online)."""
    started = time.monotonic()

    async def create(n: int) -> str:
        response = await box.client.post("/workspaces", json={"name": f"bench-{n}", "runtime": "langgraph",
                                                              "tier": 2})
        response.raise_for_status()
        return str(response.json()["id"])

    ids, running = await asyncio.gather(asyncio.gather(*(create(n) for n in range(count))),
                                        engine.all_running(f"molecule-box.box={box_id}", count))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        rows = (await box.client.get("/workspaces")).json()
        if sum(1 for w in rows if w["id"] in set(ids) and w["status"] == "online") == count:
            return running - started, time.monotonic() - started
        await asyncio.sleep(0.05)
    raise TimeoutError("not every workspace came online")


def run(args: argparse.Namespace) -> int:
    """Start a private swarm engine unless one is given, run the benchmark, stop the engine."""
    workdir = Path(tempfile.mkdtemp(prefix="mbswarm-bench-", dir="/tmp"))
    engine_dir = None
    host = args.swarm_host
    try:
        if not host:
            engine_dir = workdir / "engine"
            done = subprocess.run([str(REPO / "scripts" / "swarm-engine"), "start", str(engine_dir)],
                                  capture_output=True, text=True, timeout=600, check=False)
            if done.returncode != 0:
                print(f"could not start a swarm engine: {done.stderr[-2000:]}", file=sys.stderr)
                return 1
            host = done.stdout.strip()
        return asyncio.run(main(args, host, workdir))
    finally:
        if engine_dir is not None:
            subprocess.run([str(REPO / "scripts" / "swarm-engine"), "stop", str(engine_dir)], capture_output=True,
                           timeout=120, check=False)
        shutil.rmtree(workdir, ignore_errors=True)


async def main(args: argparse.Namespace, host: str, workdir: Path) -> int:
    engine = Engine(host)
    run_id = "bench" + uuid.uuid4().hex[:8]
    base = random.randrange(20000, 32700 - 2 * args.count, 100)
    settings = Settings.from_mapping({"WORKSPACE_IMAGE_PREFIX": IMAGE_PREFIX, "WORKSPACE_NETWORK": "host",
                                      "SWARM_RESERVATION": "0"}, environ={}).backends["swarm"]
    assert isinstance(settings, SwarmSettings)
    box = Box(workdir, host, f"{base + args.count}-{base + 2 * args.count + 49}")
    box_id = ""
    try:
        t_direct = await direct(engine, settings, run_id, args.count, (base, base + args.count))
        await engine.remove(f"molecule-box.box={run_id}")
        box.start()
        await box.healthy()
        box_id = (await box.client.get("/health")).json()["box_id"]
        t_running, t_online = await through_box(box, engine, box_id, args.count)
        label = f"molecule-box.box={box_id}"
        before = {s["ID"]: s["Version"]["Index"] for s in await engine.services(label)}
        tasks_before = {t["ID"] for t in await engine.tasks(label) if t["Status"]["State"] == "running"}

        box.stop(signal.SIGKILL)
        adopted_before = box.log().count(ADOPTED)
        exec_at = box.start()
        health_at = await box.healthy()
        deadline = time.monotonic() + 120
        while box.log().count(ADOPTED) - adopted_before < args.count:
            if time.monotonic() > deadline:
                raise TimeoutError("the restarted box did not adopt every workspace")
            await asyncio.sleep(0.01)
        adopted_at = time.monotonic()
        after = {s["ID"]: s["Version"]["Index"] for s in await engine.services(label)}
        tasks_after = {t["ID"] for t in await engine.tasks(label) if t["Status"]["State"] == "running"}

        ratio = t_running / t_direct
        adopt = adopted_at - health_at
        print(f"swarm bench: {args.count} services, one node ({host})")
        print(f"  direct through the Engine API, all running:   {t_direct:6.2f} s")
        print(f"  through the box (POST /workspaces), running:  {t_running:6.2f} s   "
              f"ratio box/direct {ratio:.2f} (ceiling 1.2) {'ok' if ratio <= 1.2 else 'OVER'}")
        print(f"  through the box, all online (registered):    {t_online:6.2f} s")
        print(f"  adoption after SIGKILL: /health {health_at - exec_at:5.2f} s after exec, all {args.count} adopted "
              f"{adopt:5.2f} s later (ceiling 1 s) {'ok' if adopt <= 1.0 else 'OVER'}")
        same = before == after and tasks_before == tasks_after
        print(f"  services unchanged and no task replaced: {'yes' if same else 'NO'}")
        return 0 if ratio <= 1.2 and adopt <= 1.0 and same else 1
    finally:
        box.stop()
        if box_id:
            await engine.remove(f"molecule-box.box={box_id}")
        await engine.remove(f"molecule-box.box={run_id}")
        await box.client.aclose()
        await engine.http.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=50, help="services each way (default 50)")
    parser.add_argument("--swarm-host", default=os.environ.get("MOLECULE_BOX_SWARM_HOST"),
                        help="an existing swarm manager (unix://...); default: a private one, stopped at the end")
    sys.exit(run(parser.parse_args()))
