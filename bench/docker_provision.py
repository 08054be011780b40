#!/usr/bin/env python3
"""Docker provisioning benchmark: what the box adds on top of the engine, and how fast it adopts after a crash.

    python bench/docker_provision.py              # 20 + 20 containers, adoption of 50
    python bench/docker_provision.py --batch 10 --adopt 20     # a quicker look

What one run measures (all on this machine's engine, with the locally built test agent image
``molecule-box-test-agent-langgraph:latest``; ``./scripts/docker-test-image`` builds it; no registry):

1. **Direct.** 20 containers created at once straight through aiodocker with the same image and the same
   container settings the box uses (``molecule_box.backends.docker.spec.container_config``: tier 2 limits,
   health check, labels, host network, the two labelled volumes, the token written with ``put_archive``
   before start). Time to ``running`` per container = the engine's ``start`` event (received on a separate events
   subscription) minus the batch's start.
2. **Through the box.** 20 workspaces created at once with ``POST /workspaces`` against a real
   ``python -m molecule_box run`` (fresh data dir, ``WORKSPACE_NETWORK=host``). Time to ``running`` is
   measured the same way (engine ``start`` event minus the batch's start), and time to ``online`` (the
   agent registered with its pre-written token) from ``GET /workspaces`` polled every 50 ms.
   Key figure: box/direct median (target <= 1.2).
3. **Adoption.** The box gets 50 running workspaces, is SIGKILLed and started again; the time from the new
   process's exec until the 50th ``adopted its running workload`` log line (target <= 3 s), and until
   ``/health`` answers. Every container must keep its id and StartedAt (no restart, no duplicate).

After one warm-up container each way, ``--rounds`` rounds (default 3) run both batches, alternating which
goes first, and pool the samples (the box's previous batch is deleted through the API first). Everything
this run creates carries a label with this run's or this box's id and is removed at the end, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Self

import aiodocker
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo's molecule_box, installed or not
from molecule_box.backends.base import WorkloadSpec
from molecule_box.backends.docker import spec as sp
from molecule_box.config import Settings

REPO = Path(__file__).resolve().parent.parent

IMAGE_PREFIX = "molecule-box-test-agent-"
RUNTIME = "langgraph"
IMAGE = f"{IMAGE_PREFIX}{RUNTIME}:latest"
ADMIN_TOKEN = "bench-admin-token-0123456789abcdef0123"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class StartEvents:
    """Receipt times (monotonic) of the engine's ``start`` events, by the container's workspace label."""

    def __init__(self, docker: aiodocker.Docker) -> None:
        self.docker = docker
        self.seen: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        filters = {"type": ["container"], "event": ["start"], "label": [f"{sp.LABEL_MANAGED}=true"]}
        subscriber = self.docker.events.subscribe(filters=json.dumps(filters))

        async def read() -> None:
            while True:
                event = await subscriber.get()
                if event is None:
                    return
                attributes = (event.get("Actor") or {}).get("Attributes") or {}
                workspace = attributes.get(sp.LABEL_WORKSPACE)
                if workspace and workspace not in self.seen:
                    self.seen[workspace] = time.monotonic()

        self._task = asyncio.ensure_future(read())
        await asyncio.sleep(0.3)  # let the subscription open
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.docker.events.stop()
        if self._task is not None:
            self._task.cancel()

    async def wait(self, ids: list[str], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not all(i in self.seen for i in ids):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{sum(i in self.seen for i in ids)}/{len(ids)} containers started")
            await asyncio.sleep(0.02)


class Box:
    """``python -m molecule_box run`` as a child process on a fresh data dir."""

    def __init__(self, workdir: Path, port: int, port_range: str) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = workdir / "box.log"
        self.env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
        self.env.update({
            "MOLECULE_BOX_DATA": str(workdir / "data"), "PORT": str(port), "BIND_ADDR": "127.0.0.1",
            "ADMIN_TOKEN": ADMIN_TOKEN, "PLATFORM_URL": self.url, "CONTAINER_BACKEND": "docker",
            "MOLECULE_BOX_ALLOW_AGENT_NETWORKS": "127.0.0.0/8", "WORKSPACE_IMAGE_PREFIX": IMAGE_PREFIX,
            "WORKSPACE_NETWORK": "host", "WORKSPACE_PORT_RANGE": port_range, "MOLECULE_BOX_LOG_LEVEL": "info",
            "PYTHONUNBUFFERED": "1",
        })
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self) -> None:
        with open(self.log_path, "ab") as log:  # the child keeps its own copy
            self.started_at = time.monotonic()
            self.proc = subprocess.Popen([sys.executable, "-m", "molecule_box", "run"], env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT)

    async def wait_healthy(self, timeout: float = 30) -> float:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() < deadline:
                assert self.proc is not None and self.proc.poll() is None, self.log()[-3000:]
                try:
                    if (await client.get(f"{self.url}/health")).status_code == 200:
                        return time.monotonic() - self.started_at
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.02)
        raise TimeoutError("the box did not become healthy\n" + self.log()[-3000:])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def direct_batch(docker: aiodocker.Docker, events: StartEvents, run_id: str, count: int,
                       settings: Settings, host_cpus: int) -> list[float]:
    """``count`` containers at once through aiodocker, configured exactly as the box configures them."""
    ports = sp.PortAllocator(*settings.workspace_ports)
    specs = []
    for n in range(count):
        wid = str(uuid.uuid4())
        specs.append(WorkloadSpec(workspace_id=wid, name=f"direct-{n}", runtime=RUNTIME, tier=2,
                                  env={"WORKSPACE_ID": wid, "PLATFORM_URL": "http://127.0.0.1:9",
                                       "MOLECULE_URL": "http://127.0.0.1:9", "TIER": "2",
                                       "WORKSPACE_CONFIG_PATH": "/configs"},
                                  platform_url="http://127.0.0.1:9", auth_token="direct-" + uuid.uuid4().hex))

    async def one(spec: WorkloadSpec) -> None:
        port = ports.allocate(spec.workspace_id)
        config = sp.container_config(spec, settings, box_id=run_id, image=IMAGE, port=port, host_cpus=host_cpus,
                                     own_healthcheck=False)
        container = await docker.containers.create(config, name=f"bench-{spec.workspace_id[:12]}")
        await container.put_archive(sp.TOKEN_PATH, sp.token_archive(spec.auth_token or ""))
        await container.start()

    began = time.monotonic()
    await asyncio.gather(*(one(s) for s in specs))
    ids = [s.workspace_id for s in specs]
    await events.wait(ids)
    return [events.seen[i] - began for i in ids]


async def box_batch(client: httpx.AsyncClient, events: StartEvents,
                    count: int) -> tuple[list[float], list[float], list[str]]:
    """``count`` workspaces at once through the API: (time to running, time to online, ids)."""
    began = time.monotonic()

    async def create(n: int) -> str:
        response = await client.post("/workspaces", json={"name": f"bench-{n}", "runtime": RUNTIME, "tier": 2},
                                     headers=ADMIN)
        response.raise_for_status()
        return str(response.json()["id"])

    ids = list(await asyncio.gather(*(create(n) for n in range(count))))
    online: dict[str, float] = {}
    deadline = time.monotonic() + 120
    while len(online) < len(ids):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(online)}/{len(ids)} workspaces online")
        listing = (await client.get("/workspaces", headers=ADMIN)).json()
        now = time.monotonic()
        for ws in listing:
            if ws["id"] in ids and ws["status"] == "online" and ws["id"] not in online:
                online[ws["id"]] = now - began
            if ws["id"] in ids and ws["status"] == "failed":
                raise RuntimeError(f"workspace failed: {ws['failure_reason']}")
        await asyncio.sleep(0.05)
    await events.wait(ids)
    return [events.seen[i] - began for i in ids], [online[i] for i in ids], ids


async def remove_labelled(docker: aiodocker.Docker, label: str) -> None:
    for container in await docker.containers.list(all=True, filters=json.dumps({"label": [label]})):
        try:
            await container.delete(force=True, v=True)
        except aiodocker.DockerError:
            pass
    volumes = await docker.volumes.list(filters={"label": [label]})
    for volume in volumes.get("Volumes") or []:
        try:
            await (await docker.volumes.get(volume["Name"])).delete()
        except aiodocker.DockerError:
            pass


async def delete_all(client: httpx.AsyncClient, docker: aiodocker.Docker, box_id: str, ids: list[str]) -> None:
    """Delete workspaces through the API and wait until the box removed their containers."""
    await asyncio.gather(*(client.delete(f"/workspaces/{wid}?confirm=true", headers=ADMIN) for wid in ids))
    deadline = time.monotonic() + 60
    while await docker.containers.list(all=True, filters=json.dumps({"label": [f"{sp.LABEL_BOX}={box_id}"]})):
        if time.monotonic() > deadline:
            raise TimeoutError("deleted workspaces' containers are still there")
        await asyncio.sleep(0.1)


async def snapshot(docker: aiodocker.Docker, box_id: str) -> dict[str, tuple[str, str]]:
    found = {}
    for container in await docker.containers.list(all=True, filters=json.dumps(
            {"label": [f"{sp.LABEL_BOX}={box_id}"]})):
        data = await container.show()
        found[data["Config"]["Labels"][sp.LABEL_WORKSPACE]] = (data["Id"], data["State"]["StartedAt"])
    return found


async def main(args: argparse.Namespace) -> int:
    docker = aiodocker.Docker()
    run_id = "bench" + uuid.uuid4().hex[:8]
    box: Box | None = None
    box_id = ""
    workdir = Path(tempfile.mkdtemp(prefix="molecule-box-bench-"))
    try:
        try:
            await docker.images.inspect(IMAGE)
        except aiodocker.DockerError:
            await asyncio.to_thread(subprocess.run, [str(REPO / "scripts" / "docker-test-image")], check=True)
        host_cpus = int((await docker.system.info())["NCPU"])
        direct_settings = Settings.from_mapping({"WORKSPACE_NETWORK": "host", "WORKSPACE_PORT_RANGE": "30600-30799",
                                                 "WORKSPACE_HEALTHCHECK_INTERVAL": "15"}, environ={})
        box = Box(workdir, free_port(), "30400-30599")
        box.start()
        await box.wait_healthy()
        print(f"box up ({box.url}); engine has {host_cpus} CPUs; image {IMAGE}", flush=True)
        async with httpx.AsyncClient(base_url=box.url, timeout=30) as client, StartEvents(docker) as events:
            # Warm-up: one container each way (page cache, the engine's first-create costs), then gone.
            await direct_batch(docker, events, run_id, 1, direct_settings, host_cpus)
            _, _, warm = await box_batch(client, events, 1)
            box_id = (await snapshot_box_id(docker, warm[0]))
            await client.delete(f"/workspaces/{warm[0]}?confirm=true", headers=ADMIN)
            await remove_labelled(docker, f"{sp.LABEL_BOX}={run_id}")
            await asyncio.sleep(1)

            # Rounds alternate which side goes first; every sample of every round is pooled.
            direct: list[float] = []
            running: list[float] = []
            online: list[float] = []
            ids: list[str] = []
            for round_no in range(args.rounds):
                for side in (("direct", "box") if round_no % 2 == 0 else ("box", "direct")):
                    if side == "direct":
                        direct += await direct_batch(docker, events, run_id, args.batch, direct_settings, host_cpus)
                        await remove_labelled(docker, f"{sp.LABEL_BOX}={run_id}")
                    else:
                        if ids:  # the previous round's workspaces, deleted through the API
                            await delete_all(client, docker, box_id, ids)
                        up, on, ids = await box_batch(client, events, args.batch)
                        running += up
                        online += on
                    await asyncio.sleep(1)

            rows = [
                ("direct (aiodocker)", direct),
                ("through the box", running),
            ]
            print(f"\ntime to running, {args.batch} at once, {args.rounds} round(s) pooled (s)")
            print(f"  {'':<22}{'median':>8}{'p95':>8}{'max':>8}")
            for label, values in rows:
                print(f"  {label:<22}{statistics.median(values):>8.3f}{pct(values, 0.95):>8.3f}{max(values):>8.3f}")
            ratio = statistics.median(running) / statistics.median(direct)
            ratio95 = pct(running, 0.95) / pct(direct, 0.95)
            print(f"  box/direct: median {ratio:.2f}, p95 {ratio95:.2f}   (target median <= 1.2) "
                  f"{'PASS' if ratio <= 1.2 else 'FAIL'}")
            print(f"time to online through the box: median {statistics.median(online):.3f}s, "
                  f"p95 {pct(online, 0.95):.3f}s, max {max(online):.3f}s")

            # Adoption: fill up to N running workspaces, SIGKILL the box, start it again.
            more = args.adopt - len(ids)
            if more > 0:
                _, _, extra = await box_batch(client, events, more)
                ids += extra
        before = await snapshot(docker, box_id)
        assert len(before) == args.adopt, f"{len(before)} containers, expected {args.adopt}"
        box.stop(signal.SIGKILL)
        log_before = box.log().count("adopted its running workload")
        box.start()
        healthy = await box.wait_healthy()
        deadline = time.monotonic() + 60
        while box.log().count("adopted its running workload") - log_before < args.adopt:
            if time.monotonic() > deadline:
                raise TimeoutError("adoption did not finish within 60 s\n" + box.log()[-3000:])
            await asyncio.sleep(0.01)
        adopted = time.monotonic() - box.started_at
        after = await snapshot(docker, box_id)
        same = after == before
        print(f"\nadoption of {args.adopt} running containers after SIGKILL + restart:")
        print(f"  exec -> /health answers   {healthy:.3f}s")
        print(f"  exec -> all adopted       {adopted:.3f}s   (target <= 3 s) {'PASS' if adopted <= 3 else 'FAIL'}")
        print(f"  containers unchanged (same ids, StartedAt, none added): {'yes' if same else 'NO'}")
        return 0 if same else 1
    finally:
        if box is not None:
            box.stop()
        if box_id:
            await remove_labelled(docker, f"{sp.LABEL_BOX}={box_id}")
        await remove_labelled(docker, f"{sp.LABEL_BOX}={run_id}")
        await docker.close()
        shutil.rmtree(workdir, ignore_errors=True)


async def snapshot_box_id(docker: aiodocker.Docker, workspace_id: str) -> str:
    for container in await docker.containers.list(all=True, filters=json.dumps(
            {"label": [f"{sp.LABEL_WORKSPACE}={workspace_id}"]})):
        return str(container["Labels"][sp.LABEL_BOX])
    raise RuntimeError("the warm-up workspace has no container")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=20, help="containers created at once, each way")
    parser.add_argument("--adopt", type=int, default=50, help="running workspaces adopted after the restart")
    parser.add_argument("--rounds", type=int, default=3, help="batches each way, alternating which goes first")
    sys.exit(asyncio.run(main(parser.parse_args())))
