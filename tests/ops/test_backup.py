"""``backup`` under write load on a running box, ``restore`` and its refusals (live box, newer schema, existing
store), and the data-dir lock that makes "live" detectable."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from contextlib import closing
from pathlib import Path

import httpx
import pytest
import trio

from molecule_box.config import Settings
from molecule_box.ops import backup as backups
from molecule_box.ops.lock import DataDirBusy, DataDirLock, holder
from molecule_box.store import Store
from molecule_box.store.migrations import SCHEMA_VERSION

from .conftest import ADMIN, BoxProcess, acli, box_env, free_port


def settings_for(data_dir: Path) -> Settings:
    return Settings.from_mapping({"MOLECULE_BOX_DATA": str(data_dir)}, environ={})


def workspace_ids(db: Path) -> set[str]:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return {row[0] for row in conn.execute("SELECT id FROM workspaces")}


async def test_backup_under_load_restores_every_acknowledged_workspace(tmp_path: Path) -> None:
    data, backup_dir, restored = tmp_path / "data", tmp_path / "backup", tmp_path / "restored"
    box = BoxProcess(data, tmp_path / "box.log")
    acknowledged: list[tuple[float, str]] = []  # (time the 201 arrived, id)
    try:
        await box.start()
        async with httpx.AsyncClient(base_url=box.url, headers=ADMIN, timeout=10) as client:
            response = await client.put("/settings/secrets", json={"key": "GLOBAL_KEY", "value": "s3cret-value"})
            assert response.status_code in (200, 201), response.text

            # Stopped by a flag between requests, not by cancellation: a request cancelled mid-flight leaves
            # httpx's body generator to the garbage collector, which pytest reports as an unraisable warning.
            stop = trio.Event()

            async def create_forever() -> None:
                n = 0
                while not stop.is_set():
                    response = await client.post("/workspaces", json={"name": f"load-{n}", "external": True})
                    assert response.status_code == 201, response.text
                    acknowledged.append((trio.current_time(), response.json()["id"]))
                    n += 1

            async with trio.open_nursery() as nursery:
                for _ in range(4):
                    nursery.start_soon(create_forever)
                with trio.fail_after(20):
                    while len(acknowledged) < 40:
                        await trio.sleep(0.01)
                began = trio.current_time()
                count_at_start = len(acknowledged)
                result = await acli("backup", str(backup_dir), env=box.env)
                count_at_end = len(acknowledged)
                stop.set()
        assert result.returncode == 0, result.stderr
        assert count_at_end > count_at_start, "the load must run while the backup does"
        before_backup = {wid for at, wid in acknowledged if at < began}
        assert "integrity ok" in result.stdout and "secrets.key included" in result.stdout

        manifest = json.loads((backup_dir / "manifest.json").read_text())
        assert manifest["schema_version"] == SCHEMA_VERSION and manifest["secrets_key"] == "included"
        assert set(manifest["files"]) == {"molecule-box.db", "secrets.key"}
        assert stat.S_IMODE((backup_dir / "secrets.key").stat().st_mode) == 0o600
        assert not (backup_dir / "molecule-box.db-wal").exists()  # one self-contained file

        # Restore refuses while the box runs: it holds the data dir's lock.
        live = await acli("restore", "--force", str(backup_dir), env=box.env)
        assert live.returncode == 1 and "is running" in live.stderr and "stop it first" in live.stderr
        # So does a second box on the same data dir.
        second = await acli("run", env=box_env(data, free_port()), timeout=30)
        assert second.returncode == 2 and "in use by molecule-box (pid" in second.stderr

        # The running box answers doctor's port check as its own.
        doctor = await acli("doctor", "--json", env=box.env)
        port = [c for c in json.loads(doctor.stdout)["checks"] if c["check"] == "port"]
        assert port[0]["status"] == "ok" and "running molecule-box" in port[0]["message"], doctor.stdout

        box.signal()
        assert await box.wait() == 0, box.log()

        result = await acli("restore", str(backup_dir), env=box_env(restored, free_port()))
        assert result.returncode == 0, result.stderr
        db = restored / "molecule-box.db"
        with closing(sqlite3.connect(db)) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert before_backup <= workspace_ids(db)
        assert (restored / "secrets.key").read_bytes() == (data / "secrets.key").read_bytes()
        assert stat.S_IMODE((restored / "secrets.key").stat().st_mode) == 0o600
        assert stat.S_IMODE(db.stat().st_mode) == 0o600

        # The restored key decrypts the restored secret (doctor checks it), and a box serves the restored store.
        doctor = await acli("doctor", "--json", env=box_env(restored, free_port()))
        checks = {c["check"]: c for c in json.loads(doctor.stdout)["checks"]}
        assert checks["secrets key"]["status"] == "ok" and "decrypts" in checks["secrets key"]["message"]
        assert doctor.returncode == 0, doctor.stdout
        again = BoxProcess(restored, tmp_path / "box2.log")
        try:
            await again.start()
            async with httpx.AsyncClient(base_url=again.url, headers=ADMIN, timeout=10) as client:
                some = min(before_backup)
                assert (await client.get(f"/workspaces/{some}")).status_code == 200
            again.signal()
            assert await again.wait() == 0
        finally:
            await again.kill()
    finally:
        await box.kill()


def _stored(data: Path) -> None:
    data.mkdir(mode=0o700)
    Store(data / "molecule-box.db").close()
    (data / "secrets.key").write_text("A" * 43 + "=\n")
    os.chmod(data / "secrets.key", 0o600)


def test_restore_refuses_existing_store_and_different_key_without_force(tmp_path: Path) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    _stored(source)
    backups.backup(settings_for(source), tmp_path / "b")
    with pytest.raises(backups.BackupError, match="already exists"):
        backups.backup(settings_for(source), tmp_path / "b")  # backups never overwrite

    _stored(target)
    (target / "secrets.key").write_text("B" * 43 + "=\n")
    with closing(sqlite3.connect(target / "molecule-box.db")) as conn:
        conn.execute("CREATE TABLE marker (x)")
        conn.commit()
    with pytest.raises(backups.BackupError, match="--force"):
        backups.restore(settings_for(target), tmp_path / "b")
    assert (target / "secrets.key").read_text().startswith("B")  # nothing changed

    report = backups.restore(settings_for(target), tmp_path / "b", force=True)
    assert (target / "secrets.key").read_text().startswith("A")
    kept = {Path(p).name.split(".replaced-")[0] for p in report.kept_aside}
    # The old store's -wal/-shm go aside with it: SQLite would otherwise replay that WAL into the restored file.
    assert {"molecule-box.db", "secrets.key"} <= kept <= {"molecule-box.db", "molecule-box.db-wal",
                                                           "molecule-box.db-shm", "secrets.key"}
    with closing(sqlite3.connect(target / "molecule-box.db")) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert "marker" not in tables and "workspaces" in tables
    assert not list(target.glob(".*restore*"))  # no staging file left behind


def test_restore_refuses_a_newer_schema_and_a_damaged_backup(tmp_path: Path) -> None:
    source = tmp_path / "source"
    _stored(source)
    backups.backup(settings_for(source), tmp_path / "b")
    manifest_path = tmp_path / "b" / "manifest.json"

    db = tmp_path / "b" / "molecule-box.db"
    with closing(sqlite3.connect(db)) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    manifest = json.loads(manifest_path.read_text())
    with pytest.raises(backups.BackupError, match="checksum"):
        backups.restore(settings_for(tmp_path / "t1"), tmp_path / "b")
    manifest["files"]["molecule-box.db"]["sha256"] = backups._sha256(db)
    manifest_path.write_text(json.dumps(manifest))

    result = _cli_restore(tmp_path / "b", tmp_path / "t2")
    assert result.returncode == 1
    assert f"schema version {SCHEMA_VERSION + 1}, newer than" in result.stderr and "upgrade" in result.stderr
    assert not (tmp_path / "t2" / "molecule-box.db").exists()

    (tmp_path / "not-a-backup").mkdir()
    result = _cli_restore(tmp_path / "not-a-backup", tmp_path / "t3")
    assert result.returncode == 1 and "no manifest.json" in result.stderr


def _cli_restore(src: Path, data: Path):  # type: ignore[no-untyped-def]
    from .conftest import cli

    return cli("restore", str(src), env=box_env(data, free_port()))


def test_lock_is_exclusive_and_reports_its_holder(tmp_path: Path) -> None:
    assert holder(tmp_path) is None
    with DataDirLock.acquire(tmp_path):
        assert holder(tmp_path) == os.getpid()
        with pytest.raises(DataDirBusy, match=f"pid {os.getpid()}"):
            DataDirLock.acquire(tmp_path)
    assert holder(tmp_path) is None
    DataDirLock.acquire(tmp_path).release()
