"""The PostgreSQL store's schema: versioned migrations (`trm_sre_schema`) and `migrate`, which applies them once.

Applied in one transaction under a transaction advisory lock, so replicas
starting together apply each version once; a database newer than this
build is refused. `PostgresStore.open` calls `migrate` before it opens its pool.
"""

from __future__ import annotations

import time

import psycopg

from controller.engine.store.schema import StoreError

# Schema versions, applied in order; a version is never edited once released, only a new one appended.
# Version 1 is the SQLite schema (`controller.engine.store.schema`) with PostgreSQL types, plus the
# alerts' lease columns.
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
CREATE TABLE incidents (
    incident_key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    alertname TEXT NOT NULL,
    starts_at TEXT NOT NULL,
    first_seen DOUBLE PRECISION NOT NULL,
    last_seen DOUBLE PRECISION NOT NULL,
    state TEXT NOT NULL,
    resolved_at DOUBLE PRECISION,
    duplicates INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX incidents_by_last_seen ON incidents(last_seen);
CREATE TABLE alerts (
    id BIGSERIAL PRIMARY KEY,
    incident_key TEXT NOT NULL REFERENCES incidents(incident_key),
    fingerprint TEXT NOT NULL,
    status TEXT NOT NULL,
    source TEXT NOT NULL,
    payload TEXT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    decided INTEGER NOT NULL DEFAULT 0,
    claimed_by TEXT,
    lease_until DOUBLE PRECISION
);
CREATE INDEX alerts_undecided ON alerts(id) WHERE decided = 0;
CREATE INDEX alerts_by_incident ON alerts(incident_key);
CREATE TABLE decisions (
    id TEXT PRIMARY KEY,
    incident_key TEXT NOT NULL UNIQUE REFERENCES incidents(incident_key),
    policy TEXT NOT NULL,
    policy_generation BIGINT NOT NULL DEFAULT 0,
    outcome TEXT NOT NULL,
    function TEXT,
    target TEXT,
    parameters TEXT NOT NULL,
    stage TEXT,
    confidence DOUBLE PRECISION,
    trace TEXT NOT NULL,
    body TEXT NOT NULL,
    mode TEXT NOT NULL,
    on_resolved TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    budgeted INTEGER NOT NULL DEFAULT 0,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    result TEXT
);
CREATE INDEX decisions_budget ON decisions(policy, created_at) WHERE budgeted = 1;
CREATE TABLE outbox (
    event_id TEXT PRIMARY KEY,
    decision_id TEXT NOT NULL REFERENCES decisions(id),
    type TEXT NOT NULL,
    sink TEXT,
    attributes TEXT NOT NULL,
    data TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at DOUBLE PRECISION NOT NULL,
    last_error TEXT NOT NULL DEFAULT '',
    last_status INTEGER,
    created_at DOUBLE PRECISION NOT NULL,
    delivered_at DOUBLE PRECISION
);
CREATE INDEX outbox_due ON outbox(next_attempt_at) WHERE state = 'pending';
CREATE INDEX outbox_by_decision ON outbox(decision_id);
CREATE TABLE approvals (
    id TEXT PRIMARY KEY,
    decision_id TEXT NOT NULL UNIQUE REFERENCES decisions(id),
    incident_key TEXT NOT NULL,
    policy TEXT NOT NULL,
    on_resolved TEXT NOT NULL,
    cooldown_seconds INTEGER NOT NULL,
    sink TEXT,
    state TEXT NOT NULL,
    requested_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    resolved_at DOUBLE PRECISION,
    actor TEXT
);
CREATE INDEX approvals_pending ON approvals(expires_at) WHERE state = 'pending';
CREATE INDEX approvals_by_incident ON approvals(incident_key);
CREATE TABLE cooldowns (
    target TEXT PRIMARY KEY,
    until DOUBLE PRECISION NOT NULL,
    decision_id TEXT NOT NULL,
    policy TEXT NOT NULL
);
CREATE TABLE responses (
    id BIGSERIAL PRIMARY KEY,
    decision_id TEXT NOT NULL REFERENCES decisions(id),
    success INTEGER NOT NULL,
    data TEXT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX responses_by_decision ON responses(decision_id);
""",
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]
# Advisory lock keys (one 64-bit space per database): migrations, then hashed names for the rest.
_MIGRATION_LOCK = 0x7472_6D73_7265_0001  # "trmsre" 1


def migrate(url: str, connect_timeout_s: float = 10.0) -> int:
    """Apply the migrations the database lacks, once, under an advisory lock; the schema version after."""
    with (
        psycopg.connect(url, autocommit=True, connect_timeout=max(int(connect_timeout_s), 1)) as conn,
        conn.transaction(),
    ):
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS trm_sre_schema (version INTEGER PRIMARY KEY,"
            " applied_at DOUBLE PRECISION NOT NULL)"
        )
        applied = {int(r[0]) for r in conn.execute("SELECT version FROM trm_sre_schema").fetchall()}
        newest_known = MIGRATIONS[-1][0]
        if applied and max(applied) > newest_known:
            raise StoreError(
                f"the database's schema is version {max(applied)}, newer than this build's {newest_known}:"
                " run a newer trm-sre"
            )
        for version, ddl in MIGRATIONS:
            if version not in applied:
                conn.execute(ddl)  # several statements: allowed without parameters
                conn.execute("INSERT INTO trm_sre_schema (version, applied_at) VALUES (%s, %s)", (version, time.time()))
                applied.add(version)
        return max(applied)
