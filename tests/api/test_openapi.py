"""``/openapi.json`` describes every served route and body; ``/health`` and ``/metrics`` answer."""

from __future__ import annotations

import httpx
import trio

from molecule_box.api.app import create_app
from molecule_box.api.routing import openapi_path
from molecule_box.box import Box

from ..conftest import create_external


async def test_every_route_is_described(box: Box, client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    served = set()
    for rule in create_app(box).url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            served.add((openapi_path(rule.rule), method.lower()))
    described = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert served - described == set()
    assert ("/registry/heartbeat", "post") in described  # served by the hot path, outside quart
    create = doc["paths"]["/workspaces"]["post"]
    schema = doc["components"]["schemas"]["CreateWorkspace"]
    assert create["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("CreateWorkspace")
    assert "name" in schema["required"] and "parent_id" in schema["properties"]


async def test_health_and_metrics(client: httpx.AsyncClient) -> None:
    health = (await client.get("/health")).json()
    assert health["status"] == "ok" and "external" in health["backends"]
    metrics = await client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "molecule_box_heartbeats_total" in metrics.text and "process_resident_memory_bytes" in metrics.text


def _sample(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


async def test_disk_time_is_measured(client: httpx.AsyncClient) -> None:
    """Every reply waits for a commit: SQLite's COMMIT and checkpoint times are histograms, so a slow disk shows."""
    await create_external(client, "disk")
    with trio.fail_after(10):  # the checkpointer runs within about a second of a commit
        while True:
            text = (await client.get("/metrics")).text
            if _sample(text, "molecule_box_sqlite_checkpoint_seconds_count") >= 1:
                break
            await trio.sleep(0.2)
    assert _sample(text, "molecule_box_sqlite_commit_seconds_count") >= 1
    assert _sample(text, "molecule_box_sqlite_commit_seconds_sum") > 0
