"""The emulator serves the documented Machines API: what a client other than our backend may rely on too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio
from flyutil import APP, TOKEN, Fly, free_port


@pytest.fixture
async def api(fly: Fly) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"{fly.url}/apps/{APP}/machines", timeout=30,
                                 headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client


async def test_state_machine_wait_and_force_delete(api: httpx.AsyncClient, fly: Fly) -> None:
    assert (await api.post("", json={"config": {}})).json() == {"error": "config.image is required"}
    fly.emulator.faults.start_seconds = 1.5
    created = await api.post("", json={"name": "a", "config": {"image": "x", "metadata": {"k": "v"}}})
    assert created.status_code == 200 and created.json()["state"] == "created"
    mid, instance = created.json()["id"], created.json()["instance_id"]
    timed_out = await api.get(f"/{mid}/wait", params={"state": "started", "timeout": 1})
    assert timed_out.status_code == 408 and "error" in timed_out.json()
    assert (await api.get(f"/{mid}/wait", params={"state": "started", "instance_id": instance})).status_code == 200
    assert (await api.get(f"/{mid}/wait", params={"state": "bogus"})).status_code == 400
    refused = await api.delete(f"/{mid}")
    assert refused.status_code == 412 and "force=true" in refused.json()["error"]
    assert [m["id"] for m in (await api.get("", params={"metadata.k": "v"})).json()] == [mid]
    assert (await api.get("", params={"metadata.k": "w"})).json() == []
    updated = await api.post(f"/{mid}", json={"config": {"image": "y"}})
    assert updated.json()["instance_id"] != instance and updated.json()["version"] == "2"
    assert (await api.post(f"/{mid}/stop")).status_code == 200
    stopped = await api.get(f"/{mid}/wait", params={"state": "stopped", "instance_id": updated.json()["instance_id"]})
    assert stopped.status_code == 200
    assert (await api.delete(f"/{mid}")).status_code == 200  # a stopped machine needs no force
    assert (await api.get(f"/{mid}/wait", params={"state": "destroyed"})).status_code == 200
    assert (await api.get("")).json() == []
    assert [m["state"] for m in (await api.get("", params={"include_deleted": "true"})).json()] == ["destroyed"]


async def test_leases_guard_every_change(api: httpx.AsyncClient) -> None:
    mid = (await api.post("", json={"config": {"image": "x"}, "skip_launch": True})).json()["id"]
    lease = await api.post(f"/{mid}/lease", json={"ttl": 30})
    assert lease.status_code == 201
    nonce = lease.json()["data"]["nonce"]
    assert (await api.post(f"/{mid}/lease")).status_code == 409
    assert (await api.get(f"/{mid}/lease")).json()["data"]["nonce"] == nonce
    assert (await api.post(f"/{mid}/start")).status_code == 409
    assert (await api.post(f"/{mid}/start", headers={"fly-machine-lease-nonce": nonce})).status_code == 200
    assert (await api.delete(f"/{mid}/lease")).status_code == 400
    assert (await api.delete(f"/{mid}/lease", headers={"fly-machine-lease-nonce": nonce})).status_code == 200
    assert (await api.get(f"/{mid}/lease")).status_code == 404
    assert (await api.post(f"/{mid}/metadata/role", json={"value": "db"})).status_code == 204
    assert (await api.get(f"/{mid}/metadata")).json() == {"role": "db"}


async def test_faults_and_stats_are_knobs(api: httpx.AsyncClient, fly: Fly) -> None:
    async with httpx.AsyncClient(base_url=fly.url.removesuffix("/v1")) as control:
        assert (await control.post("/_emulator/faults", json={"server_errors": 1})).status_code == 200
        assert (await control.post("/_emulator/faults", json={"nope": 1})).status_code == 400
        assert (await api.get("")).status_code == 503
        assert (await api.get("")).status_code == 200
        await control.post("/_emulator/faults", json={"drop_connections": 1})
        with pytest.raises(httpx.RemoteProtocolError):
            await api.get("")
        stats = (await control.get("/_emulator/stats")).json()
        assert stats["calls"]["GET machines"] == 3 and stats["total"] == 3


async def test_it_runs_as_a_command(tmp_path: Path) -> None:
    """``python -m molecule_box_fly.emulator``, as a user starts it: knobs on the command line, SIGTERM stops it."""
    port = free_port()
    command = [sys.executable, "-m", "molecule_box_fly.emulator", "--port", str(port), "--token", TOKEN,
               "--app", APP, "--start-seconds", "0.1"]
    with (tmp_path / "emulator.log").open("wb") as log:
        process = await trio.lowlevel.open_process(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            with trio.fail_after(30):
                while True:
                    try:
                        faults = (await client.post("/_emulator/faults", json={})).json()
                        break
                    except httpx.TransportError:
                        await trio.sleep(0.05)
            assert faults["start_seconds"] == 0.1
            listed = await client.get(f"/v1/apps/{APP}/machines", headers={"Authorization": f"FlyV1 {TOKEN}"})
            assert listed.status_code == 200 and listed.json() == []
    finally:
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            await process.wait()
    with trio.fail_after(60):
        missing = await trio.run_process([sys.executable, "-m", "molecule_box_fly.emulator"], capture_stderr=True,
                                         env={"PATH": os.environ.get("PATH", "")}, check=False)
    refusal = missing.stderr.decode()
    assert missing.returncode != 0 and "--token" in refusal and "Traceback" not in refusal
