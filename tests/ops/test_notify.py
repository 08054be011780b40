"""systemd's notify protocol: unit tests of the notifier, then a real ``molecule-box run`` under a fake manager."""

from __future__ import annotations

import itertools
import os
import secrets
import signal
import socket
from pathlib import Path
from types import SimpleNamespace

import httpx
import trio
import trio.testing

from molecule_box.ops.notify import STATUS_INTERVAL, Notifier

from .conftest import BoxProcess


def parse(datagram: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in datagram.decode().splitlines() if "=" in line)


def test_watchdog_only_for_this_pid() -> None:
    assert Notifier.from_environ({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000000"}).watchdog_interval == 0.5
    mine = {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier.from_environ(mine).watchdog_interval == 0.5
    other = dict(mine, WATCHDOG_PID=str(os.getpid() + 1))
    assert Notifier.from_environ(other).watchdog_interval is None  # a watchdog meant for another process
    assert Notifier.from_environ({"NOTIFY_SOCKET": "/x"}).watchdog_interval is None
    assert Notifier.from_environ({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "bad"}).watchdog_interval is None


async def test_unset_socket_is_a_no_op() -> None:
    with Notifier.from_environ({}) as notifier:
        await notifier.send("READY=1")
        await notifier.watchdog()  # returns at once without a socket


async def test_abstract_namespace_and_one_datagram_per_message() -> None:
    name = f"molecule-box-test-{secrets.token_hex(6)}"
    listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    await listener.bind("\0" + name)
    with listener, Notifier(f"@{name}") as notifier, trio.fail_after(5):
        await notifier.send("READY=1", "STATUS=serving")
        assert parse(await listener.recv(4096)) == {"READY": "1", "STATUS": "serving"}
        await notifier.stopping("stopping")
        await notifier.stopping("again")  # sent once only
        await notifier.send("WATCHDOG=1")
        assert parse(await listener.recv(4096)) == {"STOPPING": "1", "STATUS": "stopping"}
        assert parse(await listener.recv(4096)) == {"WATCHDOG": "1"}


async def test_a_dead_manager_is_not_fatal(tmp_path: Path) -> None:
    with Notifier(str(tmp_path / "nobody-listens")) as notifier:
        await notifier.send("READY=1")
        await notifier.send("WATCHDOG=1")


async def test_ready_after_port_watchdog_stopping_exit_0(tmp_path: Path) -> None:
    """The full life under a fake service manager: READY only once the port accepts, pings at half the watchdog
    timeout, STOPPING on SIGTERM, exit status 0."""
    path = tmp_path / "notify.sock"
    listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    await listener.bind(str(path))
    box = BoxProcess(tmp_path / "data", tmp_path / "box.log", NOTIFY_SOCKET=str(path), WATCHDOG_USEC="1000000")
    try:
        with listener:
            await box.start(wait=False)
            before_ready: list[dict[str, str]] = []
            with trio.fail_after(30):
                while True:
                    message = parse(await listener.recv(4096))
                    if message.get("READY") == "1":
                        break
                    before_ready.append(message)
                # READY arrives only once the port is bound: a connection made now must succeed at once.
                stream = await trio.open_tcp_stream("127.0.0.1", box.port)
                await stream.aclose()
            assert message["STATUS"].startswith(f"serving on http://127.0.0.1:{box.port}"), message
            assert "workspaces:" in message["STATUS"]
            assert any(m.get("STATUS", "").startswith("starting") for m in before_ready), before_ready
            async with httpx.AsyncClient(timeout=5) as client:
                assert (await client.get(f"{box.url}/health")).status_code == 200

            # WATCHDOG_USEC=1 s: a ping every 0.5 s, from the event loop, for as long as the box runs.
            pings = []
            with trio.fail_after(10):
                while len(pings) < 4:
                    if parse(await listener.recv(4096)).get("WATCHDOG") == "1":
                        pings.append(trio.current_time())
            gaps = [b - a for a, b in itertools.pairwise(pings)]
            assert all(0.3 < gap < 0.9 for gap in gaps), gaps

            box.signal(signal.SIGTERM)
            with trio.fail_after(10):
                while True:
                    message = parse(await listener.recv(4096))
                    if message.get("STOPPING") == "1":
                        break
            assert message["STATUS"].startswith("stopping"), message
            assert await box.wait() == 0, box.log()
    finally:
        await box.kill()


async def test_status_refreshed_until_stopping(autojump_clock: trio.testing.MockClock) -> None:
    name = f"molecule-box-test-{secrets.token_hex(6)}"
    listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    await listener.bind("\0" + name)
    counts = {"online": 2}
    box = SimpleNamespace(shutdown_requested=trio.Event(), urls=["http://127.0.0.1:8080"],
                          status_counts=lambda: dict(counts), settings=SimpleNamespace(shutdown_grace_seconds=20.0))
    with listener, Notifier(f"@{name}") as notifier:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(notifier.report_status, box)
            start = trio.current_time()
            first = parse(await listener.recv(4096))
            assert trio.current_time() - start == STATUS_INTERVAL
            assert first == {"STATUS": "serving on http://127.0.0.1:8080; workspaces: 2 online"}
            counts["offline"] = 1
            second = parse(await listener.recv(4096))
            assert second["STATUS"].endswith("workspaces: 1 offline, 2 online")
            box.shutdown_requested.set()
            last = parse(await listener.recv(4096))
            assert last["STOPPING"] == "1" and last["STATUS"].startswith("stopping")
