"""`StoreTx`: the reads and writes available inside one transaction (`Store.transaction`, `Store.reading`).

Every method is one or two SQL statements; the caller decides what belongs
in one transaction (the engine's decision commit composes several).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from controller.engine.store.schema import (
    ApprovalRow,
    ApprovalState,
    DecisionRecord,
    DecisionRow,
    IncidentRow,
    IncidentState,
    OutboxEntry,
    approval_from_row,
    decision_from_row,
    incident_from_row,
)
from controller.engine.store.shared_queries import count_budget
from controller.schemas.alerts import AlertEvent


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
        return incident_from_row(row) if row else None

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

    def refresh_firing_alert(self, event: AlertEvent, now: float) -> int | None:
        """Replace the incident's last firing alert row with this re-send (undecided again); its id, or None."""
        row = self._one(
            "SELECT id FROM alerts WHERE incident_key = ? AND status = 'firing' ORDER BY id DESC LIMIT 1",
            (event.incident_key,),
        )
        if row is None:
            return None
        self._conn.execute(
            "UPDATE alerts SET payload = ?, source = ?, received_at = ?, decided = 0 WHERE id = ?",
            (event.model_dump_json(), event.source, now, row["id"]),
        )
        return int(row["id"])

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
        return decision_from_row(row) if row else None

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

    def budget_used(self, policy: str, since: float, excluding: str | None = None, cap: int | None = None) -> int:
        return count_budget(self, policy, since, excluding, cap)

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
        return approval_from_row(row) if row else None

    def pending_approvals_for_incident(self, incident_key: str) -> list[ApprovalRow]:
        rows = self._conn.execute(
            "SELECT * FROM approvals WHERE incident_key = ? AND state = 'pending'", (incident_key,)
        ).fetchall()
        return [approval_from_row(r) for r in rows]

    def pending_approval_rows(self) -> list[ApprovalRow]:
        rows = self._conn.execute("SELECT * FROM approvals WHERE state = 'pending' ORDER BY requested_at").fetchall()
        return [approval_from_row(r) for r in rows]

    def expired_approvals(self, now: float) -> list[ApprovalRow]:
        rows = self._conn.execute(
            "SELECT * FROM approvals WHERE state = 'pending' AND expires_at <= ? ORDER BY expires_at", (now,)
        ).fetchall()
        return [approval_from_row(r) for r in rows]

    def set_approval_state(self, approval_id: str, state: ApprovalState, now: float, actor: str | None) -> None:
        self._conn.execute(
            "UPDATE approvals SET state = ?, resolved_at = ?, actor = ? WHERE id = ?", (state, now, actor, approval_id)
        )
