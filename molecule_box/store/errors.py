"""What the store refuses, in the store's own words: facts about rows, never an HTTP status.

``molecule_box.api.errors`` (the one place errors become responses) decides the status, body and headers each
of these gets. They are :class:`~molecule_box.errors.MoleculeBoxError` so that an actor hands them back to the
caller that asked, as it does every error the box raises on purpose, instead of crashing on them.
"""

from __future__ import annotations

from ..errors import ConfigError, MoleculeBoxError


class StoreError(MoleculeBoxError):
    """Root of the store's errors."""


class StoreUnavailable(StoreError):
    """The SQLite write failed (disk full, I/O error, a commit past its deadline): nothing was acknowledged.
    ``detail`` is for the log only."""

    def __init__(self, detail: str = "") -> None:
        self.detail = detail
        super().__init__("platform datastore unavailable — retry shortly")


class QueueFull(StoreError):
    """A workspace's busy queue already holds ``queued`` messages, its limit: a new one is not stored."""

    def __init__(self, queued: int) -> None:
        self.queued = queued
        super().__init__(f"the workspace's queue is full ({queued} messages waiting); retry later")


class TooManyTokens(StoreError):
    """A workspace already has ``cap`` live tokens: no new one is stored."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        super().__init__(f"workspace already has {cap} live tokens; revoke one first")


class BootstrapClosed(StoreError):
    """A bearer-less register found the workspace's bootstrap closed (expired, claimed or never opened)."""

    def __init__(self) -> None:
        super().__init__("the workspace's register bootstrap is closed")


class VersionMismatch(StoreError):
    """A memory write's ``if_match_version`` named another version than the live one (0: no such key)."""

    def __init__(self, current: int) -> None:
        self.current = current
        super().__init__(f"version mismatch: the entry is at version {current}")


class SchemaTooNew(ConfigError):
    """The store file was written by a newer molecule-box; a start-up error like any bad setting."""

    def __init__(self, found: int, understood: int) -> None:
        self.found = found
        super().__init__([
            f"the store has schema version {found}, newer than this molecule-box understands ({understood}); "
            "upgrade molecule-box, or restore a backup taken by this version"
        ])
