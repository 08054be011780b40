"""Versioned schema migrations, tracked in ``PRAGMA user_version``.

Append only: a released migration is never edited. A store whose version is
newer than this code knows is refused, never opened (an older box must not
write into a newer schema).
"""

from __future__ import annotations

from .errors import SchemaTooNew

STATUSES = ("provisioning", "online", "offline", "degraded", "failed", "removed", "paused",
            "hibernating", "hibernated", "awaiting_agent")

MIGRATIONS: list[str] = [
    # 1: the box's first schema.
    f"""
    CREATE TABLE workspaces (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        role TEXT,
        tier INTEGER NOT NULL DEFAULT 3,
        status TEXT NOT NULL CHECK (status IN ({", ".join(repr(s) for s in STATUSES)})),
        runtime TEXT NOT NULL,
        backend TEXT NOT NULL,
        agent_card TEXT,
        url TEXT,
        url_from_backend INTEGER NOT NULL DEFAULT 0,
        parent_id TEXT REFERENCES workspaces(id),
        last_heartbeat_at REAL,
        last_error_rate REAL NOT NULL DEFAULT 0,
        last_sample_error TEXT,
        active_tasks INTEGER NOT NULL DEFAULT 0,
        uptime_seconds INTEGER NOT NULL DEFAULT 0,
        current_task TEXT,
        runtime_state TEXT,
        runtime_metadata TEXT,
        monthly_spend INTEGER NOT NULL DEFAULT 0,
        budget_limit INTEGER,
        max_concurrent_tasks INTEGER NOT NULL DEFAULT 1,
        workspace_dir TEXT,
        workspace_access TEXT NOT NULL DEFAULT 'none',
        config TEXT,
        backend_state TEXT,
        failure_reason TEXT,
        last_outbound_at REAL,
        x REAL,
        y REAL,
        collapsed INTEGER NOT NULL DEFAULT 0,
        status_changed_at REAL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX workspaces_parent ON workspaces(parent_id);
    CREATE INDEX workspaces_status ON workspaces(status);

    CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        workspace_id TEXT NOT NULL REFERENCES workspaces(id),
        digest BLOB NOT NULL UNIQUE,
        prefix TEXT NOT NULL,
        created_at REAL NOT NULL,
        last_used_at REAL,
        revoked_at REAL
    );
    CREATE INDEX tokens_live ON tokens(workspace_id) WHERE revoked_at IS NULL;

    CREATE TABLE secrets (
        workspace_id TEXT NOT NULL DEFAULT '',
        key TEXT NOT NULL,
        value BLOB NOT NULL,
        encryption_version INTEGER NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (workspace_id, key)
    );

    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        event_type TEXT NOT NULL,
        workspace_id TEXT,
        payload TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX events_workspace ON events(workspace_id, id);

    CREATE TABLE activity (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        workspace_id TEXT NOT NULL,
        activity_type TEXT NOT NULL,
        source_id TEXT,
        target_id TEXT,
        method TEXT,
        summary TEXT,
        request_body TEXT,
        response_body TEXT,
        duration_ms INTEGER,
        status TEXT,
        error_detail TEXT,
        created_at REAL NOT NULL
    );
    CREATE INDEX activity_workspace ON activity(workspace_id, activity_type, id);

    CREATE TABLE actor_failures (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        workspace_id TEXT NOT NULL,
        error TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX actor_failures_workspace ON actor_failures(workspace_id, id);

    CREATE TABLE box_settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 2: the A2A proxy's durable queue (busy targets) and delegations.
    """
    CREATE TABLE a2a_queue (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        workspace_id TEXT NOT NULL,
        caller_id TEXT,
        message_id TEXT NOT NULL,
        method TEXT,
        body BLOB NOT NULL,
        headers TEXT NOT NULL DEFAULT '{}',
        status TEXT NOT NULL CHECK (status IN ('queued', 'dispatched', 'completed', 'failed', 'dropped')),
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        enqueued_at REAL NOT NULL,
        dispatched_at REAL,
        completed_at REAL
    );
    CREATE UNIQUE INDEX a2a_queue_active ON a2a_queue(workspace_id, message_id)
        WHERE status IN ('queued', 'dispatched');
    CREATE INDEX a2a_queue_pending ON a2a_queue(workspace_id, status, id);

    CREATE TABLE delegations (
        id TEXT PRIMARY KEY,
        source_id TEXT NOT NULL,
        target_id TEXT NOT NULL,
        task TEXT NOT NULL,
        idempotency_key TEXT,
        status TEXT NOT NULL,
        result TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE UNIQUE INDEX delegations_key ON delegations(source_id, target_id, idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    """,
    # 3: authenticated traffic from a workspace's agent counts as proof of life (transitions.seen).
    """
    ALTER TABLE workspaces ADD COLUMN last_seen_at REAL;
    """,
    # 4: the queue row a delegation enqueued names it: only that row settles the delegation (a caller's own
    # message reusing a broadcast delegation id must not). No foreign key: deleting delegations (retention, an
    # idempotent retry) would scan the queue for each one, and settlement looks the delegation up anyway.
    """
    ALTER TABLE a2a_queue ADD COLUMN delegation_id TEXT;
    """,
    # 5: a bearer-less register (the SDK's bootstrap) only where the operator opened one at create; the row
    # goes with the workspace's first token, so rotation or revocation never reopens it (tokens.insert).
    """
    CREATE TABLE register_bootstrap (
        workspace_id TEXT PRIMARY KEY REFERENCES workspaces(id),
        expires_at REAL NOT NULL
    );
    """,
    # 6: the poll inbox's delivery state (store/inbox.py). activity.inbox marks a message the box put in a poll-mode
    # agent's inbox: 'open', then 'replied' once the agent answered it, or 'expired' when it was never fetched;
    # inbox_cursors holds, per workspace, the highest row handed to the agent and the highest row it confirmed
    # with since_id, where a poll without since_id resumes. The poll messages an older box stored (status
    # queued, no duration: a proxied call always has one) become inbox messages.
    """
    ALTER TABLE activity ADD COLUMN inbox TEXT CHECK (inbox IN ('open', 'replied', 'expired'));
    UPDATE activity SET inbox = 'open'
        WHERE activity_type = 'a2a_receive' AND status = 'queued' AND duration_ms IS NULL
            AND (source_id IS NULL OR source_id != workspace_id);
    CREATE TABLE inbox_cursors (
        workspace_id TEXT PRIMARY KEY,
        fetched_through INTEGER NOT NULL DEFAULT 0,
        taken_through INTEGER NOT NULL DEFAULT 0
    );
    """,
    # 7: agent plugins (store/plugins.py). plugin_installs records what was installed into a workspace (remote
    # agents fetch it themselves, so the record is all the box keeps of it); plugin_allowlist holds an org's
    # allowed plugins, keyed by the org's root workspace (workspace_id), empty meaning all are allowed.
    """
    CREATE TABLE plugin_installs (
        workspace_id TEXT NOT NULL REFERENCES workspaces(id),
        name TEXT NOT NULL,
        source TEXT NOT NULL,
        installed_at REAL NOT NULL,
        PRIMARY KEY (workspace_id, name)
    );
    CREATE TABLE plugin_allowlist (
        workspace_id TEXT NOT NULL REFERENCES workspaces(id),
        plugin_name TEXT NOT NULL,
        enabled_by TEXT NOT NULL,
        enabled_at REAL NOT NULL,
        PRIMARY KEY (workspace_id, plugin_name)
    );
    """,
    # 8: what a workspace keeps on the box for itself: its JSON config (GET/PATCH /config, shallow merge) and
    # its key/value memory, each entry versioned (optimistic if_match_version) and optionally expiring.
    """
    CREATE TABLE workspace_config (
        workspace_id TEXT PRIMARY KEY,
        data TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE workspace_memory (
        workspace_id TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        version INTEGER NOT NULL,
        expires_at REAL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (workspace_id, key)
    );
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)


def check_version(found: int) -> None:
    if found > SCHEMA_VERSION:
        raise SchemaTooNew(found, SCHEMA_VERSION)
