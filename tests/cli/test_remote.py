"""The operator CLI end to end: real `molecule-box` subprocesses against a real box subprocess."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import stat
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from ..api.test_restart import _free_port, _spawn, _wait_healthy
from ..conftest import ADMIN_TOKEN

SECRET = "sk-canary-9f3b2c7d1e"


def cli(url: str, *args: str, stdin: str | None = None, token: str = ADMIN_TOKEN) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MOLECULE_BOX_URL=url, ADMIN_TOKEN=token, HOME="/nonexistent")
    return subprocess.run([sys.executable, "-m", "molecule_box", *args], input=stdin, env=env, text=True,
                          capture_output=True, timeout=60)


def ok(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout) if result.stdout.strip().startswith(("{", "[")) else result.stdout


@pytest.fixture
async def box_url(tmp_path: Path) -> Any:
    port = _free_port()
    proc = _spawn(tmp_path, port)
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=url) as client:
        await _wait_healthy(client)
    yield url
    proc.terminate()
    proc.wait(20)


async def test_operator_cli(box_url: str, tmp_path: Path) -> None:
    run = lambda *a, **k: trio.to_thread.run_sync(lambda: cli(box_url, *a, **k))  # noqa: E731
    created = ok(await run("workspaces", "create", "laptop", "--external", "--json"))
    wid = created["id"]
    assert created["status"] == "awaiting_agent" and len(created["connection"]["auth_token"]) == 43
    listed = ok(await run("workspaces", "ls", "--json"))
    assert [w["name"] for w in listed] == ["laptop"]
    table = ok(await run("workspaces", "ls"))
    assert table.splitlines()[0].split()[:3] == ["ID", "NAME", "STATUS"] and "laptop" in table
    assert ok(await run("workspaces", "show", wid[:8], "--json"))["id"] == wid

    saved = ok(await run("secrets", "set", "OPENAI_API_KEY", "-w", "laptop", "--json", stdin=SECRET + "\n"))
    assert saved == {"status": "saved", "key": "OPENAI_API_KEY"}
    ok(await run("secrets", "set", "GLOBAL_ONE", "--json", stdin="g\n"))
    keys = ok(await run("secrets", "ls", "-w", wid, "--json"))
    assert {k["key"] for k in keys} == {"OPENAI_API_KEY", "GLOBAL_ONE"} and SECRET not in json.dumps(keys)

    minted = ok(await run("tokens", "create", wid, "--json"))
    tokens = ok(await run("tokens", "ls", wid, "--json"))
    assert tokens["count"] == 2 and minted["auth_token"] not in json.dumps(tokens)
    assert ok(await run("tokens", "revoke", wid, minted["id"], "--json")) == {"status": "revoked"}

    history = ok(await run("events", "--json"))
    assert "WORKSPACE_AWAITING_AGENT" in {e["event_type"] for e in history}
    assert ok(await run("workspaces", "pause", wid, "--json")) == {"status": "paused", "paused_count": 1}

    refused = await run("workspaces", "ls", token="wrong-token-wrong-token")
    assert refused.returncode != 0 and "HTTP 401" in refused.stderr and "ADMIN_TOKEN" in refused.stderr
    assert ok(await run("workspaces", "rm", wid, "--json"))["status"] == "removed"

    # The secret never reached the box's log.
    logs = "".join(p.read_text() for p in tmp_path.glob("box-*.log"))
    assert SECRET not in logs and ADMIN_TOKEN not in logs


async def test_events_follow(box_url: str) -> None:
    env = dict(os.environ, MOLECULE_BOX_URL=box_url, ADMIN_TOKEN=ADMIN_TOKEN)
    follower = subprocess.Popen([sys.executable, "-m", "molecule_box", "events", "--follow", "--json"], env=env,
                                stdout=subprocess.PIPE, text=True)
    try:
        await trio.sleep(1.5)  # let it subscribe
        await trio.to_thread.run_sync(lambda: ok(cli(box_url, "workspaces", "create", "live", "--external")))
        line = await trio.to_thread.run_sync(follower.stdout.readline)  # type: ignore[union-attr]
        frame = json.loads(line)
        assert frame["event"] == "WORKSPACE_AWAITING_AGENT" and frame["payload"]["name"] == "live"
    finally:
        follower.kill()
        follower.wait(10)
        follower.stdout.close()  # type: ignore[union-attr]


def bare_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of an operator's shell: no box address, no token, nothing of the box's."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MOLECULE_BOX_URL", "ADMIN_TOKEN", "PORT", "BIND_ADDR", "MOLECULE_BOX_DATA")}
    return {**env, "HOME": str(home), **extra}


def run_cli(*args: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "molecule_box", *args], input=stdin, env=env, text=True,
                          capture_output=True, timeout=60)


def on_a_terminal(args: tuple[str, ...], env: dict[str, str], prompt: bytes, typed: str) -> tuple[int, str]:
    """``molecule-box ARGS`` with a terminal as stdin, stdout and stderr; types ``typed`` at ``prompt``."""
    controller, terminal = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "molecule_box", *args], env=env, stdin=terminal,
                            stdout=terminal, stderr=terminal, start_new_session=True)  # no other /dev/tty
    os.close(terminal)
    shown = b""
    deadline = time.monotonic() + 30
    try:
        while prompt not in shown:
            if select.select([controller], [], [], max(0.0, deadline - time.monotonic()))[0] == []:
                raise AssertionError(f"no prompt within 30 s: {shown!r}")
            try:
                shown += os.read(controller, 4096)
            except OSError:  # EIO: it exited and closed the terminal
                raise AssertionError(f"it exited without asking: {shown!r}") from None
        os.write(controller, typed.encode() + b"\n")
        code = proc.wait(30)
        while select.select([controller], [], [], 0)[0]:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            shown += chunk
    finally:
        proc.kill()
        os.close(controller)
    return code, shown.decode(errors="replace")


async def test_login_on_a_terminal_keeps_the_token_0600_without_echo(box_url: str, tmp_path: Path) -> None:
    env = bare_env(tmp_path, MOLECULE_BOX_URL=box_url)
    code, shown = await trio.to_thread.run_sync(lambda: on_a_terminal(("login",), env, b"admin token",
                                                                      ADMIN_TOKEN))
    assert code == 0, shown
    assert ADMIN_TOKEN not in shown  # not echoed
    token_file = tmp_path / ".config" / "molecule-box" / "admin-token"
    assert token_file.read_text().strip() == ADMIN_TOKEN
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
    # Every command now finds the token by itself.
    assert ok(await trio.to_thread.run_sync(lambda: run_cli("workspaces", "ls", "--json", env=env))) == []


async def test_login_from_stdin_refuses_a_wrong_token_and_accepts_an_env_file_line(box_url: str,
                                                                                   tmp_path: Path) -> None:
    env = bare_env(tmp_path, MOLECULE_BOX_URL=box_url)
    token_file = tmp_path / ".config" / "molecule-box" / "admin-token"
    wrong = await trio.to_thread.run_sync(lambda: run_cli("login", env=env, stdin="not-the-admin-token-0123\n"))
    assert wrong.returncode != 0 and "HTTP 401" in wrong.stderr and "nothing saved" in wrong.stderr
    assert not token_file.exists()
    # What `sudo grep ^ADMIN_TOKEN= /etc/molecule-box/molecule-box.env | molecule-box login` sends.
    piped = await trio.to_thread.run_sync(lambda: run_cli("login", "--json", env=env,
                                                          stdin=f"ADMIN_TOKEN={ADMIN_TOKEN}\n"))
    assert ok(piped)["token_file"] == str(token_file)
    assert token_file.read_text().strip() == ADMIN_TOKEN and stat.S_IMODE(token_file.stat().st_mode) == 0o600


async def test_the_cli_finds_the_box_from_url_port_and_env_file_before_or_after_the_subcommand(
        box_url: str, tmp_path: Path) -> None:
    port = box_url.rsplit(":", 1)[1]
    env_file = tmp_path / "box.env"
    env_file.write_text(f"PORT={port}\nBIND_ADDR=127.0.0.1\n")
    home = bare_env(tmp_path, ADMIN_TOKEN=ADMIN_TOKEN)
    ways = [
        (("workspaces", "ls", "--json"), {"PORT": port}),  # the PORT the box was started with
        (("workspaces", "ls", "--json", "--env-file", str(env_file)), {}),  # the box's env file
        (("workspaces", "--env-file", str(env_file), "ls", "--json"), {}),
        (("workspaces", "ls", "--json", "--url", box_url), {}),  # --url after the subcommand
        (("workspaces", "--url", box_url, "ls", "--json"), {}),  # and before it
        (("events", "--json", "--url", box_url), {}),
        (("workspaces", "ls", "--json", "--url", box_url), {"MOLECULE_BOX_URL": "http://127.0.0.1:9"}),
    ]
    for args, extra in ways:
        result = await trio.to_thread.run_sync(lambda args=args, extra=extra: run_cli(*args, env={**home, **extra}))
        assert result.returncode == 0, (args, extra, result.stderr)
    # Nothing points anywhere: the default address, and the error says where it looked.
    lost = await trio.to_thread.run_sync(lambda: run_cli("workspaces", "ls", env={**home, "PORT": "9"}))
    assert lost.returncode != 0 and "127.0.0.1:9 (PORT and BIND_ADDR from the environment)" in lost.stderr


async def test_create_wait_waits_for_an_external_agent_to_come_online(box_url: str, tmp_path: Path) -> None:
    """The token is printed first (the agent needs it), then --wait waits for the agent, not for awaiting_agent."""
    env = bare_env(tmp_path, MOLECULE_BOX_URL=box_url, ADMIN_TOKEN=ADMIN_TOKEN)
    proc = subprocess.Popen([sys.executable, "-m", "molecule_box", "workspaces", "create", "waiting", "--external",
                             "--wait", "--timeout", "60"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        values: dict[str, str] = {}
        with trio.fail_after(30):
            while "MOLECULE_TOKEN" not in values:
                line = await trio.to_thread.run_sync(proc.stdout.readline)  # type: ignore[union-attr]
                assert line, proc.stderr.read()  # type: ignore[union-attr]
                key, _, value = line.strip().partition("=")
                values[key] = value
        async with httpx.AsyncClient(base_url=box_url, timeout=10) as client:
            beat = await client.post("/registry/heartbeat", json={"workspace_id": values["WORKSPACE_ID"]},
                                     headers={"Authorization": f"Bearer {values['MOLECULE_TOKEN']}"})
            assert beat.status_code == 200, beat.text
        out, err = await trio.to_thread.run_sync(lambda: proc.communicate(timeout=30))
        assert proc.returncode == 0, err
        assert out.strip().splitlines()[-1] == "waiting is online"
    finally:
        proc.kill()
        proc.wait(10)
    help_text = ok(await trio.to_thread.run_sync(lambda: run_cli("workspaces", "create", "--help", env=env)))
    assert "an external one once its agent registers" in " ".join(help_text.split())


async def test_action_commands_print_a_sentence(box_url: str, tmp_path: Path) -> None:
    env = bare_env(tmp_path, MOLECULE_BOX_URL=box_url, ADMIN_TOKEN=ADMIN_TOKEN)
    run = lambda *a, **k: trio.to_thread.run_sync(lambda: run_cli(*a, env=env, **k))  # noqa: E731
    wid = ok(await run("workspaces", "create", "laptop", "--external", "--json"))["id"]
    minted = ok(await run("tokens", "create", wid, "--json"))
    sentences = [
        (("workspaces", "pause", "laptop"), "paused workspace laptop"),
        (("workspaces", "resume", "laptop"), "resumed workspace laptop; it is awaiting_agent"),
        (("tokens", "revoke", "laptop", minted["id"]), f"revoked token {minted['id']} of workspace laptop"),
        (("secrets", "set", "K", "-w", "laptop"), "saved secret K of workspace laptop"),
        (("secrets", "rm", "K", "-w", "laptop"), "deleted secret K of workspace laptop"),
        (("workspaces", "rm", "laptop"), "removed workspace laptop"),  # stdin is not a terminal: no question
    ]
    for args, sentence in sentences:
        assert ok(await run(*args, stdin="v\n")) == sentence + "\n", args


async def test_rm_asks_first_on_a_terminal(box_url: str, tmp_path: Path) -> None:
    env = bare_env(tmp_path, MOLECULE_BOX_URL=box_url, ADMIN_TOKEN=ADMIN_TOKEN)
    wid = ok(await trio.to_thread.run_sync(lambda: run_cli("workspaces", "create", "keep", "--external", "--json",
                                                           env=env)))["id"]

    async def status() -> str:
        shown = ok(await trio.to_thread.run_sync(lambda: run_cli("workspaces", "show", wid, "--json", env=env)))
        return str(shown["status"])

    ask = lambda answer: trio.to_thread.run_sync(  # noqa: E731
        lambda: on_a_terminal(("workspaces", "rm", "keep"), env, b"[y/N]", answer))
    code, shown = await ask("n")
    assert code != 0 and "volumes" in shown and await status() == "awaiting_agent"
    code, shown = await ask("y")
    assert code == 0 and "removed workspace keep" in shown and await status() == "removed"


def terminal_output(args: tuple[str, ...], env: dict[str, str], columns: int = 80) -> str:
    """What ``molecule-box ARGS`` prints to a terminal ``columns`` wide."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "molecule_box", *args], env=env, stdout=terminal,
                            stderr=subprocess.PIPE, start_new_session=True)
    os.close(terminal)
    shown = b""
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            if not select.select([controller], [], [], max(0.0, deadline - time.monotonic()))[0]:
                break
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: it exited and closed the terminal
                break
            if not chunk:
                break
            shown += chunk
        assert proc.wait(30) == 0, proc.stderr.read()  # type: ignore[union-attr]
    finally:
        proc.kill()
        proc.stderr.close()  # type: ignore[union-attr]
        os.close(controller)
    return shown.decode().replace("\r\n", "\n")


async def test_ls_fits_80_columns_on_a_terminal_and_no_trunc_shows_everything(box_url: str, tmp_path: Path) -> None:
    env = bare_env(tmp_path, MOLECULE_BOX_URL=box_url, ADMIN_TOKEN=ADMIN_TOKEN)
    long_name = "a-workspace-name-long-enough-to-push-the-table-past-eighty-columns"
    created = [ok(await trio.to_thread.run_sync(lambda name=name: run_cli("workspaces", "create", name, "--external",
                                                                          "--json", env=env)))
               for name in (long_name, "short")]
    async with httpx.AsyncClient(base_url=box_url, timeout=10) as client:
        beat = await client.post("/registry/heartbeat", json={"workspace_id": created[1]["id"]},
                                 headers={"Authorization": f"Bearer {created[1]['connection']['auth_token']}"})
        assert beat.status_code == 200
    table = await trio.to_thread.run_sync(lambda: terminal_output(("workspaces", "ls"), env))
    lines = table.splitlines()
    assert len(lines) == 3 and all(len(line) <= 80 for line in lines), table
    assert lines[0].split()[:3] == ["ID", "NAME", "STATUS"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {w["id"][:8] for w in created}  # short ids, which every command accepts
    assert rows[created[1]["id"][:8]].rstrip().endswith("s ago")  # a relative time, as docker ps shows
    assert "…" in rows[created[0]["id"][:8]]  # the long name was shortened to fit
    full = await trio.to_thread.run_sync(lambda: terminal_output(("workspaces", "ls", "--no-trunc"), env))
    assert long_name in full and all(w["id"] in full for w in created) and "Z" in full  # RFC 3339 times
