"""What the box leaves on disk is its owner's alone (issue #10 item 11): the store, its -wal/-shm, the key, the
lock and backups 0600 and the data dir 0700 whatever the umask, and a generated admin token printed only to a
terminal, else written to a 0600 file whose path (not the token) is logged."""

from __future__ import annotations

import os
import pty
import re
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import trio

from .conftest import ADMIN, BoxProcess

TOKEN_SHAPE = re.compile(r"ADMIN_TOKEN=([A-Za-z0-9_-]{43})")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def admin_works(box: BoxProcess, token: str) -> bool:
    async with httpx.AsyncClient(base_url=box.url, timeout=10) as client:
        return (await client.get("/workspaces", headers={"Authorization": f"Bearer {token}"})).status_code == 200


async def test_without_a_terminal_the_generated_admin_token_goes_to_a_0600_file_not_the_log(tmp_path: Path) -> None:
    data = tmp_path / "data"
    box = BoxProcess(data, tmp_path / "box.log", ADMIN_TOKEN="")
    try:
        await box.start()  # stdout and stderr are a file: what systemd's journal or CI would get
        token_file = data / "admin-token"
        assert token_file.exists(), box.log()
        assert mode(token_file) == 0o600
        token = token_file.read_text().strip()
        assert len(token) == 43 and token not in box.log()
        assert str(token_file) in box.log()
        assert f"molecule-box login < {token_file}" in box.log()
        assert await admin_works(box, token)
    finally:
        await box.kill()


async def test_on_a_terminal_the_generated_admin_token_is_shown_and_no_file_is_written(tmp_path: Path) -> None:
    data = tmp_path / "data"
    box = BoxProcess(data, tmp_path / "box.log", ADMIN_TOKEN="")
    controller, terminal = pty.openpty()
    os.set_blocking(controller, False)
    shown = b""
    try:
        await box.start(stdout=terminal, stderr=terminal)
        with trio.fail_after(30):
            while not TOKEN_SHAPE.search(shown.decode(errors="replace")):
                try:
                    shown += os.read(controller, 65536)
                except BlockingIOError:
                    await trio.sleep(0.05)
        match = TOKEN_SHAPE.search(shown.decode(errors="replace"))
        assert match is not None
        assert await admin_works(box, match.group(1))
        assert not (data / "admin-token").exists()
        with trio.fail_after(10):  # and how to hand it to the CLI (issue #11 item 3)
            while "molecule-box login" not in shown.decode(errors="replace"):
                try:
                    shown += os.read(controller, 65536)
                except BlockingIOError:
                    await trio.sleep(0.05)
    finally:
        await box.kill()
        os.close(controller)
        os.close(terminal)


async def test_store_key_lock_and_backup_are_owner_only_under_umask_000(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)  # as systemd's StateDirectory= or an operator's mkdir leaves it
    os.chmod(data, 0o755)
    box = BoxProcess(data, tmp_path / "box.log")
    try:
        await box.start(umask=0)
        async with httpx.AsyncClient(base_url=box.url, timeout=10, headers=ADMIN) as client:
            saved = await client.put("/settings/secrets", json={"key": "K", "value": "v"})
            assert saved.status_code == 200, saved.text
        assert mode(data) == 0o700
        for name in ("molecule-box.db", "molecule-box.db-wal", "molecule-box.db-shm", "secrets.key",
                     "molecule-box.lock"):
            assert mode(data / name) == 0o600, (name, oct(mode(data / name)))
        backup = tmp_path / "backup"
        result = await trio.to_thread.run_sync(lambda: subprocess.run(
            [sys.executable, "-m", "molecule_box", "backup", str(backup)], env=box.env, capture_output=True,
            text=True, timeout=60, check=False, umask=0))
        assert result.returncode == 0, result.stderr
        assert mode(backup) == 0o700
        for path in backup.iterdir():
            assert mode(path) == 0o600, (path.name, oct(mode(path)))
    finally:
        await box.kill()
