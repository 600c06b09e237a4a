"""Silences tied to remediation in the store: their table and statements, for SQLite and PostgreSQL alike.

Like `outcomes_sql`, everything here runs inside a backend's own
`transaction()` / `reading()`; `SilenceSql(tx)` runs one statement on it.

Table `silences` (created by `ensure_schema`, `CREATE TABLE IF NOT EXISTS`):
one row per delivered trigger that got (or is getting) an Alertmanager
silence. It is the silence's durable outbox: `state` says what Alertmanager
should hold and the silence loop (`controller.engine.silences`) retries until
it does, so a crash or an Alertmanager outage only delays it.

- `decision_id` PK, `policy`, `function`, `incident_key`;
- `matchers` (JSON: the alert's labels as equality matchers), `starts_at`,
  `ends_at`, `created_by`, `comment`: the body last posted;
- `silence_id`: Alertmanager's id (NULL until created or adopted);
- `state`: active (created, extended while firing) | expiring (to be
  deleted) | expired (deleted, or found gone) | failed (never created:
  the decision's outcome was known first);
- `reason` (why it was expired), `seen_silenced_at` (Alertmanager listed the
  alert as silenced: the poll may now take its absence as a resolution),
  `resolved_at`, `resolution_source`, `attempts`, `last_error`,
  `created_at`, `updated_at`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from controller.engine.store.dialect_sql import DialectSql, ensure_tables

_TABLE = """
CREATE TABLE IF NOT EXISTS silences (
    decision_id TEXT PRIMARY KEY,
    policy TEXT NOT NULL,
    function TEXT NOT NULL,
    incident_key TEXT NOT NULL,
    matchers TEXT NOT NULL,
    starts_at {real} NOT NULL,
    ends_at {real} NOT NULL,
    created_by TEXT NOT NULL,
    comment TEXT NOT NULL,
    silence_id TEXT,
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    seen_silenced_at {real},
    resolved_at {real},
    resolution_source TEXT,
    attempts BIGINT NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    created_at {real} NOT NULL,
    updated_at {real} NOT NULL
);
CREATE INDEX IF NOT EXISTS silences_open ON silences(state) WHERE state IN ('active', 'expiring')
"""


def ensure_schema(store: Any) -> None:
    """Create the table if missing (idempotent, safe with several replicas)."""
    ensure_tables(store, _TABLE, "trm-sre-silences-ddl")


@dataclass(frozen=True)
class SilenceRow:
    decision_id: str
    policy: str
    function: str
    incident_key: str
    matchers: list[dict[str, Any]]
    starts_at: float
    ends_at: float
    created_by: str
    comment: str
    silence_id: str | None
    state: str
    reason: str
    seen_silenced_at: float | None
    resolved_at: float | None
    resolution_source: str | None
    attempts: int
    last_error: str
    created_at: float
    updated_at: float

    @staticmethod
    def of(row: dict[str, Any]) -> SilenceRow:
        fields = {k: row[k] for k in SilenceRow.__dataclass_fields__ if k != "matchers"}
        return SilenceRow(**fields, matchers=json.loads(row["matchers"]))


@dataclass(frozen=True)
class Candidate:
    """A delivered trigger with no silence yet: its outcome, the trigger's data, the lambda's answer."""

    decision_id: str
    policy: str
    function: str
    incident_key: str
    triggered_at: float
    window_seconds: int
    outcome_state: str
    trigger_data: dict[str, Any]
    lambda_result: str | None


@dataclass(frozen=True)
class Watched:
    """An active or expiring silence with what decides its fate: the outcome and the lambda's answer."""

    silence: SilenceRow
    outcome_state: str | None
    triggered_at: float | None
    lambda_result: str | None


class SilenceSql(DialectSql):
    """The statements, on one transaction of either backend."""

    def candidates(self, trigger_type: str, limit: int = 200) -> list[Candidate]:
        """Delivered triggers whose outcome is still open and that have no silence row yet."""
        rows = self._all(
            "SELECT o.decision_id, o.policy, o.function, o.incident_key, o.triggered_at, o.window_seconds,"
            " o.state AS outcome_state, b.data AS trigger_data, d.result AS lambda_result"
            " FROM outcomes o JOIN outbox b ON b.decision_id = o.decision_id AND b.type = ? AND b.state = 'delivered'"
            " LEFT JOIN decisions d ON d.id = o.decision_id"
            " LEFT JOIN silences s ON s.decision_id = o.decision_id"
            " WHERE s.decision_id IS NULL AND o.state IN ('pending', 'resolved') ORDER BY o.triggered_at LIMIT ?",
            (trigger_type, limit),
        )
        return [
            Candidate(
                r["decision_id"],
                r["policy"],
                r["function"],
                r["incident_key"],
                float(r["triggered_at"]),
                int(r["window_seconds"]),
                r["outcome_state"],
                json.loads(r["trigger_data"]),
                r["lambda_result"],
            )
            for r in rows
        ]

    def insert(self, row: SilenceRow) -> bool:
        return (
            self._run(
                "INSERT INTO silences (decision_id, policy, function, incident_key, matchers, starts_at, ends_at,"
                " created_by, comment, silence_id, state, reason, seen_silenced_at, resolved_at, resolution_source,"
                " attempts, last_error, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (decision_id) DO NOTHING",
                (
                    row.decision_id,
                    row.policy,
                    row.function,
                    row.incident_key,
                    json.dumps(row.matchers, sort_keys=True),
                    row.starts_at,
                    row.ends_at,
                    row.created_by,
                    row.comment,
                    row.silence_id,
                    row.state,
                    row.reason,
                    row.seen_silenced_at,
                    row.resolved_at,
                    row.resolution_source,
                    row.attempts,
                    row.last_error,
                    row.created_at,
                    row.updated_at,
                ),
            )
            == 1
        )

    def silence(self, decision_id: str) -> SilenceRow | None:
        row = self._one("SELECT * FROM silences WHERE decision_id = ?", (decision_id,))
        return None if row is None else SilenceRow.of(row)

    def watched(self, limit: int = 500) -> list[Watched]:
        rows = self._all(
            "SELECT s.*, o.state AS outcome_state, o.triggered_at AS outcome_triggered_at, d.result AS lambda_result"
            " FROM silences s LEFT JOIN outcomes o ON o.decision_id = s.decision_id"
            " LEFT JOIN decisions d ON d.id = s.decision_id"
            " WHERE s.state IN ('active', 'expiring') ORDER BY s.created_at LIMIT ?",
            (limit,),
        )
        return [
            Watched(SilenceRow.of(r), r["outcome_state"], r["outcome_triggered_at"], r["lambda_result"]) for r in rows
        ]

    def extended(self, decision_id: str, silence_id: str, ends_at: float, now: float) -> None:
        self._run(
            "UPDATE silences SET silence_id = ?, ends_at = ?, updated_at = ? WHERE decision_id = ?",
            (silence_id, ends_at, now, decision_id),
        )

    def want_expired(self, decision_id: str, reason: str, now: float) -> bool:
        return (
            self._run(
                "UPDATE silences SET state = 'expiring', reason = ?, updated_at = ?"
                " WHERE decision_id = ? AND state = 'active'",
                (reason, now, decision_id),
            )
            == 1
        )

    def set_state(self, decision_id: str, state: str, now: float) -> None:
        self._run("UPDATE silences SET state = ?, updated_at = ? WHERE decision_id = ?", (state, now, decision_id))

    def failed_attempt(self, decision_id: str, error: str, now: float) -> None:
        self._run(
            "UPDATE silences SET attempts = attempts + 1, last_error = ?, updated_at = ? WHERE decision_id = ?",
            (error[:1000], now, decision_id),
        )

    def seen_silenced(self, decision_id: str, now: float) -> None:
        self._run(
            "UPDATE silences SET seen_silenced_at = ? WHERE decision_id = ? AND seen_silenced_at IS NULL",
            (now, decision_id),
        )

    def resolved(self, decision_id: str, source: str, now: float) -> bool:
        return (
            self._run(
                "UPDATE silences SET resolved_at = ?, resolution_source = ?, updated_at = ?"
                " WHERE decision_id = ? AND resolved_at IS NULL",
                (now, source, now, decision_id),
            )
            == 1
        )
