"""Migration 6: the poll messages a box before it stored become inbox messages; nothing else does."""

from __future__ import annotations

from pathlib import Path

from molecule_box.store import Store, inbox
from molecule_box.store.migrations import SCHEMA_VERSION

from .test_store import older_store


def test_the_poll_messages_of_an_older_box_join_the_inbox(tmp_path: Path) -> None:
    path = tmp_path / "box.db"
    conn = older_store(path, 5)
    rows = [  # (source, status, duration): a poll message has no duration, a proxied call always has one
        ("peer", "queued", None),  # a poll message from a peer
        (None, "queued", None),  # one from the user
        ("peer", "queued", 12),  # a call queued for a busy push agent, logged by the proxy
        ("peer", "ok", 40),  # a delivered call
        ("w1", "queued", None),  # what the agent reported of itself
    ]
    for source, status, duration in rows:
        conn.execute("INSERT INTO activity (workspace_id, activity_type, source_id, status, duration_ms, created_at)"
                     " VALUES ('w1', 'a2a_receive', ?, ?, ?, 1.0)", [source, status, duration])
    conn.close()
    store = Store(path)
    try:
        assert store.schema_version == SCHEMA_VERSION
        marked = [r[0] for r in store.db.execute("SELECT inbox FROM activity ORDER BY id").fetchall()]
        assert marked == ["open", "open", None, None, None]
        assert inbox.cursor(store.db, "w1") == inbox.Cursor(0, 0)
        counts = inbox.counts(store.db, "w1", inbox.Cursor(0, 0), expire_before=0.0)
        assert counts == {"queued": 2, "fetched": 0, "replied": 0, "expired": 0}
    finally:
        store.close()
