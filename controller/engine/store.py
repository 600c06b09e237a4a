"""Durable state: alerts, incidents, decisions, the outbox, approvals and cooldowns, in one SQLite file.

Why SQLite: the controller's promises are about what happens across
Alertmanager re-sends, retries and crashes (one decision per incident, one
trigger per decision, a trigger accepted is a trigger delivered). Those
promises need state that survives the process, and one file in WAL mode
gives that with no extra service to run.

Durability is chosen per transaction. Recording alerts (the 2xx contract)
and a human's approval commit with `synchronous=FULL`: fsynced before we
answer. Everything the engine can redo commits with `synchronous=NORMAL`
(decisions with their outbox entries, delivery results, expiries): in WAL
mode that survives a process crash, and after a power loss the lost tail is
redone to the same result (a decision re-made under the same deterministic
id emits the same CloudEvent ids; a lost "delivered" mark re-sends the same
event, which consumers de-duplicate). So the only fsync an alert costs is
the one its 2xx needs.

One connection, guarded by a lock: every call runs in a worker thread
(`asyncio.to_thread`) and holds the lock for one short transaction. Writers
start with `BEGIN IMMEDIATE` so a read-then-write (the cooldown check, the
storm-breaker count) cannot interleave with another writer.

Every SQLite failure (disk full, read-only file, locked by another process,
closed store) surfaces as `StoreError`; nothing half-written stays behind
because each public operation is one transaction.

Schema (version 1), times are UNIX seconds (REAL):

- `incidents`: one row per incident `(fingerprint, startsAt)`.
  `incident_key` PK, `fingerprint`, `alertname`, `starts_at` (RFC 3339),
  `first_seen`, `last_seen`, `state` (open = recorded, not yet handled |
  decided | unmatched = no policy matched: re-evaluated when Alertmanager
  re-sends it), `resolved_at`, `duplicates` (re-sends seen).
- `alerts`: what arrived, once per incident and status (re-sends only bump
  `incidents.duplicates`; a re-send of an unmatched incident is recorded
  again, to be re-evaluated). `id`, `incident_key`, `fingerprint`, `status`
  (firing|resolved), `source`, `payload` (the AlertEvent as JSON),
  `received_at`, `decided` (0 until a worker handled the firing alert: the
  crash-recovery work list).
- `decisions`: one per incident (UNIQUE `incident_key`), so an incident is
  never decided twice, not even under two policies. `id` PK (deterministic,
  from incident and policy), `policy`, `policy_generation`, `outcome`
  (trigger|escalate: what the chain decided), `function`, `target`,
  `parameters`, `stage`, `confidence`, `trace` (JSON), `body` (the whole
  Decision as JSON), `mode` (active|dry-run|approval), `on_resolved`,
  `state` (what the policy's actions made of it: triggered | escalated |
  cooldown | dry_run | approval_pending | approved | rejected |
  approval_expired | approval_cancelled | cancelled_resolved), `reason`,
  `budgeted` (1 = counts toward the storm breaker's window), `created_at`,
  `updated_at`, `result` (last lambda response: success|error).
- `outbox`: every CloudEvent to send. `event_id` PK (the deterministic
  CloudEvent id, so a decision re-committed after a crash cannot enqueue a
  second event), `decision_id`, `type`, `sink` (the policy's sink; NULL = the
  default sink at send time), `attributes` and `data` (JSON; K_CE_OVERRIDES
  are applied at send time), `state` (pending|delivered|dead|cancelled),
  `attempts`, `next_attempt_at`, `last_error`, `last_status`, `created_at`,
  `delivered_at`.
- `approvals`: `id` PK (random token), `decision_id` UNIQUE, `incident_key`,
  `policy`, `on_resolved`, `cooldown_seconds` (applied when approved), `sink`
  (the policy's sink for the trigger), `state`
  (pending|approved|rejected|expired|cancelled), `requested_at`, `expires_at`,
  `resolved_at`, `actor`.
- `cooldowns`: `target` PK (function:namespace/name), `until`,
  `decision_id`, `policy`.
- `responses`: lambda responses per decision: `id`, `decision_id`,
  `success`, `data` (JSON), `received_at`.
- `meta`: `schema_version`.

The storm breaker needs no table of its own: it counts `budgeted` decisions
of the policy within the window (indexed).

Retention: `sweep_finished_incidents` and `sweep_expired_cooldowns` delete
what is finished and older than a cutoff, in bounded chunks (the pipeline's
retention loop calls them; see the former for what may never be deleted).
The index on `incidents.last_seen` (added without a schema version change:
`CREATE INDEX IF NOT EXISTS` runs on every open) lets a sweep read only the
old incidents.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from controller.schemas.alerts import AlertEvent
from controller.schemas.decision import LAMBDA_TRIGGER, Decision

SCHEMA_VERSION = 1
DB_FILENAME = "trm-sre.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS incidents (
    incident_key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    alertname TEXT NOT NULL,
    starts_at TEXT NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    state TEXT NOT NULL,
    resolved_at REAL,
    duplicates INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS incidents_by_last_seen ON incidents(last_seen);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_key TEXT NOT NULL REFERENCES incidents(incident_key),
    fingerprint TEXT NOT NULL,
    status TEXT NOT NULL,
    source TEXT NOT NULL,
    payload TEXT NOT NULL,
    received_at REAL NOT NULL,
    decided INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS alerts_undecided ON alerts(id) WHERE decided = 0;
CREATE INDEX IF NOT EXISTS alerts_by_incident ON alerts(incident_key);
CREATE TABLE IF NOT EXISTS decisions (
    id TEXT PRIMARY KEY,
    incident_key TEXT NOT NULL UNIQUE REFERENCES incidents(incident_key),
    policy TEXT NOT NULL,
    policy_generation INTEGER NOT NULL DEFAULT 0,
    outcome TEXT NOT NULL,
    function TEXT,
    target TEXT,
    parameters TEXT NOT NULL,
    stage TEXT,
    confidence REAL,
    trace TEXT NOT NULL,
    body TEXT NOT NULL,
    mode TEXT NOT NULL,
    on_resolved TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    budgeted INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    result TEXT
);
CREATE INDEX IF NOT EXISTS decisions_budget ON decisions(policy, created_at) WHERE budgeted = 1;
CREATE TABLE IF NOT EXISTS outbox (
    event_id TEXT PRIMARY KEY,
    decision_id TEXT NOT NULL REFERENCES decisions(id),
    type TEXT NOT NULL,
    sink TEXT,
    attributes TEXT NOT NULL,
    data TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT NOT NULL DEFAULT '',
    last_status INTEGER,
    created_at REAL NOT NULL,
    delivered_at REAL
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(next_attempt_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS outbox_by_decision ON outbox(decision_id);
CREATE TABLE IF NOT EXISTS approvals (
    id TEXT PRIMARY KEY,
    decision_id TEXT NOT NULL UNIQUE REFERENCES decisions(id),
    incident_key TEXT NOT NULL,
    policy TEXT NOT NULL,
    on_resolved TEXT NOT NULL,
    cooldown_seconds INTEGER NOT NULL,
    sink TEXT,
    state TEXT NOT NULL,
    requested_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    resolved_at REAL,
    actor TEXT
);
CREATE INDEX IF NOT EXISTS approvals_pending ON approvals(expires_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS approvals_by_incident ON approvals(incident_key);
CREATE TABLE IF NOT EXISTS cooldowns (
    target TEXT PRIMARY KEY,
    until REAL NOT NULL,
    decision_id TEXT NOT NULL,
    policy TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS responses (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    decision_id TEXT NOT NULL REFERENCES decisions(id),
    success INTEGER NOT NULL,
    data TEXT NOT NULL,
    received_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_by_decision ON responses(decision_id);
"""

#: The tables a retention sweep deletes from (the `table` label of the swept-rows counter).
SWEPT_TABLES = ("incidents", "alerts", "decisions", "outbox", "approvals", "responses", "cooldowns")
# States that never change again; a row in any other state (pending, or one added later) is never swept.
_FINISHED_OUTBOX = ("delivered", "dead", "cancelled")
_FINISHED_APPROVALS = ("approved", "rejected", "expired", "cancelled")
_FINISHED_INCIDENTS = ("decided", "unmatched")

# One chunk of finished incidents last active before the cutoff (?1), oldest first, at most ?2.
# An incident qualifies only if nothing about it is unfinished or recent; see `sweep_finished_incidents`.
_SWEEPABLE_INCIDENTS = f"""
SELECT i.incident_key, d.id AS decision_id
FROM incidents i LEFT JOIN decisions d ON d.incident_key = i.incident_key
WHERE i.last_seen < ?1
  AND i.state IN ({", ".join(f"'{s}'" for s in _FINISHED_INCIDENTS)})
  AND (d.id IS NULL OR d.updated_at < ?1)
  AND NOT EXISTS (
    SELECT 1 FROM alerts a WHERE a.incident_key = i.incident_key AND (a.decided = 0 OR a.received_at >= ?1))
  AND NOT EXISTS (
    SELECT 1 FROM outbox o WHERE o.decision_id = d.id
      AND (o.state NOT IN ({", ".join(f"'{s}'" for s in _FINISHED_OUTBOX)})
           OR MAX(o.created_at, o.next_attempt_at, COALESCE(o.delivered_at, 0)) >= ?1))
  AND NOT EXISTS (
    SELECT 1 FROM approvals p WHERE p.decision_id = d.id
      AND (p.state NOT IN ({", ".join(f"'{s}'" for s in _FINISHED_APPROVALS)})
           OR MAX(p.requested_at, COALESCE(p.resolved_at, 0)) >= ?1))
  AND NOT EXISTS (
    SELECT 1 FROM approvals p WHERE p.incident_key = i.incident_key
      AND (p.state NOT IN ({", ".join(f"'{s}'" for s in _FINISHED_APPROVALS)})
           OR MAX(p.requested_at, COALESCE(p.resolved_at, 0)) >= ?1))
  AND NOT EXISTS (SELECT 1 FROM responses r WHERE r.decision_id = d.id AND r.received_at >= ?1)
ORDER BY i.last_seen
LIMIT ?2
"""

IncidentState = Literal["open", "decided", "unmatched"]
OutboxState = Literal["pending", "delivered", "dead", "cancelled"]
ApprovalState = Literal["pending", "approved", "rejected", "expired", "cancelled"]


class StoreError(Exception):
    """The store could not read or write (disk full, read-only, locked, closed); nothing was changed."""


@dataclass(frozen=True)
class IncidentRow:
    incident_key: str
    fingerprint: str
    alertname: str
    starts_at: str
    first_seen: float
    last_seen: float
    state: IncidentState
    resolved_at: float | None
    duplicates: int


@dataclass(frozen=True)
class RecordedAlert:
    """What `record_alerts` made of one incoming alert event."""

    kind: Literal["new", "reevaluate", "duplicate", "resolved"]
    event: AlertEvent
    alert_id: int | None = None  # set when the firing alert must be decided ("new", "reevaluate")
    cancelled_approvals: int = 0
    cancelled_events: int = 0


@dataclass(frozen=True)
class PendingAlert:
    alert_id: int
    event: AlertEvent


@dataclass(frozen=True)
class DecisionRecord:
    """A decision as committed, with what the policy's actions made of it."""

    decision: Decision
    policy_generation: int
    mode: str
    on_resolved: str
    state: str
    reason: str
    budgeted: bool


@dataclass(frozen=True)
class DecisionRow(DecisionRecord):
    """A decision as stored: its record, when it was written and last changed, and its result (if any)."""

    created_at: float
    updated_at: float
    result: str | None


@dataclass(frozen=True)
class OutboxEntry:
    """One CloudEvent waiting for (or done with) delivery."""

    event_id: str
    decision_id: str
    type: str
    sink: str | None
    attributes: dict[str, Any]
    data: dict[str, Any]
    state: OutboxState = "pending"
    attempts: int = 0
    next_attempt_at: float = 0.0
    last_error: str = ""
    last_status: int | None = None
    created_at: float = 0.0
    delivered_at: float | None = None


@dataclass(frozen=True)
class ApprovalRow:
    id: str
    decision_id: str
    incident_key: str
    policy: str
    on_resolved: str
    cooldown_seconds: int
    sink: str | None
    state: ApprovalState
    requested_at: float
    expires_at: float
    resolved_at: float | None
    actor: str | None


def _incident(row: sqlite3.Row) -> IncidentRow:
    return IncidentRow(**dict(row))


def _approval(row: sqlite3.Row) -> ApprovalRow:
    return ApprovalRow(**dict(row))


def _outbox(row: sqlite3.Row) -> OutboxEntry:
    values = dict(row)
    values["attributes"] = json.loads(values["attributes"])
    values["data"] = json.loads(values["data"])
    return OutboxEntry(**values)


def _decision(row: sqlite3.Row) -> DecisionRow:
    return DecisionRow(
        decision=Decision.model_validate_json(row["body"]),
        policy_generation=row["policy_generation"],
        mode=row["mode"],
        on_resolved=row["on_resolved"],
        state=row["state"],
        reason=row["reason"],
        budgeted=bool(row["budgeted"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        result=row["result"],
    )


class StoreTx:
    """The operations available inside one transaction (see `Store.transaction`)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def _one(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Row | None:
        return self._conn.execute(sql, args).fetchone()

    def _all(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return self._conn.execute(sql, args).fetchall()

    def _run(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Execute a write; the number of rows it changed."""
        return self._conn.execute(sql, args).rowcount

    # incidents and alerts

    def incident(self, incident_key: str) -> IncidentRow | None:
        row = self._one("SELECT * FROM incidents WHERE incident_key = ?", (incident_key,))
        return _incident(row) if row else None

    def insert_incident(self, event: AlertEvent, now: float, state: IncidentState, resolved_at: float | None) -> None:
        self._conn.execute(
            "INSERT INTO incidents (incident_key, fingerprint, alertname, starts_at, first_seen, last_seen, state,"
            " resolved_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
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

    def count_resend(self, incident_key: str, now: float) -> None:
        self._run(
            "UPDATE incidents SET last_seen = ?, duplicates = duplicates + 1 WHERE incident_key = ?",
            (now, incident_key),
        )

    def mark_incident_resolved(self, incident_key: str, now: float) -> None:
        self._run(
            "UPDATE incidents SET resolved_at = ?, last_seen = ? WHERE incident_key = ?", (now, now, incident_key)
        )

    def set_incident_state(self, incident_key: str, state: IncidentState) -> None:
        self._conn.execute("UPDATE incidents SET state = ? WHERE incident_key = ?", (state, incident_key))

    def insert_alert(self, event: AlertEvent, now: float, decided: bool) -> int:
        cursor = self._conn.execute(
            "INSERT INTO alerts (incident_key, fingerprint, status, source, payload, received_at, decided)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                event.incident_key,
                event.fingerprint,
                event.alert.status,
                event.source,
                event.model_dump_json(),
                now,
                int(decided),
            ),
        )
        return int(cursor.lastrowid or 0)

    def firing_event(self, incident_key: str) -> AlertEvent | None:
        """The firing alert that opened the incident (what a late trigger carries as `alert`)."""
        row = self._one(
            "SELECT payload FROM alerts WHERE incident_key = ? AND status = 'firing' ORDER BY id LIMIT 1",
            (incident_key,),
        )
        return AlertEvent.model_validate_json(row["payload"]) if row else None

    def mark_alert_decided(self, alert_id: int) -> None:
        self._conn.execute("UPDATE alerts SET decided = 1 WHERE id = ?", (alert_id,))

    # decisions

    def decision_id_for_incident(self, incident_key: str) -> str | None:
        row = self._one("SELECT id FROM decisions WHERE incident_key = ?", (incident_key,))
        return row["id"] if row else None

    def decision(self, decision_id: str) -> DecisionRow | None:
        row = self._one("SELECT * FROM decisions WHERE id = ?", (decision_id,))
        return _decision(row) if row else None

    def insert_decision(self, record: DecisionRecord, now: float) -> None:
        d = record.decision
        self._conn.execute(
            "INSERT INTO decisions (id, incident_key, policy, policy_generation, outcome, function, target, parameters,"
            " stage, confidence, trace, body, mode, on_resolved, state, reason, budgeted, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        self._conn.execute(
            "UPDATE decisions SET state = ?, reason = ?, updated_at = ? WHERE id = ?", (state, reason, now, decision_id)
        )

    def budget_used(self, policy: str, since: float) -> int:
        row = self._one(
            "SELECT COUNT(*) AS n FROM decisions WHERE budgeted = 1 AND policy = ? AND created_at >= ?", (policy, since)
        )
        return int(row["n"]) if row else 0

    # cooldowns

    def cooldown_until(self, target: str) -> float | None:
        row = self._one("SELECT until FROM cooldowns WHERE target = ?", (target,))
        return float(row["until"]) if row else None

    def set_cooldown(self, target: str, until: float, decision_id: str, policy: str) -> None:
        self._conn.execute(
            "INSERT INTO cooldowns (target, until, decision_id, policy) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(target) DO UPDATE SET until = MAX(until, excluded.until),"
            " decision_id = excluded.decision_id, policy = excluded.policy",
            (target, until, decision_id, policy),
        )

    # outbox

    def insert_outbox(self, entry: OutboxEntry, now: float) -> bool:
        """Enqueue once: a second insert of the same event id is ignored (False)."""
        cursor = self._conn.execute(
            "INSERT OR IGNORE INTO outbox (event_id, decision_id, type, sink, attributes, data, state, attempts,"
            " next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?)",
            (
                entry.event_id,
                entry.decision_id,
                entry.type,
                entry.sink,
                json.dumps(entry.attributes, sort_keys=True),
                json.dumps(entry.data, sort_keys=True),
                now,
                now,
            ),
        )
        return cursor.rowcount == 1

    def cancel_pending_events(self, decision_id: str, types: Sequence[str], now: float) -> int:
        marks = ",".join("?" for _ in types)
        cursor = self._conn.execute(
            f"UPDATE outbox SET state = 'cancelled', last_error = 'cancelled: alert resolved', next_attempt_at = ?"
            f" WHERE decision_id = ? AND state = 'pending' AND type IN ({marks})",
            (now, decision_id, *types),
        )
        return cursor.rowcount

    # approvals

    def insert_approval(self, approval: ApprovalRow) -> None:
        self._conn.execute(
            "INSERT INTO approvals (id, decision_id, incident_key, policy, on_resolved, cooldown_seconds, sink, state,"
            " requested_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        row = self._one("SELECT * FROM approvals WHERE id = ?", (approval_id,))
        return _approval(row) if row else None

    def pending_approvals_for_incident(self, incident_key: str) -> list[ApprovalRow]:
        rows = self._conn.execute(
            "SELECT * FROM approvals WHERE incident_key = ? AND state = 'pending'", (incident_key,)
        ).fetchall()
        return [_approval(r) for r in rows]

    def expired_approvals(self, now: float) -> list[ApprovalRow]:
        rows = self._conn.execute(
            "SELECT * FROM approvals WHERE state = 'pending' AND expires_at <= ? ORDER BY expires_at", (now,)
        ).fetchall()
        return [_approval(r) for r in rows]

    def set_approval_state(self, approval_id: str, state: ApprovalState, now: float, actor: str | None) -> None:
        self._conn.execute(
            "UPDATE approvals SET state = ?, resolved_at = ?, actor = ? WHERE id = ?", (state, now, actor, approval_id)
        )


class Store:
    """The controller's SQLite database in `state_dir`."""

    def __init__(self, conn: sqlite3.Connection, state_dir: Path) -> None:
        self._conn = conn
        self._lock = threading.RLock()
        self.state_dir = state_dir
        self.is_open = True
        self._synchronous = "FULL"

    @classmethod
    def open(cls, state_dir: Path, busy_timeout_s: float = 5.0) -> Store:
        """Open (creating if needed) the database in `state_dir`.

        `busy_timeout_s` bounds how long a write waits for another process
        holding the write lock before the operation fails with StoreError
        (and the HTTP edge answers 503 instead of hanging Alertmanager).
        """
        state_dir = Path(state_dir)
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                state_dir / DB_FILENAME,
                timeout=busy_timeout_s,
                isolation_level=None,  # explicit BEGIN/COMMIT only
                check_same_thread=False,  # used from worker threads, always under the lock
            )
            conn.row_factory = sqlite3.Row
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"could not switch {state_dir / DB_FILENAME} to WAL mode (got {mode})")
            conn.execute("PRAGMA synchronous=FULL")  # the default; `transaction(durable=False)` relaxes it
            conn.execute("PRAGMA foreign_keys=ON")
            conn.executescript(_SCHEMA)
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the store in {state_dir}: {exc}") from exc
        if int(version) != SCHEMA_VERSION:
            conn.close()
            raise StoreError(f"store schema version {version} is not {SCHEMA_VERSION}; move {state_dir} aside")
        return cls(conn, state_dir)

    def close(self) -> None:
        """Checkpoint and close; idempotent."""
        with self._lock:
            if not self.is_open:
                return
            self.is_open = False
            # A checkpoint is an optimisation; the WAL is replayed on the next open anyway.
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()

    @contextmanager
    def transaction(self, durable: bool = True) -> Iterator[StoreTx]:
        """One write transaction under the lock; any SQLite error rolls back and raises StoreError.

        durable=True fsyncs on commit (what we acknowledge to others);
        durable=False survives a process crash but not a power loss (what the
        engine can redo to the same result); see the module docstring.
        """
        with self._lock:
            if not self.is_open:
                raise StoreError("the store is closed")
            try:
                mode = "FULL" if durable else "NORMAL"
                if mode != self._synchronous:
                    self._conn.execute(f"PRAGMA synchronous={mode}")
                    self._synchronous = mode
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot begin a transaction: {exc}") from exc
            try:
                yield StoreTx(self._conn)
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise StoreError(str(exc)) from exc
            except BaseException:
                self._rollback()
                raise

    @contextmanager
    def reading(self) -> Iterator[StoreTx]:
        """A consistent read (deferred transaction); never writes."""
        with self._lock:
            if not self.is_open:
                raise StoreError("the store is closed")
            try:
                self._conn.execute("BEGIN")
                try:
                    yield StoreTx(self._conn)
                finally:
                    self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise StoreError(str(exc)) from exc

    def _rollback(self) -> None:
        try:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the connection rolls back on its own when the failed statement aborted the transaction

    # ingest

    def record_alerts(self, events: Sequence[AlertEvent], now: float) -> list[RecordedAlert]:
        """Record a batch of alert events in one transaction (the 2xx contract).

        Firing: a new incident is recorded with its alert and must be decided;
        a re-send of a known incident is only counted, except an incident no
        policy matched, which is re-evaluated (a policy may exist by now).
        Resolved: the incident is marked resolved, the alert recorded against
        it, and where the deciding policy said `onResolved: cancelPending`,
        its pending approval and undelivered trigger are cancelled.
        """
        results: list[RecordedAlert] = []
        with self.transaction() as tx:
            for event in events:
                if event.alert.status == "firing":
                    results.append(self._record_firing(tx, event, now))
                else:
                    results.append(self._record_resolved(tx, event, now))
        return results

    @staticmethod
    def _record_firing(tx: StoreTx, event: AlertEvent, now: float) -> RecordedAlert:
        incident = tx.incident(event.incident_key)
        if incident is None:
            tx.insert_incident(event, now, "open", None)
            return RecordedAlert("new", event, alert_id=tx.insert_alert(event, now, decided=False))
        tx.count_resend(event.incident_key, now)
        if incident.state == "unmatched" and tx.decision_id_for_incident(event.incident_key) is None:
            tx.set_incident_state(event.incident_key, "open")
            return RecordedAlert("reevaluate", event, alert_id=tx.insert_alert(event, now, decided=False))
        return RecordedAlert("duplicate", event)

    @staticmethod
    def _record_resolved(tx: StoreTx, event: AlertEvent, now: float) -> RecordedAlert:
        incident = tx.incident(event.incident_key)
        if incident is None:
            # Resolved before we ever saw it fire (we were down, or send_resolved raced): keep the record.
            tx.insert_incident(event, now, "unmatched", now)
            tx.insert_alert(event, now, decided=True)
            return RecordedAlert("resolved", event)
        if incident.resolved_at is not None:
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
            # A trigger still in the outbox (sink down) is as stale as a pending approval.
            cancelled_events = tx.cancel_pending_events(decision.decision.id, (LAMBDA_TRIGGER,), now)
        return RecordedAlert(
            "resolved", event, cancelled_approvals=cancelled_approvals, cancelled_events=cancelled_events
        )

    def undecided_alerts(self) -> list[PendingAlert]:
        """Firing alerts recorded but never handled: the work a crash left behind, oldest first."""
        with self.reading() as tx:
            rows = tx._all("SELECT id, payload FROM alerts WHERE decided = 0 AND status = 'firing' ORDER BY id")
        return [PendingAlert(r["id"], AlertEvent.model_validate_json(r["payload"])) for r in rows]

    def mark_unmatched(self, alert_id: int, incident_key: str) -> None:
        with self.transaction(durable=False) as tx:
            tx.mark_alert_decided(alert_id)
            if tx.decision_id_for_incident(incident_key) is None:
                tx.set_incident_state(incident_key, "unmatched")

    # outbox

    def outbox_entry(self, event_id: str) -> OutboxEntry | None:
        with self.reading() as tx:
            row = tx._one("SELECT * FROM outbox WHERE event_id = ?", (event_id,))
        return _outbox(row) if row else None

    def due_outbox(self, now: float, limit: int = 500) -> list[OutboxEntry]:
        with self.reading() as tx:
            rows = tx._all(
                "SELECT * FROM outbox WHERE state = 'pending' AND next_attempt_at <= ?"
                " ORDER BY created_at, event_id LIMIT ?",
                (now, limit),
            )
        return [_outbox(r) for r in rows]

    def outbox_depth(self) -> int:
        with self.reading() as tx:
            row = tx._one("SELECT COUNT(*) AS n FROM outbox WHERE state = 'pending'")
        return int(row["n"]) if row else 0

    def mark_delivered(self, event_id: str, attempts: int, status: int | None, now: float) -> None:
        with self.transaction(durable=False) as tx:
            tx._run(
                "UPDATE outbox SET state = 'delivered', attempts = attempts + ?, last_status = ?, last_error = '',"
                " delivered_at = ? WHERE event_id = ?",
                (attempts, status, now, event_id),
            )

    def mark_attempt_failed(
        self, event_id: str, attempts: int, status: int | None, error: str, next_attempt_at: float
    ) -> None:
        with self.transaction(durable=False) as tx:
            tx._run(
                "UPDATE outbox SET attempts = attempts + ?, last_status = ?, last_error = ?, next_attempt_at = ?"
                " WHERE event_id = ? AND state = 'pending'",
                (attempts, status, error[:2000], next_attempt_at, event_id),
            )

    def mark_dead(self, event_id: str, attempts: int, status: int | None, error: str, now: float) -> bool:
        """Dead-letter a pending entry; False if it was no longer pending."""
        with self.transaction(durable=False) as tx:
            changed = tx._run(
                "UPDATE outbox SET state = 'dead', attempts = attempts + ?, last_status = ?, last_error = ?,"
                " next_attempt_at = ? WHERE event_id = ? AND state = 'pending'",
                (attempts, status, error[:2000], now, event_id),
            )
            return changed == 1

    # decisions, approvals, responses

    def decision(self, decision_id: str) -> DecisionRow | None:
        with self.reading() as tx:
            return tx.decision(decision_id)

    def pending_approvals(self) -> int:
        with self.reading() as tx:
            row = tx._one("SELECT COUNT(*) AS n FROM approvals WHERE state = 'pending'")
        return int(row["n"]) if row else 0

    def record_response(self, decision_id: str, success: bool, data: dict[str, Any], now: float) -> Decision | None:
        """Append a lambda response to its decision; None if there is no such decision."""
        with self.transaction(durable=False) as tx:
            row = tx.decision(decision_id)
            if row is None:
                return None
            tx._run(
                "INSERT INTO responses (decision_id, success, data, received_at) VALUES (?, ?, ?, ?)",
                (decision_id, int(success), json.dumps(data, sort_keys=True, default=str), now),
            )
            tx._run(
                "UPDATE decisions SET result = ?, updated_at = ? WHERE id = ?",
                ("success" if success else "error", now, decision_id),
            )
            return row.decision

    def decision_history(self, decision_id: str) -> dict[str, Any] | None:
        """Everything known about one decision, as plain rows (the pipeline renders it)."""
        with self.reading() as tx:
            row = tx._one("SELECT * FROM decisions WHERE id = ?", (decision_id,))
            if row is None:
                return None
            incident = tx._one("SELECT * FROM incidents WHERE incident_key = ?", (row["incident_key"],))
            alerts = tx._all(
                "SELECT id, status, source, received_at, payload FROM alerts WHERE incident_key = ? ORDER BY id",
                (row["incident_key"],),
            )
            outbox = tx._all("SELECT * FROM outbox WHERE decision_id = ? ORDER BY created_at, event_id", (decision_id,))
            approval = tx._one("SELECT * FROM approvals WHERE decision_id = ?", (decision_id,))
            responses = tx._all(
                "SELECT success, data, received_at FROM responses WHERE decision_id = ? ORDER BY id", (decision_id,)
            )
        return {
            "decision": dict(row),
            "incident": dict(incident) if incident else None,
            "alerts": [dict(a) for a in alerts],
            "outbox": [dict(o) for o in outbox],
            "approval": dict(approval) if approval else None,
            "responses": [dict(r) for r in responses],
        }

    # retention

    def sweep_finished_incidents(self, cutoff: float, limit: int) -> dict[str, int]:
        """Delete up to `limit` finished incidents last active before `cutoff`, and all that hangs off them.

        One short transaction (the caller loops until a chunk comes back
        smaller than `limit`); rows deleted per table, `incidents` first.

        What goes: an incident that is decided or unmatched, together with
        its alerts, its decision, the decision's outbox entries, approval and
        lambda responses, when every one of those is finished and the last
        activity on any of them is older than `cutoff`. Finished means: every
        alert handled (`decided = 1`), every outbox entry delivered,
        dead-lettered or cancelled, the approval (if any) approved, rejected,
        expired or cancelled. Last activity is the latest of the incident's
        `last_seen` (every re-send of the incident, firing or resolved, moves
        it: `count_resend`; so does the resolution), the decision's
        `updated_at` (approval answers, lambda responses, expiry), each outbox
        entry's creation, last attempt or delivery, each approval's request
        or answer, each alert's and response's arrival.

        What stays, whatever its age: an undecided alert (a crash's work
        list), a pending outbox entry (a trigger accepted is a trigger
        delivered), a pending approval (a human may still answer it), and any
        incident with one of those.

        The invariant this keeps, once per incident: the incident row and its
        decision are what turn a re-send into a duplicate instead of a new
        decision (`_record_firing` only counts a re-send of a known incident,
        and re-evaluates an unmatched one only while it has no decision).
        Deleting an incident therefore forgets that it was decided, and is
        safe only once Alertmanager has stopped sending it. Alertmanager
        re-sends a firing alert every `repeat_interval` (4 h by default) and
        each re-send refreshes `last_seen`, so an incident still firing stays
        recent and is never swept, as long as the retention is longer than
        the longest gap between two sends of one incident (the CLI accepts
        whole days only, at least one). An incident silent for longer than
        the retention (resolved, or no longer sent: a silence or inhibition
        longer than the retention, a repeat_interval longer than it) is
        forgotten, and should it be sent again it is a new incident, decided
        again. A resolved alert arriving for a swept incident is recorded as
        a resolved incident that was never seen firing (no decision).

        Also safe for the other readers of these tables: the storm breaker
        counts decisions within its window (at most a day, shorter than any
        allowed retention); approvals and outbox entries still in use are
        pending and therefore kept; cooldowns are swept separately, by their
        own expiry. `GET /decisions/{id}` and `trm-sre explain` answer "not
        found" for a swept decision, and a lambda response for it is refused
        as unknown.
        """
        with self.transaction(durable=False) as tx:  # a sweep lost to a power cut is redone by the next one
            rows = tx._all(_SWEEPABLE_INCIDENTS, (cutoff, limit))
            if not rows:
                return {}
            keys = [r["incident_key"] for r in rows]
            decisions = [r["decision_id"] for r in rows if r["decision_id"] is not None]
            counts: dict[str, int] = {}

            def delete(table: str, column: str, values: list[str]) -> None:
                if values:
                    marks = ",".join("?" for _ in values)
                    deleted = tx._run(f"DELETE FROM {table} WHERE {column} IN ({marks})", values)
                    counts[table] = counts.get(table, 0) + deleted

            # Children first: the foreign keys (no ON DELETE CASCADE) must hold at every statement.
            delete("responses", "decision_id", decisions)
            delete("outbox", "decision_id", decisions)
            delete("approvals", "decision_id", decisions)
            delete("approvals", "incident_key", keys)  # the same rows, unless an approval named another decision
            delete("alerts", "incident_key", keys)
            delete("decisions", "id", decisions)
            delete("incidents", "incident_key", keys)
        return {table: counts[table] for table in SWEPT_TABLES if counts.get(table)}

    def sweep_expired_cooldowns(self, cutoff: float, limit: int) -> int:
        """Delete up to `limit` cooldowns that ended before `cutoff`; how many (one short transaction).

        A cooldown that has ended holds nothing back any more (`set_cooldown`
        keeps the later end), so only its record is lost.
        """
        with self.transaction(durable=False) as tx:
            return tx._run(
                "DELETE FROM cooldowns WHERE target IN (SELECT target FROM cooldowns WHERE until < ? LIMIT ?)",
                (cutoff, limit),
            )
