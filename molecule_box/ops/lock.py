"""One box per data directory: an exclusive ``flock`` on ``<data dir>/molecule-box.lock``.

Why: two boxes on one store would both run every workspace's actor and fight
over the heartbeats, and a restore underneath a running box would swap the
file it has open. The running box holds the lock for its whole life (taken in
:func:`molecule_box.box.open_box`); ``molecule-box restore`` takes the same
lock, so each refuses while the other runs. The kernel drops the lock when the
process dies, however it dies, so there is no stale-lock cleanup. The file
holds the holder's pid for the error messages only; it is never deleted
(deleting a lock file races with the next locker).
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from types import TracebackType

from ..errors import ConfigError

LOCK_FILE = "molecule-box.lock"


class DataDirBusy(ConfigError):
    """Another process holds the data directory's lock."""

    def __init__(self, data_dir: Path, pid: int | None) -> None:
        self.pid = pid
        holder = f"molecule-box (pid {pid})" if pid else "another molecule-box"
        super().__init__([f"{data_dir} is in use by {holder}: one box per data directory"])


def _read_pid(fd: int) -> int | None:
    try:
        raw = os.pread(fd, 32, 0).decode().strip()
        return int(raw) if raw else None
    except (OSError, ValueError):
        return None


class DataDirLock:
    """An acquired lock; release it with :meth:`release` or use it as a context manager."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, data_dir: Path) -> DataDirLock:
        """Take the lock without waiting; raise :class:`DataDirBusy` if a box (or a restore) holds it."""
        path = Path(data_dir) / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise ConfigError([f"{path}: cannot open the data directory's lock file ({exc.strerror}): make "
                               f"{Path(data_dir)} writable by this user (chown it), or set MOLECULE_BOX_DATA to a "
                               "directory that is"]) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            pid = _read_pid(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise DataDirBusy(Path(data_dir), pid) from None
            raise ConfigError([f"{path}: cannot lock it ({exc.strerror})"]) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the only descriptor drops the flock

    def __enter__(self) -> DataDirLock:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def holder(data_dir: Path) -> int | None:
    """The pid of the box holding ``data_dir`` (0 if held but the pid is unknown), or None when nobody does.

    Probes with a shared lock taken and dropped at once: a box starting in that
    instant would see the directory busy, so only diagnostics (``doctor``) use this.
    """
    path = Path(data_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return _read_pid(fd) or 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
