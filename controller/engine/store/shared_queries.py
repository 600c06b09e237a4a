"""What the SQLite and PostgreSQL stores read and write the same way, written once.

The SQL uses `?` placeholders; `PostgresTx` turns them into psycopg's `%s`.
Each store supplies `transaction()` and `reading()`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from controller.engine.store.schema import ApprovalRow, DecisionRow
from controller.schemas.decision import Decision

# "No cap": a LIMIT both SQLite and PostgreSQL read as "all" (SQLite's -1 is an error on PostgreSQL).
_NO_CAP = 2**62


def count_budget(tx: Any, policy: str, since: float, excluding: str | None, cap: int | None) -> int:
    """`budget_used` for either backend's transaction (`?` SQL): budgeted decisions of `policy` since `since`,
    without `excluding`, counted no further than `cap`.

    Counted on the partial index `decisions_budget` alone: a condition on another column (the excluded id)
    read every decision of the window from the table, 10 ms per commit at 12,000 decisions in the window
    (bench/analysis.md, change 12); the excluded decision is looked up by its key instead.
    """
    limit = _NO_CAP if cap is None else cap + (excluding is not None)
    row = tx._one(
        "SELECT COUNT(*) AS n FROM (SELECT 1 FROM decisions"
        " WHERE budgeted = 1 AND policy = ? AND created_at >= ? LIMIT ?) AS w",
        (policy, since, limit),
    )
    used = int(row["n"]) if row else 0
    if excluding is not None and tx._one(
        "SELECT 1 AS x FROM decisions WHERE id = ? AND budgeted = 1 AND policy = ? AND created_at >= ?",
        (excluding, policy, since),
    ):
        used -= 1
    return used if cap is None else min(used, cap)


class SharedQueries:
    """Decisions, approvals, lambda responses and a decision's history: one implementation for both backends."""

    def mark_delivered(self, event_id: str, attempts: int, status: int | None, now: float) -> None:
        self.mark_delivered_many([(event_id, attempts, status, now)])

    def mark_delivered_many(self, marks: Sequence[tuple[str, int, int | None, float]]) -> None:
        """(event id, attempts, last status, delivered at) for each: deliveries that finish together, one commit."""
        with self.transaction(durable=False) as tx:
            for event_id, attempts, status, now in marks:
                tx._run(
                    "UPDATE outbox SET state = 'delivered', attempts = attempts + ?, last_status = ?, last_error = '',"
                    " delivered_at = ? WHERE event_id = ?",
                    (attempts, status, now, event_id),
                )

    def decision(self, decision_id: str) -> DecisionRow | None:
        with self.reading() as tx:
            return tx.decision(decision_id)

    def approval(self, approval_id: str) -> ApprovalRow | None:
        with self.reading() as tx:
            return tx.approval(approval_id)

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
