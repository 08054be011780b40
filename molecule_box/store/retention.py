"""Retention: how long the store keeps what is finished, so no table grows without bound.

One pass deletes activity, recorded events and actor failures, revoked tokens, finished queue rows and settled
delegations older than their configured ages (``*_RETENTION_DAYS``). It is a series of bulk ops (each runs whole
in the writer's thread) of at most BATCH rows per table, so the first pass after an upgrade, with months of
events behind it, does not hold every heartbeat's commit behind one long transaction. The first pass runs at
start, then every RETENTION_EVERY. Nothing still in use is touched: live tokens, queued or dispatched messages,
pending delegations.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import sqlite_utils
import trio

from . import activity as activity_rows
from .db import Store

if TYPE_CHECKING:  # the ages only: the store never loads the settings module
    from ..config import Settings

log = logging.getLogger(__name__)

RETENTION_EVERY = 6 * 3600.0
#: Most rows one op deletes from one table.
BATCH = 5000
DAY = 86400.0

#: (kind, table, which rows are finished and how old they are, the setting giving their age in days).
RULES = (
    ("events", "events", "created_at < ?", "event_retention_days"),
    ("actor failures", "actor_failures", "created_at < ?", "event_retention_days"),
    # Nothing depends on an old revoked row: the bootstrap's door is closed by its own row (tokens.insert).
    ("revoked tokens", "tokens", "revoked_at IS NOT NULL AND revoked_at < ?", "revoked_token_retention_days"),
    ("queue rows", "a2a_queue", "status IN ('completed', 'failed', 'dropped') AND coalesce(completed_at, enqueued_at)"
     " < ?", "queue_retention_days"),
    ("delegations", "delegations", "status IN ('completed', 'failed') AND updated_at < ?",
     "delegation_retention_days"),
)


def prune(settings: Settings, now: float, *, batch: int = BATCH) -> Callable[[sqlite_utils.Database], dict[str, int]]:
    """One op of a pass: at most ``batch`` rows per table (activity's are cut at once, by its watermark);
    returns how many rows it deleted per kind."""

    def op(db: sqlite_utils.Database) -> dict[str, int]:
        deleted = {"activity": activity_rows.prune(now - settings.activity_retention_days * DAY)(db)}
        for kind, table, where, setting in RULES:
            cutoff = now - getattr(settings, setting) * DAY
            deleted[kind] = int(db.execute(
                f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} WHERE {where} LIMIT ?)",
                [cutoff, batch]).rowcount)
        return deleted

    return op


async def prune_all(store: Store, settings: Settings) -> dict[str, int]:
    """One pass: ops of at most BATCH rows per table until none is left over; how many rows it deleted per kind."""
    now = time.time()
    total: dict[str, int] = {}
    while True:
        deleted = await store.write(prune(settings, now), bulk=True)
        for kind, count in deleted.items():
            total[kind] = total.get(kind, 0) + count
        if max(deleted.values()) < BATCH:
            return total


async def run(store: Store, settings: Settings) -> None:
    """The periodic pass, for the box's lifetime; a failed pass is logged and retried at the next one."""
    while True:
        try:
            done = ", ".join(f"{count} {kind}" for kind, count in (await prune_all(store, settings)).items() if count)
            if done:
                log.info("retention deleted %s", done)
        except Exception:
            log.exception("retention pass failed")
        await trio.sleep(RETENTION_EVERY)
