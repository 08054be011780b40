#!/usr/bin/env python3
"""Backend plugins against their emulators: 50 workspaces created at once, with realistic latency injected.

    python bench/plugins.py                 # every emulator, 50 workspaces
    python bench/plugins.py --count 20      # a quicker look
    python bench/plugins.py --only flyio

For each entry of ``TARGETS`` (one per plugin emulator), one run:

1. starts the emulator as its users would (``python -m <plugin>.emulator``) with the issue's latency: a create
   (Fly's machine create, the control plane's provision) answers after 300 ms, a workload takes 2 s to start
   (Fly: to ``started``; the control plane: ``pending`` to ``running``);
2. starts a box (``python -m molecule_box run``, fresh data dir) whose default backend is the plugin
   (``CONTAINER_BACKEND=flyio``; ``MOLECULE_ORG_ID`` set for the control plane), pointed at the emulator;
3. **the ceiling:** one workspace alone, time from its ``POST /workspaces`` until the emulator reports its
   workload running (the slowest a single provisioning can be here: create latency + start time + the box);
4. **the batch:** ``--count`` workspaces created at once (concurrent POSTs); time until the emulator reports
   all of them running, and the emulator's count of API calls during the batch.

Key figures: batch / single (target <= 1.2: the calls overlap instead of queueing) and API calls per
workspace (target <= 4 on the happy path). The emulator is polled through its own stats endpoint, which it
does not count as API calls. Exit status 0 only when every target is met; every process started is stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import trio

REPO = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "bench-admin-token-0123456789abcdef0123"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CREATE_SECONDS = 0.3
START_SECONDS = 2.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclasses.dataclass(frozen=True)
class Target:
    """One plugin's emulator: how to start it and what the box needs to use it."""

    backend: str
    #: port -> the emulator's command line (with the latency injected).
    command: Callable[[int], list[str]]
    #: port -> the box's environment for this backend.
    box_env: Callable[[int], dict[str, str]]
    #: port -> the emulator's stats URL, which it does not count as an API call.
    stats_url: Callable[[int], str]
    #: The stats answer -> (workloads running, API calls so far).
    read_stats: Callable[[Any], tuple[int, int]]


def fly_stats(stats: Any) -> tuple[int, int]:
    return int(stats["states"].get("started", 0)), int(stats["total"])


def cp_stats(stats: Any) -> tuple[int, int]:
    return sum(i["state"] == "running" for i in stats["instances"]), sum(stats["calls"].values())


CP_SECRET = "bench-cp-shared-secret-0123456789"
CP_ADMIN = "bench-cp-admin-token-0123456789"
FLY_TOKEN = "bench-fly-token-0123456789"
FLY_APP = "bench-workspaces"

TARGETS = [
    Target(
        backend="flyio",
        command=lambda port: [sys.executable, "-m", "molecule_box_fly.emulator", "--port", str(port),
                              "--token", FLY_TOKEN, "--app", FLY_APP, "--create-seconds", str(CREATE_SECONDS),
                              "--start-seconds", str(START_SECONDS)],
        box_env=lambda port: {"FLY_API_TOKEN": FLY_TOKEN, "FLY_WORKSPACE_APP": FLY_APP,
                              "FLY_API_BASE_URL": f"http://127.0.0.1:{port}/v1"},
        stats_url=lambda port: f"http://127.0.0.1:{port}/_emulator/stats",
        read_stats=fly_stats,
    ),
    Target(
        # MOLECULE_ORG_ID makes controlplane the default backend; the watch (one status call per instance per
        # interval) is set far apart so that only the provisioning's own calls are counted.
        backend="controlplane",
        command=lambda port: [sys.executable, "-m", "molecule_box_controlplane.emulator", "--port", str(port),
                              "--shared-secret", CP_SECRET, "--admin-api-token", CP_ADMIN,
                              "--tenant-admin-token", ADMIN_TOKEN, "--provision", str(CREATE_SECONDS),
                              "--boot", str(START_SECONDS)],
        box_env=lambda port: {"MOLECULE_ORG_ID": "bench-org", "CP_PROVISION_URL": f"http://127.0.0.1:{port}",
                              "MOLECULE_CP_SHARED_SECRET": CP_SECRET, "CP_ADMIN_API_TOKEN": CP_ADMIN,
                              "CP_WATCH_INTERVAL": "3600"},
        stats_url=lambda port: f"http://127.0.0.1:{port}/_emulator/instances",
        read_stats=cp_stats,
    ),
]


async def wait_until_up(url: str, process: trio.Process, what: str) -> None:
    async with httpx.AsyncClient(timeout=5) as client:
        with trio.fail_after(60):
            while process.poll() is None:
                try:
                    await client.get(url)
                    return
                except httpx.TransportError:
                    await trio.sleep(0.05)
    raise SystemExit(f"{what} exited with status {process.returncode}")


async def stop(process: trio.Process) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with trio.move_on_after(15):
            await process.wait()
            return
        process.kill()
        await process.wait()


async def running_count(client: httpx.AsyncClient, target: Target, port: int) -> tuple[int, int]:
    """(workloads running, API calls so far)."""
    return target.read_stats((await client.get(target.stats_url(port))).json())


async def batch(box: httpx.AsyncClient, emulator: httpx.AsyncClient, target: Target, port: int,
                count: int) -> tuple[float, int]:
    """Seconds from the first POST until ``count`` more workloads run, and the API calls it took."""
    base, calls_before = await running_count(emulator, target, port)

    async def create(i: int) -> None:
        response = await box.post("/workspaces", json={"name": f"bench-{i}", "runtime": "langgraph", "tier": 2})
        response.raise_for_status()

    started = time.monotonic()
    async with trio.open_nursery() as nursery:
        for i in range(count):
            nursery.start_soon(create, i)
    print(f"  {target.backend}: {count} created (POSTs answered) after {time.monotonic() - started:.2f}s")
    with trio.fail_after(300):
        while True:
            running, calls = await running_count(emulator, target, port)
            if running >= base + count:
                return time.monotonic() - started, calls - calls_before
            await trio.sleep(0.02)


async def bench_one(target: Target, count: int) -> list[tuple[str, float, str, bool]]:
    em_port, box_port = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="bench-plugins-") as data:
        env = {**os.environ, "PORT": str(box_port), "BIND_ADDR": "127.0.0.1", "MOLECULE_BOX_DATA": data,
               "ADMIN_TOKEN": ADMIN_TOKEN, "PLATFORM_URL": f"http://127.0.0.1:{box_port}",
               "CONTAINER_BACKEND": target.backend, "MOLECULE_BOX_LOG_LEVEL": "warning", **target.box_env(em_port)}
        log = Path(data) / "box.log"
        async with trio.open_nursery() as nursery:
            emulator = await trio.lowlevel.open_process(target.command(em_port), stdout=subprocess.DEVNULL,
                                                        stderr=subprocess.DEVNULL)
            with log.open("wb") as out:
                box = await trio.lowlevel.open_process([sys.executable, "-m", "molecule_box", "run"], env=env,
                                                       stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
            try:
                await wait_until_up(target.stats_url(em_port), emulator, f"the {target.backend} emulator")
                await wait_until_up(f"http://127.0.0.1:{box_port}/health", box, "the box")
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{box_port}", headers=ADMIN,
                                             timeout=60) as box_client, httpx.AsyncClient(timeout=10) as em:
                    single, single_calls = await batch(box_client, em, target, em_port, 1)
                    many, calls = await batch(box_client, em, target, em_port, count)
            finally:
                await stop(box)
                await stop(emulator)
                nursery.cancel_scope.cancel()
    ratio, per = many / single, calls / count
    print(f"{target.backend}: single {single:.2f}s ({single_calls} calls); {count} at once {many:.2f}s, "
          f"{calls} calls")
    return [(f"{target.backend}: {count} at once / single", ratio, "<= 1.2", ratio <= 1.2),
            (f"{target.backend}: API calls per workspace", per, "<= 4", per <= 4)]


async def main(args: argparse.Namespace) -> int:
    rows = []
    for target in TARGETS:
        if args.only and target.backend not in args.only:
            continue
        rows += await bench_one(target, args.count)
    print(f"\n{'figure':<42} {'value':>8}  {'target':<8} result")
    for name, value, wanted, ok in rows:
        print(f"{name:<42} {value:>8.2f}  {wanted:<8} {'PASS' if ok else 'FAIL'}")
    return 0 if rows and all(ok for *_, ok in rows) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=50, help="workspaces created at once (default 50)")
    parser.add_argument("--only", action="append", help="only this backend (repeatable)")
    sys.exit(trio.run(main, parser.parse_args()))
