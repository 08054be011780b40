"""Retention: how long the store keeps what is finished, so no table grows without bound.

One pass deletes activity, recorded events and actor failures, revoked tokens, finished queue rows and settled
delegations older than their configured ages (``*_RETENTION_DAYS``), as one bulk op (it runs whole in the
writer's thread: its cost grows with the data). The first pass runs at start, then every RETENTION_EVERY.
Nothing still in use is touched: live tokens, queued or dispatched messages, pending delegations.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import sqlite_utils
import trio

from ..config import Settings
from . import activity as activity_rows
from .db import Store

log = logging.getLogger(__name__)

RETENTION_EVERY = 6 * 3600.0
DAY = 86400.0


def prune(settings: Settings, now: float) -> Callable[[sqlite_utils.Database], dict[str, int]]:
    """The op of one pass; returns how many rows it deleted per kind."""

    def before(days: float) -> float:
        return now - days * DAY

    def op(db: sqlite_utils.Database) -> dict[str, int]:
        def delete(sql: str, days: float) -> int:
            return int(db.execute(sql, [before(days)]).rowcount)

        events_days = settings.event_retention_days
        return {
            "activity": activity_rows.prune(before(settings.activity_retention_days))(db),
            "events": delete("DELETE FROM events WHERE created_at < ?", events_days),
            "actor failures": delete("DELETE FROM actor_failures WHERE created_at < ?", events_days),
            # A workspace's newest token row stays, revoked or not: it is the record that the workspace has
            # had a token at all (a bearer-less register must never be let in again after one).
            "revoked tokens": delete(
                """DELETE FROM tokens WHERE revoked_at IS NOT NULL AND revoked_at < ? AND EXISTS (
                   SELECT 1 FROM tokens newer WHERE newer.workspace_id = tokens.workspace_id
                   AND newer.created_at > tokens.created_at)""", settings.revoked_token_retention_days),
            "queue rows": delete(
                "DELETE FROM a2a_queue WHERE status IN ('completed', 'failed', 'dropped') "
                "AND coalesce(completed_at, enqueued_at) < ?", settings.queue_retention_days),
            "delegations": delete("DELETE FROM delegations WHERE status IN ('completed', 'failed') AND updated_at < ?",
                                  settings.delegation_retention_days),
        }

    return op


async def run(store: Store, settings: Settings) -> None:
    """The periodic pass, for the box's lifetime; a failed pass is logged and retried at the next one."""
    while True:
        try:
            pruned = await store.write(prune(settings, time.time()), bulk=True)
            done = ", ".join(f"{count} {kind}" for kind, count in pruned.items() if count)
            if done:
                log.info("retention deleted %s", done)
        except Exception:
            log.exception("retention pass failed")
        await trio.sleep(RETENTION_EVERY)
