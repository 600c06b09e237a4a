"""`PostgresStore`: the store on PostgreSQL, shared by N active replicas (`--store postgresql://…`).

The same interface as the SQLite `Store` (`controller.engine.store.base`),
the same tables and meanings (`controller.engine.store.schema`), plus what
several writers on one database need:

- Exactly once by construction: incidents are inserted with
  `INSERT … ON CONFLICT DO NOTHING` on the incident key, so whichever
  replicas receive an alert and its re-sends, one of them records it as new
  and the others count a re-send; decisions are unique per incident and a
  decision commit first locks its incident's row (`SELECT … FOR UPDATE`), so
  a second commit for it waits and then finds it decided; outbox entries are
  inserted once per CloudEvent id.
- Guards across replicas: reading a target's cooldown or a policy's
  storm-breaker count inside a write transaction first takes a transaction
  advisory lock on that target / policy, so the read, the plan and the write
  of two replicas deciding for the same target or policy happen one after the
  other (the second sees the first's cooldown and budget).
- Claims with leases: an undecided alert carries `claimed_by`/`lease_until`
  (set by the replica that recorded it); `undecided_alerts` claims those whose
  lease ran out (`FOR UPDATE SKIP LOCKED`), so the work of a killed replica
  moves to another after `lease_s`. `due_outbox` claims what it returns by
  pushing `next_attempt_at` a lease ahead, and a fresh outbox entry starts
  leased to the replica that committed it (its immediate delivery); a
  replica killed mid-delivery leaves the entry due again after the lease.
- Singletons: `singleton(name)` takes a session advisory lock on a
  dedicated connection (TCP keepalives bound how long a dead holder keeps it).
- Migrations: versioned (`trm_sre_schema`), applied in one transaction under
  a transaction advisory lock, so replicas starting together apply each
  version once; a database newer than this build is refused.

Durability: alert records and approval answers commit with PostgreSQL's
`synchronous_commit` (on by default); what the engine can redo commits with
`synchronous_commit = off`, as the SQLite store uses `synchronous=NORMAL`.
Every psycopg failure surfaces as `StoreError`.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from controller.engine.store.schema import (
    ApprovalRow,
    ApprovalState,
    DecisionRecord,
    DecisionRow,
    IncidentRow,
    IncidentState,
    OutboxEntry,
    PendingAlert,
    RecordedAlert,
    StoreError,
    approval_from_row,
    decision_from_row,
    incident_from_row,
    outbox_from_row,
)
from controller.engine.store.sweep import SWEPT_TABLES
from controller.schemas.alerts import AlertEvent
from controller.schemas.decision import LAMBDA_TRIGGER, Decision

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
# Kept small: one chunk's keys travel as one array parameter.
_CLAIM_BATCH = 1000
# TCP keepalives: a replica that vanished (node lost, network cut) releases its locks within about 30 s.
_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}


def replica_id() -> str:
    """A name for this process in claims (host, pid and a random suffix: a restarted pod is a new claimer)."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class PostgresTx:
    """The operations inside one PostgreSQL transaction; the same methods as `StoreTx`."""

    def __init__(self, conn: psycopg.Connection[dict[str, Any]], store: PostgresStore, writing: bool) -> None:
        self._conn = conn
        self._store = store
        self._writing = writing

    def _one(self, sql: str, args: Sequence[Any] | dict[str, Any] = ()) -> dict[str, Any] | None:
        return self._conn.execute(sql, args).fetchone()

    def _all(self, sql: str, args: Sequence[Any] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        return self._conn.execute(sql, args).fetchall()

    def _run(self, sql: str, args: Sequence[Any] | dict[str, Any] = ()) -> int:
        return self._conn.execute(sql, args).rowcount

    def _xact_lock(self, name: str) -> None:
        """Serialise this transaction with every other one that locks `name`, until it ends."""
        self._conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (name,))

    # incidents and alerts

    def incident(self, incident_key: str) -> IncidentRow | None:
        row = self._one("SELECT * FROM incidents WHERE incident_key = %s", (incident_key,))
        return incident_from_row(row) if row else None

    def _lock_incident(self, incident_key: str) -> IncidentRow | None:
        row = self._one("SELECT * FROM incidents WHERE incident_key = %s FOR UPDATE", (incident_key,))
        return incident_from_row(row) if row else None

    def insert_incident(self, event: AlertEvent, now: float, state: IncidentState, resolved_at: float | None) -> None:
        self._insert_incident(event, now, state, resolved_at, ignore=False)

    def _insert_incident(
        self, event: AlertEvent, now: float, state: IncidentState, resolved_at: float | None, ignore: bool
    ) -> bool:
        """Insert the incident; with `ignore`, False (and nothing written) when it exists already."""
        conflict = " ON CONFLICT (incident_key) DO NOTHING" if ignore else ""
        return (
            self._run(
                "INSERT INTO incidents (incident_key, fingerprint, alertname, starts_at, first_seen, last_seen, state,"
                " resolved_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)" + conflict,
                (
                    event.incident_key,
                    event.fingerprint,
                    event.alert.alertname,
                    event.alert.startsAt.isoformat(),
                    now,
                    now,
                    state,
                    resolved_at,
                ),
            )
            == 1
        )

    def count_resend(self, incident_key: str, now: float) -> None:
        self._run(
            "UPDATE incidents SET last_seen = %s, duplicates = duplicates + 1 WHERE incident_key = %s",
            (now, incident_key),
        )

    def mark_incident_resolved(self, incident_key: str, now: float) -> None:
        self._run(
            "UPDATE incidents SET resolved_at = %s, last_seen = %s WHERE incident_key = %s", (now, now, incident_key)
        )

    def set_incident_state(self, incident_key: str, state: IncidentState) -> None:
        self._run("UPDATE incidents SET state = %s WHERE incident_key = %s", (state, incident_key))

    def insert_alert(self, event: AlertEvent, now: float, decided: bool) -> int:
        """Record an alert; an undecided one is leased to this replica (it queues it for its workers)."""
        row = self._one(
            "INSERT INTO alerts (incident_key, fingerprint, status, source, payload, received_at, decided,"
            " claimed_by, lease_until) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (
                event.incident_key,
                event.fingerprint,
                event.alert.status,
                event.source,
                event.model_dump_json(),
                now,
                int(decided),
                None if decided else self._store.owner,
                None if decided else now + self._store.lease_s,
            ),
        )
        return int(row["id"]) if row else 0

    def firing_event(self, incident_key: str) -> AlertEvent | None:
        row = self._one(
            "SELECT payload FROM alerts WHERE incident_key = %s AND status = 'firing' ORDER BY id LIMIT 1",
            (incident_key,),
        )
        return AlertEvent.model_validate_json(row["payload"]) if row else None

    def mark_alert_decided(self, alert_id: int) -> None:
        self._run("UPDATE alerts SET decided = 1, claimed_by = NULL, lease_until = NULL WHERE id = %s", (alert_id,))

    # decisions

    def decision_id_for_incident(self, incident_key: str) -> str | None:
        """In a write transaction, first lock the incident: two commits for one incident run one after the other."""
        if self._writing:
            self._one("SELECT 1 FROM incidents WHERE incident_key = %s FOR UPDATE", (incident_key,))
        row = self._one("SELECT id FROM decisions WHERE incident_key = %s", (incident_key,))
        return row["id"] if row else None

    def decision(self, decision_id: str) -> DecisionRow | None:
        row = self._one("SELECT * FROM decisions WHERE id = %s", (decision_id,))
        return decision_from_row(row) if row else None

    def insert_decision(self, record: DecisionRecord, now: float) -> None:
        d = record.decision
        self._run(
            "INSERT INTO decisions (id, incident_key, policy, policy_generation, outcome, function, target, parameters,"
            " stage, confidence, trace, body, mode, on_resolved, state, reason, budgeted, created_at, updated_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                d.id,
                d.incident_key,
                d.policy,
                record.policy_generation,
                d.outcome,
                d.function,
                d.target if d.function else None,
                json.dumps(d.parameters, sort_keys=True),
                d.stage,
                d.confidence,
                json.dumps([t.model_dump(mode="json") for t in d.trace]),
                d.model_dump_json(),
                record.mode,
                record.on_resolved,
                record.state,
                record.reason,
                int(record.budgeted),
                now,
                now,
            ),
        )

    def set_decision_state(self, decision_id: str, state: str, reason: str, now: float) -> None:
        self._run(
            "UPDATE decisions SET state = %s, reason = %s, updated_at = %s WHERE id = %s",
            (state, reason, now, decision_id),
        )

    def budget_used(self, policy: str, since: float) -> int:
        """In a write transaction, first lock the policy's window: the count and the commit are one step."""
        if self._writing:
            self._xact_lock(f"trm-sre:budget:{policy}")
        row = self._one(
            "SELECT COUNT(*) AS n FROM decisions WHERE budgeted = 1 AND policy = %s AND created_at >= %s",
            (policy, since),
        )
        return int(row["n"]) if row else 0

    # cooldowns

    def cooldown_until(self, target: str) -> float | None:
        """In a write transaction, first lock the target: the check and the commit are one step."""
        if self._writing:
            self._xact_lock(f"trm-sre:cooldown:{target}")
        row = self._one("SELECT until FROM cooldowns WHERE target = %s", (target,))
        return float(row["until"]) if row else None

    def set_cooldown(self, target: str, until: float, decision_id: str, policy: str) -> None:
        self._run(
            "INSERT INTO cooldowns (target, until, decision_id, policy) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (target) DO UPDATE SET until = GREATEST(cooldowns.until, excluded.until),"
            " decision_id = excluded.decision_id, policy = excluded.policy",
            (target, until, decision_id, policy),
        )

    # outbox

    def insert_outbox(self, entry: OutboxEntry, now: float) -> bool:
        """Enqueue once, leased to this replica for its immediate delivery; False if the event id exists."""
        return (
            self._run(
                "INSERT INTO outbox (event_id, decision_id, type, sink, attributes, data, state, attempts,"
                " next_attempt_at, created_at) VALUES (%s, %s, %s, %s, %s, %s, 'pending', 0, %s, %s)"
                " ON CONFLICT (event_id) DO NOTHING",
                (
                    entry.event_id,
                    entry.decision_id,
                    entry.type,
                    entry.sink,
                    json.dumps(entry.attributes, sort_keys=True),
                    json.dumps(entry.data, sort_keys=True),
                    now + self._store.lease_s,
                    now,
                ),
            )
            == 1
        )

    def cancel_pending_events(self, decision_id: str, types: Sequence[str], now: float) -> int:
        return self._run(
            "UPDATE outbox SET state = 'cancelled', last_error = 'cancelled: alert resolved', next_attempt_at = %s"
            " WHERE decision_id = %s AND state = 'pending' AND type = ANY(%s)",
            (now, decision_id, list(types)),
        )

    # approvals

    def insert_approval(self, approval: ApprovalRow) -> None:
        self._run(
            "INSERT INTO approvals (id, decision_id, incident_key, policy, on_resolved, cooldown_seconds, sink, state,"
            " requested_at, expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                approval.id,
                approval.decision_id,
                approval.incident_key,
                approval.policy,
                approval.on_resolved,
                approval.cooldown_seconds,
                approval.sink,
                approval.state,
                approval.requested_at,
                approval.expires_at,
            ),
        )

    def approval(self, approval_id: str) -> ApprovalRow | None:
        # Locked in a write transaction: two replicas answering one approval answer it one after the other.
        lock = " FOR UPDATE" if self._writing else ""
        row = self._one("SELECT * FROM approvals WHERE id = %s" + lock, (approval_id,))
        return approval_from_row(row) if row else None

    def pending_approvals_for_incident(self, incident_key: str) -> list[ApprovalRow]:
        rows = self._all("SELECT * FROM approvals WHERE incident_key = %s AND state = 'pending'", (incident_key,))
        return [approval_from_row(r) for r in rows]

    def expired_approvals(self, now: float) -> list[ApprovalRow]:
        lock = " FOR UPDATE SKIP LOCKED" if self._writing else ""
        rows = self._all(
            "SELECT * FROM approvals WHERE state = 'pending' AND expires_at <= %s ORDER BY expires_at" + lock, (now,)
        )
        return [approval_from_row(r) for r in rows]

    def set_approval_state(self, approval_id: str, state: ApprovalState, now: float, actor: str | None) -> None:
        self._run(
            "UPDATE approvals SET state = %s, resolved_at = %s, actor = %s WHERE id = %s",
            (state, now, actor, approval_id),
        )


class _AdvisoryLock:
    """A session advisory lock held on its own connection (`PostgresStore.singleton`)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def held(self) -> bool:
        try:
            self._conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def release(self) -> None:
        try:
            self._conn.close()  # the session ends, and its advisory locks with it
        except psycopg.Error:
            pass


class PostgresStore:
    """The store on PostgreSQL; see the module docstring."""

    def __init__(
        self,
        url: str,
        pool: ConnectionPool[Any],
        state_dir: Path,
        lease_s: float,
        clock: Callable[[], float],
        owner: str,
    ) -> None:
        self.url = url
        self._pool = pool
        self.state_dir = state_dir
        self.lease_s = lease_s
        self.owner = owner
        self._clock = clock
        self.is_open = True
        self.shared = True

    @classmethod
    def open(
        cls,
        url: str,
        state_dir: Path,
        *,
        pool_size: int = 10,
        lease_s: float = 60.0,
        connect_timeout_s: float = 10.0,
        busy_timeout_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> PostgresStore:
        """Connect, apply the migrations this build knows (once, whoever starts first), open the pool.

        `busy_timeout_s` bounds how long an operation waits for a pooled connection (all busy, or the
        database unreachable) before it fails with StoreError, as SQLite's busy timeout does: the
        webhook answers 503 instead of hanging Alertmanager.
        """
        state_dir = Path(state_dir)
        try:
            state_dir.mkdir(parents=True, exist_ok=True)  # the file sink (no K_SINK) still writes there
            migrate(url, connect_timeout_s)
            pool: ConnectionPool[Any] = ConnectionPool(
                url,
                min_size=1,
                max_size=max(pool_size, 1),
                kwargs={
                    "autocommit": True,
                    "row_factory": dict_row,
                    "connect_timeout": max(int(connect_timeout_s), 1),
                    **_KEEPALIVES,
                },
                timeout=busy_timeout_s,
                check=ConnectionPool.check_connection,
                name="trm-sre-store",
                open=False,
            )
            pool.open(wait=True, timeout=connect_timeout_s)
        except (OSError, psycopg.Error) as exc:
            raise StoreError(f"cannot open the PostgreSQL store: {exc}") from exc
        return cls(url, pool, state_dir, lease_s, clock, replica_id())

    def close(self) -> None:
        if not self.is_open:
            return
        self.is_open = False
        self._pool.close()

    @contextmanager
    def transaction(self, durable: bool = True) -> Iterator[PostgresTx]:
        """One write transaction; any PostgreSQL error rolls back and raises StoreError."""
        if not self.is_open:
            raise StoreError("the store is closed")
        try:
            with self._pool.connection() as conn, conn.transaction():
                if not durable:
                    conn.execute("SET LOCAL synchronous_commit = off")
                yield PostgresTx(conn, self, writing=True)
        except psycopg.Error as exc:
            raise StoreError(str(exc)) from exc

    @contextmanager
    def reading(self) -> Iterator[PostgresTx]:
        """A consistent read (a read-only, repeatable-read transaction)."""
        if not self.is_open:
            raise StoreError("the store is closed")
        try:
            with self._pool.connection() as conn, conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                yield PostgresTx(conn, self, writing=False)
        except psycopg.Error as exc:
            raise StoreError(str(exc)) from exc

    def singleton(self, name: str) -> _AdvisoryLock | None:
        """Take the session advisory lock `name` on a connection of its own, or None if another holds it."""
        if not self.is_open:
            return None
        try:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5, **_KEEPALIVES)  # type: ignore[arg-type]
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect for the lock {name}: {exc}") from exc
        try:
            row = conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (f"trm-sre:{name}",)).fetchone()
        except psycopg.Error as exc:
            conn.close()
            raise StoreError(str(exc)) from exc
        if row is None or not row[0]:
            conn.close()
            return None
        return _AdvisoryLock(conn)

    # ingest

    def record_alerts(self, events: Sequence[AlertEvent], now: float) -> list[RecordedAlert]:
        """As `Store.record_alerts`, safe against other replicas recording the same alerts at the same time.

        Incidents are touched in key order (a stable sort: one incident's events keep their order), so two
        replicas recording overlapping batches take their row locks in the same order and never deadlock.
        """
        results: list[RecordedAlert | None] = [None] * len(events)
        order = sorted(range(len(events)), key=lambda i: events[i].incident_key)
        with self.transaction() as tx:
            for i in order:
                event = events[i]
                if event.alert.status == "firing":
                    results[i] = self._record_firing(tx, event, now)
                else:
                    results[i] = self._record_resolved(tx, event, now)
        return [r for r in results if r is not None]

    @staticmethod
    def _record_firing(tx: PostgresTx, event: AlertEvent, now: float) -> RecordedAlert:
        if tx._insert_incident(event, now, "open", None, ignore=True):
            return RecordedAlert("new", event, alert_id=tx.insert_alert(event, now, decided=False))
        incident = tx._lock_incident(event.incident_key)  # another replica's insert, committed by now
        tx.count_resend(event.incident_key, now)
        if (
            incident is not None
            and incident.state == "unmatched"
            and tx.decision_id_for_incident(event.incident_key) is None
        ):
            tx.set_incident_state(event.incident_key, "open")
            return RecordedAlert("reevaluate", event, alert_id=tx.insert_alert(event, now, decided=False))
        return RecordedAlert("duplicate", event)

    @staticmethod
    def _record_resolved(tx: PostgresTx, event: AlertEvent, now: float) -> RecordedAlert:
        if tx._insert_incident(event, now, "unmatched", now, ignore=True):
            # Resolved before we ever saw it fire (we were down, or send_resolved raced): keep the record.
            tx.insert_alert(event, now, decided=True)
            return RecordedAlert("resolved", event)
        incident = tx._lock_incident(event.incident_key)
        if incident is None or incident.resolved_at is not None:
            tx.count_resend(event.incident_key, now)
            return RecordedAlert("duplicate", event)
        tx.mark_incident_resolved(event.incident_key, now)
        tx.insert_alert(event, now, decided=True)
        cancelled_approvals = cancelled_events = 0
        decision_id = tx.decision_id_for_incident(event.incident_key)
        decision = tx.decision(decision_id) if decision_id else None
        if decision is not None and decision.on_resolved == "cancelPending":
            for approval in tx.pending_approvals_for_incident(event.incident_key):
                tx.set_approval_state(approval.id, "cancelled", now, "alert resolved")
                tx.set_decision_state(approval.decision_id, "approval_cancelled", "the alert resolved", now)
                cancelled_approvals += 1
            cancelled_events = tx.cancel_pending_events(decision.decision.id, (LAMBDA_TRIGGER,), now)
        return RecordedAlert(
            "resolved", event, cancelled_approvals=cancelled_approvals, cancelled_events=cancelled_events
        )

    def undecided_alerts(self) -> list[PendingAlert]:
        """Claim firing alerts nobody handled and no live replica holds (lease ended), oldest first."""
        now = self._clock()
        with self.transaction(durable=False) as tx:
            rows = tx._all(
                "UPDATE alerts SET claimed_by = %s, lease_until = %s WHERE id IN ("
                " SELECT id FROM alerts WHERE decided = 0 AND status = 'firing'"
                " AND (lease_until IS NULL OR lease_until <= %s) ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED)"
                " RETURNING id, payload",
                (self.owner, now + self.lease_s, now, _CLAIM_BATCH),
            )
        rows.sort(key=lambda r: r["id"])
        return [PendingAlert(int(r["id"]), AlertEvent.model_validate_json(r["payload"])) for r in rows]

    def mark_unmatched(self, alert_id: int, incident_key: str) -> None:
        with self.transaction(durable=False) as tx:
            if tx.decision_id_for_incident(incident_key) is None:
                tx.set_incident_state(incident_key, "unmatched")
            tx.mark_alert_decided(alert_id)

    # outbox

    def outbox_entry(self, event_id: str) -> OutboxEntry | None:
        with self.reading() as tx:
            row = tx._one(
                "SELECT event_id, decision_id, type, sink, attributes, data, state, attempts, next_attempt_at,"
                " last_error, last_status, created_at, delivered_at FROM outbox WHERE event_id = %s",
                (event_id,),
            )
        return outbox_from_row(row) if row else None

    def due_outbox(self, now: float, limit: int = 500) -> list[OutboxEntry]:
        """Claim up to `limit` due entries for this replica: they are not due for the others for a lease."""
        with self.transaction(durable=False) as tx:
            rows = tx._all(
                "UPDATE outbox SET next_attempt_at = %s WHERE event_id IN ("
                " SELECT event_id FROM outbox WHERE state = 'pending' AND next_attempt_at <= %s"
                " ORDER BY created_at, event_id LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING *",
                (now + self.lease_s, now, limit),
            )
        rows.sort(key=lambda r: (r["created_at"], r["event_id"]))
        return [outbox_from_row(r) for r in rows]

    def outbox_depth(self) -> int:
        with self.reading() as tx:
            row = tx._one("SELECT COUNT(*) AS n FROM outbox WHERE state = 'pending'")
        return int(row["n"]) if row else 0

    def mark_delivered(self, event_id: str, attempts: int, status: int | None, now: float) -> None:
        with self.transaction(durable=False) as tx:
            tx._run(
                "UPDATE outbox SET state = 'delivered', attempts = attempts + %s, last_status = %s, last_error = '',"
                " delivered_at = %s WHERE event_id = %s",
                (attempts, status, now, event_id),
            )

    def mark_attempt_failed(
        self, event_id: str, attempts: int, status: int | None, error: str, next_attempt_at: float
    ) -> None:
        with self.transaction(durable=False) as tx:
            tx._run(
                "UPDATE outbox SET attempts = attempts + %s, last_status = %s, last_error = %s, next_attempt_at = %s"
                " WHERE event_id = %s AND state = 'pending'",
                (attempts, status, error[:2000], next_attempt_at, event_id),
            )

    def mark_dead(self, event_id: str, attempts: int, status: int | None, error: str, now: float) -> bool:
        with self.transaction(durable=False) as tx:
            return (
                tx._run(
                    "UPDATE outbox SET state = 'dead', attempts = attempts + %s, last_status = %s, last_error = %s,"
                    " next_attempt_at = %s WHERE event_id = %s AND state = 'pending'",
                    (attempts, status, error[:2000], now, event_id),
                )
                == 1
            )

    # decisions, approvals, responses

    def decision(self, decision_id: str) -> DecisionRow | None:
        with self.reading() as tx:
            return tx.decision(decision_id)

    def pending_approvals(self) -> int:
        with self.reading() as tx:
            row = tx._one("SELECT COUNT(*) AS n FROM approvals WHERE state = 'pending'")
        return int(row["n"]) if row else 0

    def record_response(self, decision_id: str, success: bool, data: dict[str, Any], now: float) -> Decision | None:
        with self.transaction(durable=False) as tx:
            row = tx.decision(decision_id)
            if row is None:
                return None
            tx._run(
                "INSERT INTO responses (decision_id, success, data, received_at) VALUES (%s, %s, %s, %s)",
                (decision_id, int(success), json.dumps(data, sort_keys=True, default=str), now),
            )
            tx._run(
                "UPDATE decisions SET result = %s, updated_at = %s WHERE id = %s",
                ("success" if success else "error", now, decision_id),
            )
            return row.decision

    def decision_history(self, decision_id: str) -> dict[str, Any] | None:
        with self.reading() as tx:
            row = tx._one("SELECT * FROM decisions WHERE id = %s", (decision_id,))
            if row is None:
                return None
            incident = tx._one("SELECT * FROM incidents WHERE incident_key = %s", (row["incident_key"],))
            alerts = tx._all(
                "SELECT id, status, source, received_at, payload FROM alerts WHERE incident_key = %s ORDER BY id",
                (row["incident_key"],),
            )
            outbox = tx._all(
                "SELECT * FROM outbox WHERE decision_id = %s ORDER BY created_at, event_id", (decision_id,)
            )
            approval = tx._one("SELECT * FROM approvals WHERE decision_id = %s", (decision_id,))
            responses = tx._all(
                "SELECT success, data, received_at FROM responses WHERE decision_id = %s ORDER BY id", (decision_id,)
            )
        return {
            "decision": dict(row),
            "incident": dict(incident) if incident else None,
            "alerts": [dict(a) for a in alerts],
            "outbox": [dict(o) for o in outbox],
            "approval": dict(approval) if approval else None,
            "responses": [dict(r) for r in responses],
        }

    # retention (what may go and why: `controller.engine.store.sweep`; the same rules in PostgreSQL's SQL)

    def sweep_finished_incidents(self, cutoff: float, limit: int) -> dict[str, int]:
        with self.transaction(durable=False) as tx:
            rows = tx._all(_SWEEPABLE_INCIDENTS, {"cutoff": cutoff, "limit": limit})
            if not rows:
                return {}
            keys = [r["incident_key"] for r in rows]
            decisions = [r["decision_id"] for r in rows if r["decision_id"] is not None]
            counts: dict[str, int] = {}
            for table, column, values in (
                ("responses", "decision_id", decisions),
                ("outbox", "decision_id", decisions),
                ("approvals", "decision_id", decisions),
                ("approvals", "incident_key", keys),
                ("alerts", "incident_key", keys),
                ("decisions", "id", decisions),
                ("incidents", "incident_key", keys),
            ):
                if values:
                    deleted = tx._run(f"DELETE FROM {table} WHERE {column} = ANY(%s)", (values,))
                    counts[table] = counts.get(table, 0) + deleted
        return {table: counts[table] for table in SWEPT_TABLES if counts.get(table)}

    def sweep_expired_cooldowns(self, cutoff: float, limit: int) -> int:
        with self.transaction(durable=False) as tx:
            return tx._run(
                "DELETE FROM cooldowns WHERE target IN"
                " (SELECT target FROM cooldowns WHERE until < %s LIMIT %s FOR UPDATE SKIP LOCKED)",
                (cutoff, limit),
            )


# `controller.engine.store.sweep._SWEEPABLE_INCIDENTS` in PostgreSQL's dialect (GREATEST, named parameters);
# SKIP LOCKED: an incident another transaction is changing right now is not finished, whatever it looks like.
_SWEEPABLE_INCIDENTS = """
SELECT i.incident_key, d.id AS decision_id
FROM incidents i LEFT JOIN decisions d ON d.incident_key = i.incident_key
WHERE i.last_seen < %(cutoff)s
  AND i.state IN ('decided', 'unmatched')
  AND (d.id IS NULL OR d.updated_at < %(cutoff)s)
  AND NOT EXISTS (
    SELECT 1 FROM alerts a WHERE a.incident_key = i.incident_key AND (a.decided = 0 OR a.received_at >= %(cutoff)s))
  AND NOT EXISTS (
    SELECT 1 FROM outbox o WHERE o.decision_id = d.id
      AND (o.state NOT IN ('delivered', 'dead', 'cancelled')
           OR GREATEST(o.created_at, o.next_attempt_at, COALESCE(o.delivered_at, 0)) >= %(cutoff)s))
  AND NOT EXISTS (
    SELECT 1 FROM approvals p WHERE p.decision_id = d.id
      AND (p.state NOT IN ('approved', 'rejected', 'expired', 'cancelled')
           OR GREATEST(p.requested_at, COALESCE(p.resolved_at, 0)) >= %(cutoff)s))
  AND NOT EXISTS (
    SELECT 1 FROM approvals p WHERE p.incident_key = i.incident_key
      AND (p.state NOT IN ('approved', 'rejected', 'expired', 'cancelled')
           OR GREATEST(p.requested_at, COALESCE(p.resolved_at, 0)) >= %(cutoff)s))
  AND NOT EXISTS (SELECT 1 FROM responses r WHERE r.decision_id = d.id AND r.received_at >= %(cutoff)s)
ORDER BY i.last_seen
LIMIT %(limit)s
FOR UPDATE OF i SKIP LOCKED
"""


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
