"""Helpers for the docker backend's tests: is an engine here, the test image, and cleanup through the CLI.

The tests run against a real engine and a locally built image (``scripts/test`` builds both; no registry is
ever contacted). Without an engine they skip, saying how to enable them, except under ``CI=true``, where a
missing engine is a failure: CI must not go green by skipping the backend it ships.
"""

from __future__ import annotations

import functools
import json
import os
import random
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

#: ``WORKSPACE_IMAGE_PREFIX`` of the tests: runtime ``langgraph`` runs ``molecule-box-test-agent-langgraph:latest``.
IMAGE_PREFIX = "molecule-box-test-agent-"
RUNTIME = "langgraph"
IMAGE = f"{IMAGE_PREFIX}{RUNTIME}:latest"
ROOT = Path(__file__).resolve().parent.parent.parent
HOW = ("Docker tests need a running engine and the test image; run ./scripts/test (as root it installs docker.io, "
       "starts dockerd and builds the image), or build the image with ./scripts/docker-test-image")


def docker(*args: str, timeout: float = 60, check: bool = True) -> str:
    """Run the docker CLI (blocking: call through trio.to_thread in async tests)."""
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


@functools.cache
def engine_problem() -> str | None:
    """Why the docker tests cannot run here, or None when they can."""
    if shutil.which("docker") is None:
        return "the docker CLI is not installed"
    try:
        docker("version", "--format", "{{.Server.Version}}", timeout=15)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        return f"no Docker engine answers ({exc})"
    try:
        docker("image", "inspect", IMAGE, timeout=15)
    except (RuntimeError, subprocess.TimeoutExpired):
        return f"the test image {IMAGE} is missing"
    return None


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def containers(box_id: str, *, all: bool = True) -> list[str]:
    """Ids of the containers labelled for ``box_id``."""
    out = docker("ps", *(["-a"] if all else []), "-q", "--no-trunc", "--filter", f"label=molecule-box.box={box_id}")
    return out.split()


def volumes(box_id: str) -> list[str]:
    return docker("volume", "ls", "-q", "--filter", f"label=molecule-box.box={box_id}").split()


def inspect(ref: str) -> dict[str, Any]:
    return dict(json.loads(docker("inspect", ref))[0])


def remove_box(box_id: str) -> None:
    """Remove everything labelled for ``box_id`` (test teardown; the box itself leaves containers running)."""
    ids = containers(box_id)
    if ids:
        docker("rm", "-f", "-v", *ids, check=False)
    vols = volumes(box_id)
    if vols:
        docker("volume", "rm", "-f", *vols, check=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_range(size: int = 100) -> str:
    """A random ``WORKSPACE_PORT_RANGE`` per box under test, so boxes of different tests rarely share ports
    (the allocator skips ports in use anyway); below Linux's ephemeral ports (32768+), as the default is."""
    base = random.randrange(20000, 32700 - size, size)
    return f"{base}-{base + size - 1}"


def docker_env(port: int, **extra: str) -> dict[str, str]:
    """Box settings of the docker tests: the local test image, host networking, the box at a known port."""
    env = {
        "PORT": str(port),
        "PLATFORM_URL": f"http://127.0.0.1:{port}",
        "CONTAINER_BACKEND": "docker",
        "WORKSPACE_IMAGE_PREFIX": IMAGE_PREFIX,
        "WORKSPACE_NETWORK": os.environ.get("WORKSPACE_NETWORK", "host"),
        "WORKSPACE_PORT_RANGE": port_range(),
        "WORKSPACE_HEALTHCHECK_INTERVAL": "1",
        "RESTART_BACKOFF_SECONDS": "0.2",
    }
    env.update(extra)
    return env
