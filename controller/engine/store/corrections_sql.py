"""Corrections in the store: what a human said the right call was when rejecting a proposal.

A rejection may carry a correction (`POST /approvals/{id}` with
`{"decision": "reject", "correction": {"function": ..., "parameters": ...}}`;
`function` null means "no action was right"). It is a label, never an
action: nothing is emitted for it. Shadow-mode agreement and
`trm-sre export-feedback` read it as ground truth.

Table (created by `ensure_schema`, `CREATE TABLE IF NOT EXISTS`, like the
outcome tables; an older build ignores it):

- `corrections`: `decision_id` PK (one correction per decision, the first
  wins), `approval_id`, `function` (NULL = none was right), `parameters`
  (JSON), `actor`, `recorded_at`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from controller.engine.store.dialect_sql import DialectSql, ensure_tables

_TABLES = """
CREATE TABLE IF NOT EXISTS corrections (
    decision_id TEXT PRIMARY KEY,
    approval_id TEXT NOT NULL,
    function TEXT,
    parameters TEXT NOT NULL DEFAULT '{{}}',
    actor TEXT NOT NULL,
    recorded_at {real} NOT NULL
);
CREATE INDEX IF NOT EXISTS corrections_by_time ON corrections(recorded_at)
"""


def ensure_schema(store: Any) -> None:
    """Create the table if missing; idempotent, safe with several replicas."""
    ensure_tables(store, _TABLES, "trm-sre-corrections-ddl")


@dataclass(frozen=True)
class CorrectionRow:
    decision_id: str
    approval_id: str
    function: str | None
    parameters: dict[str, Any]
    actor: str
    recorded_at: float

    @staticmethod
    def of(row: dict[str, Any]) -> CorrectionRow:
        return CorrectionRow(
            decision_id=row["decision_id"],
            approval_id=row["approval_id"],
            function=row["function"],
            parameters=json.loads(row["parameters"] or "{}"),
            actor=row["actor"],
            recorded_at=float(row["recorded_at"]),
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "function": self.function,
            "parameters": self.parameters,
            "actor": self.actor,
            "recorded_at": self.recorded_at,
        }


class CorrectionSql(DialectSql):
    """The statements, on one transaction of either backend."""

    def insert(self, row: CorrectionRow) -> bool:
        """Record a correction; False when the decision already has one (the first answer stands)."""
        if self.correction(row.decision_id) is not None:
            return False
        self._run(
            "INSERT INTO corrections (decision_id, approval_id, function, parameters, actor, recorded_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                row.decision_id,
                row.approval_id,
                row.function,
                json.dumps(row.parameters, sort_keys=True),
                row.actor,
                row.recorded_at,
            ),
        )
        return True

    def correction(self, decision_id: str) -> CorrectionRow | None:
        row = self._one("SELECT * FROM corrections WHERE decision_id = ?", (decision_id,))
        return None if row is None else CorrectionRow.of(row)

    def since(self, ts: float) -> list[CorrectionRow]:
        rows = self._all("SELECT * FROM corrections WHERE recorded_at >= ? ORDER BY recorded_at, decision_id", (ts,))
        return [CorrectionRow.of(r) for r in rows]
