"""Outcomes and circuit breakers in the store: their tables and statements, for SQLite and PostgreSQL alike.

Kept apart from the backends on purpose: everything here runs inside a
backend's own `transaction()` / `reading()` (both hand out a transaction
object holding `_conn`, a sqlite3 or psycopg connection); `OutcomeSql(tx)`
is the small adapter that runs one statement on it. Statements are written
once with `?` placeholders; on PostgreSQL they become `%s`.

Tables (created by `ensure_schema`, `CREATE TABLE IF NOT EXISTS`, once per
opened store; no schema version change: an older build ignores them):

- `outcomes`: one row per delivered trigger (`decision_id` PK, so recording
  is idempotent). `incident_key`, `policy`, `policy_generation`,
  `function`, `alertname`, `target` (the workload the function acted on:
  `controller.engine.outcomes.workload_target`), `triggered_at`,
  `window_seconds`, `recurrence_seconds` (the policy's `verify` when the
  trigger was committed), `state` (pending | resolved, then one final
  state: verified | recurred | ineffective | failed | unknown |
  superseded), `resolved_at`, `finished_at`, `evidence` (JSON).
- `outcome_sightings`: every decided incident's (alertname, target, when),
  what a recurrence is looked up in. `incident_key` PK.
- `circuits`: per (policy, function): `state` (closed | open),
  `failures` (consecutive bad outcomes), `first_failure_at`, `opened_at`,
  `reason`, `reset_token` (the last reset annotation value applied),
  `updated_at`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from controller.engine.store.dialect_sql import DialectSql, ensure_tables
from controller.engine.store.schema import StoreError

OPEN_STATES = ("pending", "resolved")
FINAL_STATES = ("verified", "recurred", "ineffective", "failed", "unknown", "superseded")

_TABLES = """
CREATE TABLE IF NOT EXISTS outcomes (
    decision_id TEXT PRIMARY KEY,
    incident_key TEXT NOT NULL,
    policy TEXT NOT NULL,
    policy_generation BIGINT NOT NULL DEFAULT 0,
    function TEXT NOT NULL,
    alertname TEXT NOT NULL,
    target TEXT NOT NULL,
    triggered_at {real} NOT NULL,
    window_seconds BIGINT NOT NULL,
    recurrence_seconds BIGINT NOT NULL,
    state TEXT NOT NULL,
    resolved_at {real},
    finished_at {real},
    evidence TEXT NOT NULL DEFAULT '{{}}'
);
CREATE INDEX IF NOT EXISTS outcomes_open ON outcomes(triggered_at) WHERE state IN ('pending', 'resolved');
CREATE INDEX IF NOT EXISTS outcomes_by_policy ON outcomes(policy, function, state);
CREATE TABLE IF NOT EXISTS outcome_sightings (
    incident_key TEXT PRIMARY KEY,
    alertname TEXT NOT NULL,
    target TEXT NOT NULL,
    seen_at {real} NOT NULL
);
CREATE INDEX IF NOT EXISTS outcome_sightings_by_target ON outcome_sightings(alertname, target, seen_at);
CREATE TABLE IF NOT EXISTS circuits (
    policy TEXT NOT NULL,
    function TEXT NOT NULL,
    state TEXT NOT NULL,
    failures BIGINT NOT NULL DEFAULT 0,
    first_failure_at {real},
    opened_at {real},
    reason TEXT NOT NULL DEFAULT '',
    reset_token TEXT,
    updated_at {real} NOT NULL,
    PRIMARY KEY (policy, function)
);
"""


def ensure_schema(store: Any) -> None:
    """Create the tables if missing; once per opened store (idempotent, safe with several replicas)."""
    ensure_tables(store, _TABLES, "trm-sre-outcomes-ddl")


@dataclass(frozen=True)
class OutcomeRow:
    decision_id: str
    incident_key: str
    policy: str
    policy_generation: int
    function: str
    alertname: str
    target: str
    triggered_at: float
    window_seconds: int
    recurrence_seconds: int
    state: str
    resolved_at: float | None
    finished_at: float | None
    evidence: dict[str, Any]

    @staticmethod
    def of(row: dict[str, Any]) -> OutcomeRow:
        fields = {k: row[k] for k in OutcomeRow.__dataclass_fields__ if k != "evidence"}
        return OutcomeRow(**fields, evidence=json.loads(row["evidence"] or "{}"))


@dataclass(frozen=True)
class OpenOutcome:
    """An outcome still being evaluated, with what the store knows about its incident and trigger."""

    outcome: OutcomeRow
    incident_known: bool
    incident_resolved_at: float | None
    lambda_result: str | None  # success | error | None (no response)
    trigger_state: str | None  # the trigger's outbox state: pending | delivered | dead | cancelled


@dataclass(frozen=True)
class CircuitRow:
    policy: str
    function: str
    state: str  # closed | open
    failures: int
    first_failure_at: float | None
    opened_at: float | None
    reason: str
    reset_token: str | None
    updated_at: float


class OutcomeSql(DialectSql):
    """The statements, on one transaction of either backend."""

    # outcomes

    def insert_outcome(self, row: OutcomeRow) -> bool:
        """Record a pending outcome for a delivered trigger; False if the decision already has one."""
        return (
            self._run(
                "INSERT INTO outcomes (decision_id, incident_key, policy, policy_generation, function, alertname,"
                " target, triggered_at, window_seconds, recurrence_seconds, state, resolved_at, finished_at, evidence)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (decision_id) DO NOTHING",
                (
                    row.decision_id,
                    row.incident_key,
                    row.policy,
                    row.policy_generation,
                    row.function,
                    row.alertname,
                    row.target,
                    row.triggered_at,
                    row.window_seconds,
                    row.recurrence_seconds,
                    row.state,
                    row.resolved_at,
                    row.finished_at,
                    json.dumps(row.evidence, sort_keys=True),
                ),
            )
            == 1
        )

    def outcome(self, decision_id: str) -> OutcomeRow | None:
        row = self._one("SELECT * FROM outcomes WHERE decision_id = ?", (decision_id,))
        return None if row is None else OutcomeRow.of(row)

    def open_outcomes(self, trigger_type: str, limit: int = 500) -> list[OpenOutcome]:
        rows = self._all(
            "SELECT o.*, i.incident_key AS incident_found, i.resolved_at AS incident_resolved_at,"
            " d.result AS lambda_result,"
            " (SELECT b.state FROM outbox b WHERE b.decision_id = o.decision_id AND b.type = ?"
            "  ORDER BY b.created_at DESC LIMIT 1) AS trigger_state"
            " FROM outcomes o LEFT JOIN incidents i ON i.incident_key = o.incident_key"
            " LEFT JOIN decisions d ON d.id = o.decision_id"
            " WHERE o.state IN ('pending', 'resolved') ORDER BY o.triggered_at LIMIT ?",
            (trigger_type, limit),
        )
        return [
            OpenOutcome(
                OutcomeRow.of(r),
                r["incident_found"] is not None,
                r["incident_resolved_at"],
                r["lambda_result"],
                r["trigger_state"],
            )
            for r in rows
        ]

    def mark_resolved(self, decision_id: str, resolved_at: float) -> None:
        self._run(
            "UPDATE outcomes SET state = 'resolved', resolved_at = ? WHERE decision_id = ? AND state = 'pending'",
            (resolved_at, decision_id),
        )

    def finish(self, decision_id: str, state: str, now: float, evidence: dict[str, Any]) -> bool:
        """Give an open outcome its final state; False if it already had one (exactly one outcome per trigger)."""
        if state not in FINAL_STATES:
            raise StoreError(f"not a final outcome: {state}")
        return (
            self._run(
                "UPDATE outcomes SET state = ?, finished_at = ?, evidence = ?"
                " WHERE decision_id = ? AND state IN ('pending', 'resolved')",
                (state, now, json.dumps(evidence, sort_keys=True), decision_id),
            )
            == 1
        )

    def counts(self) -> list[tuple[str, str, str, int]]:
        """(policy, function, final state, count) over every finished outcome."""
        rows = self._all(
            "SELECT policy, function, state, COUNT(*) AS n FROM outcomes"
            " WHERE state NOT IN ('pending', 'resolved') GROUP BY policy, function, state"
        )
        return [(r["policy"], r["function"], r["state"], int(r["n"])) for r in rows]

    # sightings: what a recurrence is looked up in

    def insert_sighting(self, incident_key: str, alertname: str, target: str, now: float) -> None:
        self._run(
            "INSERT INTO outcome_sightings (incident_key, alertname, target, seen_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (incident_key) DO NOTHING",
            (incident_key, alertname, target, now),
        )

    def recurrence(
        self, alertname: str, target: str, incident_key: str, after: float, until: float
    ) -> tuple[str, float] | None:
        """The first other incident of the same alert on the same target seen in (after, until]."""
        row = self._one(
            "SELECT incident_key, seen_at FROM outcome_sightings WHERE alertname = ? AND target = ?"
            " AND incident_key <> ? AND seen_at > ? AND seen_at <= ? ORDER BY seen_at LIMIT 1",
            (alertname, target, incident_key, after, until),
        )
        return None if row is None else (row["incident_key"], float(row["seen_at"]))

    def sweep_sightings(self, cutoff: float) -> int:
        return self._run("DELETE FROM outcome_sightings WHERE seen_at < ?", (cutoff,))

    # circuits

    def circuit(self, policy: str, function: str) -> CircuitRow | None:
        row = self._one("SELECT * FROM circuits WHERE policy = ? AND function = ?", (policy, function))
        return None if row is None else CircuitRow(**row)

    def circuits(self) -> list[CircuitRow]:
        return [CircuitRow(**r) for r in self._all("SELECT * FROM circuits ORDER BY policy, function")]

    def put_circuit(self, c: CircuitRow) -> None:
        self._run(
            "INSERT INTO circuits (policy, function, state, failures, first_failure_at, opened_at, reason,"
            " reset_token, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (policy, function) DO UPDATE SET state = excluded.state, failures = excluded.failures,"
            " first_failure_at = excluded.first_failure_at, opened_at = excluded.opened_at,"
            " reason = excluded.reason, reset_token = excluded.reset_token, updated_at = excluded.updated_at",
            (
                c.policy,
                c.function,
                c.state,
                c.failures,
                c.first_failure_at,
                c.opened_at,
                c.reason,
                c.reset_token,
                c.updated_at,
            ),
        )
