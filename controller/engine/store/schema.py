"""The store's schema and vocabulary: the DDL, the rows it hands out, and StoreError.

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

The index on `incidents.last_seen` (added without a schema version change:
`CREATE INDEX IF NOT EXISTS` runs on every open) lets a retention sweep
read only the old incidents (`controller.engine.store.sweep`).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, replace
from typing import Any, Literal

from controller.schemas.alerts import AlertEvent
from controller.schemas.decision import Decision

SCHEMA_VERSION = 1
DB_FILENAME = "trm-sre.db"

# Run on every open: every statement is IF NOT EXISTS, so an existing store only gains what is missing.
DDL = """
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


def incident_from_row(row: sqlite3.Row) -> IncidentRow:
    return IncidentRow(**dict(row))


def approval_from_row(row: sqlite3.Row) -> ApprovalRow:
    return ApprovalRow(**dict(row))


def outbox_from_row(row: sqlite3.Row) -> OutboxEntry:
    values = dict(row)
    values["attributes"] = json.loads(values["attributes"])
    values["data"] = json.loads(values["data"])
    return OutboxEntry(**values)


def as_inserted(entry: OutboxEntry, now: float) -> OutboxEntry:
    """`entry` as reading it back would give it right after `insert_outbox(entry, now)`, without the read.

    Attributes and data go through the same sorted JSON as the stored copy, so the first send carries the
    same bytes as any replay of it.
    """
    return replace(
        entry,
        attributes=json.loads(json.dumps(entry.attributes, sort_keys=True)),
        data=json.loads(json.dumps(entry.data, sort_keys=True)),
        state="pending",
        attempts=0,
        created_at=now,
    )


def decision_from_row(row: sqlite3.Row) -> DecisionRow:
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
