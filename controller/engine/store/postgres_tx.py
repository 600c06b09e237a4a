"""`PostgresTx`: the reads and writes inside one PostgreSQL transaction (`PostgresStore.transaction`, `reading`).

The same methods and meanings as the SQLite `StoreTx` (`controller.engine.store.tx`),
plus what several replicas writing one database need: in a write transaction,
reading a decision for an incident locks the incident's row, reading a cooldown
or a storm-breaker count takes a transaction advisory lock on the target or
policy, an approval read to be answered is locked, and an undecided alert or
a fresh outbox entry is leased to this replica (see `controller.engine.store.postgres`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import psycopg

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


class PostgresTx:
    """The operations inside one PostgreSQL transaction; the same methods as `StoreTx`."""

    def __init__(self, conn: psycopg.Connection[dict[str, Any]], owner: str, lease_s: float, writing: bool) -> None:
        self._conn = conn
        self._owner = owner  # the replica that claims what this transaction leases (`PostgresStore.owner`)
        self._lease_s = lease_s
        self._writing = writing

    # `?` placeholders (the SQL shared with SQLite, `shared_queries.py`) become psycopg's `%s`; none of our
    # PostgreSQL statements uses `?` for anything else.
    def _one(self, sql: str, args: Sequence[Any] | dict[str, Any] = ()) -> dict[str, Any] | None:
        return self._conn.execute(sql.replace("?", "%s"), args).fetchone()

    def _all(self, sql: str, args: Sequence[Any] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        return self._conn.execute(sql.replace("?", "%s"), args).fetchall()

    def _run(self, sql: str, args: Sequence[Any] | dict[str, Any] = ()) -> int:
        return self._conn.execute(sql.replace("?", "%s"), args).rowcount

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
                None if decided else self._owner,
                None if decided else now + self._lease_s,
            ),
        )
        return int(row["id"]) if row else 0

    def refresh_firing_alert(self, event: AlertEvent, now: float) -> int | None:
        """Replace the incident's last firing alert row with this re-send (undecided again, leased to this
        replica as `insert_alert` leases it); its id, or None if the incident has no firing row."""
        row = self._one(
            "UPDATE alerts SET payload = %s, source = %s, received_at = %s, decided = 0, claimed_by = %s,"
            " lease_until = %s WHERE id = (SELECT id FROM alerts WHERE incident_key = %s AND status = 'firing'"
            " ORDER BY id DESC LIMIT 1) RETURNING id",
            (event.model_dump_json(), event.source, now, self._owner, now + self._lease_s, event.incident_key),
        )
        return int(row["id"]) if row else None

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

    def budget_used(self, policy: str, since: float, excluding: str | None = None, cap: int | None = None) -> int:
        """Budgeted decisions of `policy` since `since`, not counting the decision `excluding` (an approval
        re-checking the storm breaker for its own decision). In a write transaction, first lock the policy's
        window: the count and the commit are one step."""
        if self._writing:
            self._xact_lock(f"trm-sre:budget:{policy}")
        return count_budget(self, policy, since, excluding, cap)

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
                    now + self._lease_s,
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

    def pending_approval_rows(self) -> list[ApprovalRow]:
        rows = self._all("SELECT * FROM approvals WHERE state = 'pending' ORDER BY requested_at")
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
