"""SIGTERM on a real ``molecule-box run``: in-flight requests finish, new connections are refused, the store
closes cleanly, exit status 0; a second signal cuts the drain short with 128+signal."""

from __future__ import annotations

import json
import signal
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
import trio

from .conftest import ADMIN_TOKEN, BoxProcess


async def _trickled_create(box: BoxProcess, name: str, *, after_first_chunk: trio.Event,
                           seconds: float = 2.0) -> tuple[int, dict[str, object]]:
    """POST /workspaces with its body uploaded in pieces over ``seconds``; returns status and JSON body."""
    body = json.dumps({"name": name, "external": True}).encode()
    head = (f"POST /workspaces HTTP/1.1\r\nHost: 127.0.0.1:{box.port}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    pieces = 5
    step = -(-len(body) // pieces)
    stream = await trio.open_tcp_stream("127.0.0.1", box.port)
    async with stream:
        await stream.send_all(head + body[:step])
        after_first_chunk.set()
        for i in range(1, pieces):
            await trio.sleep(seconds / pieces)
            await stream.send_all(body[i * step:(i + 1) * step])
        raw = b""
        with trio.fail_after(15):
            while chunk := await stream.receive_some(65536):
                raw += chunk
    head_part, _, payload = raw.partition(b"\r\n\r\n")
    status = int(head_part.split(b" ", 2)[1])
    return status, json.loads(payload)


async def test_sigterm_finishes_a_slow_request_and_exits_0(box_process: BoxProcess) -> None:
    box = box_process
    await box.start()
    result: list[tuple[int, dict[str, object]]] = []
    first_chunk = trio.Event()

    async def client() -> None:
        result.append(await _trickled_create(box, "slow-upload", after_first_chunk=first_chunk))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client)
        await first_chunk.wait()
        await trio.sleep(0.2)
        box.signal(signal.SIGTERM)
        signalled = trio.current_time()
        await trio.sleep(0.5)
        # Draining: the listener is closed, so a new client is refused rather than left hanging.
        with pytest.raises(OSError):
            with trio.fail_after(5):
                await trio.open_tcp_stream("127.0.0.1", box.port)
    status, body = result[0]
    assert status == 201, body
    assert await box.wait() == 0, box.log()
    # The stop ends when the last request does, not at the end of the 10 s grace: the finished connection is closed.
    assert trio.current_time() - signalled < 6
    data = Path(box.env["MOLECULE_BOX_DATA"])
    # The store was closed, not abandoned: the last connection's close checkpoints and removes the WAL.
    assert not (data / "molecule-box.db-wal").exists()
    with closing(sqlite3.connect(data / "molecule-box.db")) as conn:
        assert conn.execute("SELECT name FROM workspaces WHERE id = ?", [body["id"]]).fetchone() == ("slow-upload",)
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert "SIGTERM: finishing in-flight requests" in box.log()


async def test_second_signal_exits_at_once_non_zero(tmp_path: Path) -> None:
    box = BoxProcess(tmp_path / "data", tmp_path / "box.log", MOLECULE_BOX_SHUTDOWN_GRACE="60")
    try:
        await box.start()
        first_chunk = trio.Event()
        async with trio.open_nursery() as nursery:
            async def client() -> None:
                try:
                    await _trickled_create(box, "never-finished", after_first_chunk=first_chunk, seconds=30)
                except (OSError, trio.BrokenResourceError, ValueError, IndexError):
                    pass  # the box went away mid-request, as asked

            nursery.start_soon(client)
            await first_chunk.wait()
            await trio.sleep(0.2)  # the box has accepted the connection: a stop refuses what it has not accepted
            box.signal(signal.SIGTERM)
            await trio.sleep(0.5)
            assert box.proc is not None and box.proc.returncode is None  # draining, for up to 60 s
            began = trio.current_time()
            box.signal(signal.SIGTERM)
            assert await box.wait(timeout=10) == 128 + signal.SIGTERM, box.log()
            assert trio.current_time() - began < 5
            nursery.cancel_scope.cancel()
        assert "second signal" in box.log()
        with closing(sqlite3.connect(tmp_path / "data" / "molecule-box.db")) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        await box.kill()


async def test_sigterm_during_start_up_stops_cleanly(tmp_path: Path) -> None:
    """A stop that arrives before READY abandons start-up instead of dying with the signal's default action."""
    box = BoxProcess(tmp_path / "data", tmp_path / "box.log")
    try:
        await box.start(wait=False)
        # Wait until the run loop's signal watcher is installed (the lock file appears just after), then stop.
        with trio.fail_after(20):
            while not (tmp_path / "data" / "molecule-box.lock").exists():
                await trio.sleep(0.01)
        box.signal(signal.SIGTERM)
        assert await box.wait() == 0, box.log()
    finally:
        await box.kill()
