"""Workspace bearer tokens: only digests are stored. The store never sees a plaintext: its callers hash
what was presented (``security.tokens``) and mint the token whose digest it keeps."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import sqlite_utils

from .errors import BootstrapClosed, TooManyTokens

MAX_LIVE_PER_WORKSPACE = 50
#: Live token rows the cache holds at most; past it, it starts over (every entry is re-read on its next use).
CACHE_MAX = 200_000


class TokenCache:
    """The live token rows presented recently, by digest: exact, because the box is the only writer.

    Every op that can end a token's life (each revocation, through :func:`_revoke`; a workspace saved as
    removed) calls :func:`invalidate` while it runs in the writer's transaction, which drops that workspace's
    entries and holds the workspace back from the cache until the batch has committed (:meth:`settle`, called by the
    writer after the COMMIT and before any submitter is woken). So once a revocation's submitter hears it is
    committed, no entry for the workspace is left, and the next lookup reads the committed row: a revoked
    token is refused on the very next call. A lookup between the op and its COMMIT reads the last commit,
    the same answer it got without the cache; an entry it may have added is dropped again by ``settle``.
    Tokens that match nothing are not cached (a minted token needs no invalidation)."""

    def __init__(self) -> None:
        self._rows: dict[bytes, dict[str, Any]] = {}
        self._by_workspace: dict[str, set[bytes]] = {}
        self._held: set[str] = set()  # workspaces with an invalidation not committed yet

    def get(self, digest: bytes) -> dict[str, Any] | None:
        return self._rows.get(digest)

    def put(self, digest: bytes, row: dict[str, Any]) -> None:
        workspace_id = row["workspace_id"]
        if workspace_id in self._held:
            return
        if len(self._rows) >= CACHE_MAX:
            self._rows.clear()
            self._by_workspace.clear()
        self._rows[digest] = row
        self._by_workspace.setdefault(workspace_id, set()).add(digest)

    def invalidate(self, workspace_ids: list[str]) -> None:
        self._held.update(workspace_ids)
        self._drop(workspace_ids)

    def settle(self) -> None:
        """The batch has committed (or failed): drop what a lookup added meanwhile and let them in again."""
        if self._held:
            held, self._held = self._held, set()
            self._drop(held)

    def _drop(self, workspace_ids: Iterable[str]) -> None:
        for workspace_id in workspace_ids:
            # A copy: on the writer's thread path (bulk ops) a lookup on the loop may add to the set meanwhile.
            for digest in list(self._by_workspace.pop(workspace_id, ())):
                self._rows.pop(digest, None)

    def __len__(self) -> int:
        return len(self._rows)


def invalidate(db: sqlite_utils.Database, workspace_ids: list[str]) -> None:
    """Inside a write op: the workspaces' tokens may have ended (see :class:`TokenCache`)."""
    cache = getattr(db, "token_cache", None)
    if isinstance(cache, TokenCache):
        cache.invalidate(workspace_ids)


def lookup_cached(db: sqlite_utils.Database, cache: TokenCache, digest: bytes) -> dict[str, Any] | None:
    """:func:`lookup` through the cache: the same answer, without the SELECT for a token seen before."""
    row = cache.get(digest)
    if row is None:
        row = lookup(db, digest)
        if row is not None:
            cache.put(digest, row)
    return row


def lookup(db: sqlite_utils.Database, digest: bytes) -> dict[str, Any] | None:
    """The live token row of a presented token's digest, joined to a non-removed workspace."""
    row = db.execute(
        """
        SELECT t.id, t.workspace_id, t.last_used_at FROM tokens t JOIN workspaces w ON w.id = t.workspace_id
        WHERE t.digest = ? AND t.revoked_at IS NULL AND w.status != 'removed'
        """,
        [digest],
    ).fetchone()
    return dict(row) if row else None


def is_live(db: sqlite_utils.Database, token_id: str) -> bool:
    """Whether a token row is unrevoked and its workspace not removed (the row ``lookup`` would find)."""
    return db.execute(
        """SELECT 1 FROM tokens t JOIN workspaces w ON w.id = t.workspace_id
           WHERE t.id = ? AND t.revoked_at IS NULL AND w.status != 'removed'""",
        [token_id],
    ).fetchone() is not None


def belonged_to(db: sqlite_utils.Database, digest: bytes, workspace_id: str) -> bool:
    """Whether a presented token's digest is, or was before its revocation, a token of ``workspace_id``."""
    return db.execute(
        "SELECT 1 FROM tokens WHERE digest = ? AND workspace_id = ?", [digest, workspace_id]
    ).fetchone() is not None


def live_count(db: sqlite_utils.Database, workspace_id: str) -> int:
    return int(db.execute(
        "SELECT count(*) FROM tokens WHERE workspace_id = ? AND revoked_at IS NULL", [workspace_id]
    ).fetchone()[0])


def bootstrap_open(db: sqlite_utils.Database, workspace_id: str, now: float) -> bool:
    """Whether a bearer-less register may claim the workspace: only where the operator opened the SDK's
    bootstrap at create, before it expires and before any token was minted. Knowing an id is not enough."""
    return db.execute(
        "SELECT 1 FROM register_bootstrap WHERE workspace_id = ? AND expires_at > ?", [workspace_id, now]
    ).fetchone() is not None


def open_bootstrap(workspace_id: str, expires_at: float) -> Callable[[sqlite_utils.Database], None]:
    def op(db: sqlite_utils.Database) -> None:
        db.execute("INSERT INTO register_bootstrap (workspace_id, expires_at) VALUES (?, ?)",
                   [workspace_id, expires_at])

    return op


def claim_bootstrap(workspace_id: str, now: float) -> Callable[[sqlite_utils.Database], None]:
    """The op that closes the bootstrap for good, in the transaction of the register it lets in; raising
    BootstrapClosed when it is closed already, so of two racing bearer-less registers only the first gets a
    token."""
    def op(db: sqlite_utils.Database) -> None:
        cursor = db.execute("DELETE FROM register_bootstrap WHERE workspace_id = ? AND expires_at > ?",
                            [workspace_id, now])
        if cursor.rowcount == 0:
            raise BootstrapClosed()

    return op


def list_live(db: sqlite_utils.Database, workspace_id: str, limit: int, offset: int) -> list[dict[str, Any]]:
    rows = db.execute(
        """SELECT id, prefix, created_at, last_used_at FROM tokens WHERE workspace_id = ? AND revoked_at IS NULL
           ORDER BY created_at DESC LIMIT ? OFFSET ?""",
        [workspace_id, limit, offset],
    ).fetchall()
    return [dict(row) for row in rows]


def insert(workspace_id: str, digest: bytes, prefix: str, *,
           cap: int = MAX_LIVE_PER_WORKSPACE) -> Callable[[sqlite_utils.Database], str]:
    """The op that stores a newly minted token's digest and display prefix (raising TooManyTokens past ``cap``
    live tokens); returns the token's id."""
    token_id = str(uuid.uuid4())

    def op(db: sqlite_utils.Database) -> str:
        if live_count(db, workspace_id) >= cap:
            raise TooManyTokens(cap)
        db.execute(
            "INSERT INTO tokens (id, workspace_id, digest, prefix, created_at) VALUES (?, ?, ?, ?, ?)",
            [token_id, workspace_id, digest, prefix, time.time()],
        )
        # A workspace that has had a token is never claimed without one again (rotation, revocation).
        db.execute("DELETE FROM register_bootstrap WHERE workspace_id = ?", [workspace_id])
        return token_id

    return op


def touch(token_id: str, when: float) -> Callable[[sqlite_utils.Database], None]:
    def op(db: sqlite_utils.Database) -> None:
        db.execute("UPDATE tokens SET last_used_at = ? WHERE id = ?", [when, token_id])

    return op


def _revoke(db: sqlite_utils.Database, workspace_id: str, where: str, params: list[Any]) -> int:
    """The one statement that ends tokens: it drops the workspace's cached rows in the same op, so no way of
    revoking can forget the cache (a cached token would otherwise outlive its revocation)."""
    invalidate(db, [workspace_id])
    cursor = db.execute(f"UPDATE tokens SET revoked_at = ? WHERE workspace_id = ? AND revoked_at IS NULL AND {where}",
                        [time.time(), workspace_id, *params])
    return cursor.rowcount


def revoke(workspace_id: str, token_id: str) -> Callable[[sqlite_utils.Database], bool]:
    def op(db: sqlite_utils.Database) -> bool:
        return _revoke(db, workspace_id, "id = ?", [token_id]) > 0

    return op


def revoke_others(workspace_id: str, keep: str) -> Callable[[sqlite_utils.Database], None]:
    """Revoke every live token of the workspace but ``keep`` (a moved workload's: the old one's die)."""
    def op(db: sqlite_utils.Database) -> None:
        _revoke(db, workspace_id, "id != ?", [keep])

    return op


def revoke_all(workspace_ids: list[str]) -> Callable[[sqlite_utils.Database], None]:
    def op(db: sqlite_utils.Database) -> None:
        for wid in workspace_ids:
            _revoke(db, wid, "1", [])

    return op
