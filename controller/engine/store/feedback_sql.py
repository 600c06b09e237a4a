"""What `trm-sre export-feedback` reads: decided incidents with their alert, approval and outcome, either backend.

Read-only: nothing here creates or changes a table. The outcome and
correction tables are read by their own modules (`outcomes_sql`,
`corrections_sql`); a store from before they existed lacks them, and the
caller reads each in its own transaction so that one missing table does
not abort the others (PostgreSQL aborts a transaction on any error).
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.engine.store.dialect_sql import DialectSql
from controller.schemas.decision import Decision


@dataclass(frozen=True)
class DecidedIncident:
    """A decision, the firing alert it was made for (the stored AlertEvent JSON), and its approval if any."""

    decision: Decision
    created_at: float
    mode: str
    state: str
    alert_payload: str | None
    approval_state: str | None
    approval_resolved_at: float | None


@dataclass(frozen=True)
class FinishedOutcome:
    decision_id: str
    state: str
    finished_at: float | None


class FeedbackSql(DialectSql):
    """The statements, on one transaction of either backend."""

    def decided_since(self, since: float) -> list[DecidedIncident]:
        rows = self._all(
            "SELECT d.body, d.created_at, d.mode, d.state, a.state AS approval_state,"
            " a.resolved_at AS approval_resolved_at,"
            " (SELECT al.payload FROM alerts al WHERE al.incident_key = d.incident_key AND al.status = 'firing'"
            "  ORDER BY al.id LIMIT 1) AS alert_payload"
            " FROM decisions d LEFT JOIN approvals a ON a.decision_id = d.id"
            " WHERE d.created_at >= ? ORDER BY d.created_at, d.id",
            (since,),
        )
        return [
            DecidedIncident(
                Decision.model_validate_json(r["body"]),
                float(r["created_at"]),
                r["mode"],
                r["state"],
                r["alert_payload"],
                r["approval_state"],
                r["approval_resolved_at"],
            )
            for r in rows
        ]

    def finished_outcomes(self, since: float) -> list[FinishedOutcome]:
        rows = self._all(
            "SELECT decision_id, state, finished_at FROM outcomes"
            " WHERE triggered_at >= ? AND state NOT IN ('pending', 'resolved')",
            (since,),
        )
        return [FinishedOutcome(r["decision_id"], r["state"], r["finished_at"]) for r in rows]
