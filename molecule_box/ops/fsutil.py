"""Small file-system helpers for writes that must be all-or-nothing and owned by the right user."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, mode: int = 0o600, exclusive: bool = False) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename over it (``exclusive``: fail if it exists).

    A reader (or a crash) sees the old file or the new one, never half of one.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if exclusive:
            os.link(tmp, path)  # FileExistsError rather than replacing what someone else wrote meanwhile
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)


def match_owner(directory: Path, *paths: Path) -> None:
    """Give ``paths`` the owner of ``directory`` when running as root (no-op otherwise).

    Why: ``backup``, ``restore`` and ``doctor`` run as root against a data
    directory owned by the service user; a file they create there (a restored
    store, SQLite's ``-wal``/``-shm``) owned by root would stop the box opening it.
    """
    if os.geteuid() != 0 or not os.path.isdir(directory):
        return
    st = os.stat(directory)
    for path in paths:
        try:
            if os.lstat(path).st_uid != st.st_uid or os.lstat(path).st_gid != st.st_gid:
                os.chown(path, st.st_uid, st.st_gid, follow_symlinks=False)
        except FileNotFoundError:
            pass
