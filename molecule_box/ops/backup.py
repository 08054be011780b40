"""``molecule-box backup`` and ``restore``: a consistent copy of a running box, and putting one back.

A backup is a directory::

    PATH/
      molecule-box.db   the store, copied with SQLite's online backup API (one step, so one
                        consistent snapshot while the box keeps writing), in rollback-journal mode
                        so the file stands alone (no -wal beside it)
      secrets.key       the data dir's secrets key file, when the box uses one (mode 0600);
                        absent when SECRETS_ENCRYPTION_KEY comes from the environment
      manifest.json     format, time, box version, schema version, workspace count, sha256 of each file

The directory is assembled under a temporary name beside PATH and renamed into
place, so PATH is either a complete, checked backup or absent. Without the key
that encrypted them, the secrets in a backup are unreadable: back up the key
(or the environment's ``SECRETS_ENCRYPTION_KEY``) with it, and keep both where
only root can read them.

``restore`` refuses a running box (it takes the box's own data-dir lock),
checks the backup's checksums, integrity and schema version before touching
the data dir, refuses to replace a store or a different key without
``force`` (the replaced files are kept beside, renamed ``*.replaced-<time>``),
and installs each file with a rename.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from .._version import __version__
from ..config import Settings
from ..errors import MoleculeBoxError
from ..security.crypto import KEY_FILE
from ..store import migrations, snapshot
from .fsutil import atomic_write, fsync_dir, match_owner
from .lock import DataDirBusy, DataDirLock

DB_FILE = "molecule-box.db"
MANIFEST = "manifest.json"
FORMAT = 1


class BackupError(MoleculeBoxError):
    """A backup or restore refused or failed; the message says why and what to do."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def backup(settings: Settings, dest: Path) -> dict[str, Any]:
    """Copy the store (and key file) of ``settings.data_dir`` into the new directory ``dest``; return the manifest."""
    data_dir = Path(settings.data_dir)
    store = settings.store_path
    dest = Path(dest).absolute()
    if not store.is_file():
        raise BackupError(f"no store at {store}: check MOLECULE_BOX_DATA (or --env-file) points at the box's data dir")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BackupError(f"{dest} already exists and is not an empty directory: backups never overwrite; "
                          "choose a new path, e.g. one named after the date")
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = dest.parent / f".{dest.name}.partial-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(mode=0o700)
    try:
        copy = work / DB_FILE
        try:
            snapshot.copy(store, copy)
        finally:
            match_owner(data_dir, Path(f"{store}-wal"), Path(f"{store}-shm"))
        os.chmod(copy, 0o600)
        _fsync_file(copy)
        found = snapshot.inspect(copy)
        if found["integrity"] != "ok":
            raise BackupError(f"the copy fails PRAGMA integrity_check ({found['integrity']}): "
                              "the store itself may be damaged; run molecule-box doctor")
        files = {DB_FILE: {"sha256": _sha256(copy), "bytes": copy.stat().st_size}}
        if settings.secrets_encryption_key is not None:
            key_source = "environment"
        elif (data_dir / KEY_FILE).is_file():
            key_source = "included"
            key_bytes = (data_dir / KEY_FILE).read_bytes()
            atomic_write(work / KEY_FILE, key_bytes, mode=0o600, exclusive=True)
            files[KEY_FILE] = {"sha256": hashlib.sha256(key_bytes).hexdigest(), "bytes": len(key_bytes)}
        else:
            key_source = "absent"
        manifest = {
            "format": FORMAT,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "box_version": __version__,
            "schema_version": found["schema_version"],
            "workspaces": found["workspaces"],
            "source": str(data_dir),
            "secrets_key": key_source,
            "files": files,
        }
        atomic_write(work / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode(), mode=0o600, exclusive=True)
        fsync_dir(work)
        if dest.exists():
            dest.rmdir()  # empty (checked above): rename needs the name free or an empty directory
        os.rename(work, dest)
        fsync_dir(dest.parent)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return manifest


def read_backup(src: Path) -> dict[str, Any]:
    """The manifest of backup ``src`` after checking every file's checksum and the store's integrity and schema.

    Raises :class:`BackupError` (or ``ConfigError`` from the schema check) without touching anything.
    """
    src = Path(src)
    try:
        manifest: dict[str, Any] = json.loads((src / MANIFEST).read_text())
    except FileNotFoundError:
        raise BackupError(f"{src} is not a molecule-box backup: no {MANIFEST} in it") from None
    except (OSError, ValueError) as exc:
        raise BackupError(f"{src / MANIFEST}: unreadable ({exc})") from None
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{src}: backup format {manifest.get('format')!r}, this molecule-box reads {FORMAT}")
    for name, meta in manifest.get("files", {}).items():
        path = src / name
        if not path.is_file():
            raise BackupError(f"{path} is listed in the manifest but missing: the backup is incomplete")
        if _sha256(path) != meta.get("sha256"):
            raise BackupError(f"{path} does not match its checksum in the manifest: the backup is damaged")
    if DB_FILE not in manifest.get("files", {}):
        raise BackupError(f"{src}: the manifest lists no {DB_FILE}")
    found = snapshot.inspect(src / DB_FILE)
    if found["integrity"] != "ok":
        raise BackupError(f"{src / DB_FILE} fails PRAGMA integrity_check ({found['integrity']})")
    migrations.check_version(found["schema_version"])  # a newer schema: ConfigError saying to upgrade first
    return manifest


@dataclasses.dataclass
class RestoreReport:
    manifest: dict[str, Any]
    restored: list[str]
    kept_aside: list[str]
    notes: list[str]


def restore(settings: Settings, src: Path, *, force: bool = False) -> RestoreReport:
    """Install backup ``src`` into ``settings.data_dir``; the box must be stopped."""
    data_dir = Path(settings.data_dir)
    src = Path(src)
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        lock = DataDirLock.acquire(data_dir)
    except DataDirBusy as exc:
        holder = f"pid {exc.pid}" if exc.pid else "another process"
        raise BackupError(f"a molecule-box ({holder}) is running on {data_dir}: stop it first "
                          "(systemctl stop molecule-box), then restore") from None
    match_owner(data_dir, lock.path)  # a lock file created here by root would keep the service's box out
    with lock:
        manifest = read_backup(src)
        store = settings.store_path
        key_path = data_dir / KEY_FILE
        has_key = KEY_FILE in manifest["files"]
        replace_key = has_key and key_path.exists() and key_path.read_bytes() != (src / KEY_FILE).read_bytes()
        old_store = [p for p in (store, Path(f"{store}-wal"), Path(f"{store}-shm")) if p.exists()]
        if not force:
            if store.exists():
                raise BackupError(f"{store} exists: pass --force to replace it (it is kept beside, renamed "
                                  "*.replaced-<time>)")
            if replace_key:
                raise BackupError(f"{key_path} exists and differs from the backup's key: pass --force to replace "
                                  "it (it is kept beside, renamed *.replaced-<time>)")
        stamp = time.strftime("%Y%m%dT%H%M%S")
        report = RestoreReport(manifest, [], [], [])
        staged = data_dir / f".{DB_FILE}.restore-{os.getpid()}"
        try:
            shutil.copyfile(src / DB_FILE, staged)
            os.chmod(staged, 0o600)
            _fsync_file(staged)
            if _sha256(staged) != manifest["files"][DB_FILE]["sha256"]:
                raise BackupError(f"the copy of {src / DB_FILE} in {data_dir} does not match its checksum")
            match_owner(data_dir, staged)
            # The old -wal/-shm must go with the old store: SQLite would replay that WAL into the restored file.
            for path in old_store:
                aside = path.with_name(f"{path.name}.replaced-{stamp}")
                os.replace(path, aside)
                report.kept_aside.append(str(aside))
            os.replace(staged, store)
            fsync_dir(data_dir)
            report.restored.append(str(store))
        finally:
            if staged.exists():
                staged.unlink()
        if has_key:
            if replace_key:
                aside = key_path.with_name(f"{KEY_FILE}.replaced-{stamp}")
                os.replace(key_path, aside)
                report.kept_aside.append(str(aside))
            if not key_path.exists():
                atomic_write(key_path, (src / KEY_FILE).read_bytes(), mode=0o600)
                match_owner(data_dir, key_path)
                report.restored.append(str(key_path))
        elif manifest.get("secrets_key") == "environment":
            report.notes.append("the backup's secrets were encrypted with SECRETS_ENCRYPTION_KEY from the "
                                "environment: give the box that same key")
        if settings.secrets_encryption_key is not None and has_key:
            report.notes.append("SECRETS_ENCRYPTION_KEY is set and wins over the restored secrets.key: "
                                "unset it unless it is the key of this backup")
        if manifest["schema_version"] < migrations.SCHEMA_VERSION:
            report.notes.append(f"the store has schema version {manifest['schema_version']}; the box migrates it "
                                f"to {migrations.SCHEMA_VERSION} on its next start")
    return report

