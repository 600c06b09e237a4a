"""Shadow decisions and natural resolutions in the store: their tables and statements, for SQLite and PostgreSQL.

Like `outcomes_sql`, everything here runs inside a backend's own
`transaction()` / `reading()`; `ShadowSql(tx)` runs one `?`-placeholder
statement on it (`%s` on PostgreSQL).

Tables (created by `ensure_schema`, `CREATE TABLE IF NOT EXISTS`, once per
opened store; an older build ignores them):

- `shadow_decisions`: one row per shadow decision (`id` PK, deterministic
  from incident, policy and stage: recording is idempotent). `incident_key`,
  `alertname`, `policy` (the Shadow policy, or the live policy holding the
  `shadow: true` stage), `stage_index` (NULL: a Shadow policy's whole
  chain), `stage`, `function` (NULL: it would have done nothing),
  `parameters` (JSON), `confidence`, `reasoning`, `trace` (JSON),
  `live_decision_id` (the live decision of the same incident; NULL: no live
  policy matched), `annotation` (JSON `{function, parameters}`: the rule
  author's call on the alert, `function` null for an explicit "none"; NULL:
  no usable annotation), `decided_at`; then the comparison, rewritten until
  it is final and never after: `agreement` (agree | disagree_function |
  disagree_parameters | shadow_only_action | live_only_action |
  both_abstain), `truth_source`, `truth_function`, `truth_parameters`,
  `shadow_correct` (1 right, 0 wrong, NULL not judgeable),
  `final` (1 once its ground truth is final), `compared_at`.
- `natural_resolutions`: one row per dry-run decision that proposed a
  function (`decision_id` PK): `incident_key`, `policy`, `function`,
  `alertname`, `decided_at`, `window_seconds` (the policy's
  `verify.windowSeconds` then), `state` (pending, then resolved |
  still_firing | unknown), `resolved_at`, `finished_at`. Did the alert
  resolve with no action within the window: the baseline a function's
  success rate must beat.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from controller.engine.store.dialect_sql import DialectSql, ensure_tables

AGREEMENTS = (
    "agree",
    "disagree_function",
    "disagree_parameters",
    "shadow_only_action",
    "live_only_action",
    "both_abstain",
)
NATURAL_FINAL = ("resolved", "still_firing", "unknown")

_TABLES = """
CREATE TABLE IF NOT EXISTS shadow_decisions (
    id TEXT PRIMARY KEY,
    incident_key TEXT NOT NULL,
    alertname TEXT NOT NULL,
    policy TEXT NOT NULL,
    stage_index BIGINT,
    stage TEXT NOT NULL,
    function TEXT,
    parameters TEXT NOT NULL DEFAULT '{{}}',
    confidence {real},
    reasoning TEXT NOT NULL DEFAULT '',
    trace TEXT NOT NULL DEFAULT '[]',
    live_decision_id TEXT,
    annotation TEXT,
    decided_at {real} NOT NULL,
    agreement TEXT,
    truth_source TEXT,
    truth_function TEXT,
    truth_parameters TEXT,
    shadow_correct BIGINT,
    final BIGINT NOT NULL DEFAULT 0,
    compared_at {real}
);
CREATE INDEX IF NOT EXISTS shadow_decisions_open ON shadow_decisions(decided_at) WHERE final = 0;
CREATE INDEX IF NOT EXISTS shadow_decisions_by_policy ON shadow_decisions(policy, decided_at);
CREATE TABLE IF NOT EXISTS natural_resolutions (
    decision_id TEXT PRIMARY KEY,
    incident_key TEXT NOT NULL,
    policy TEXT NOT NULL,
    function TEXT NOT NULL,
    alertname TEXT NOT NULL,
    decided_at {real} NOT NULL,
    window_seconds BIGINT NOT NULL,
    state TEXT NOT NULL,
    resolved_at {real},
    finished_at {real}
);
CREATE INDEX IF NOT EXISTS natural_resolutions_open ON natural_resolutions(decided_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS natural_resolutions_by_policy ON natural_resolutions(policy, function, state)
"""


def ensure_schema(store: Any) -> None:
    """Create the tables if missing; once per opened store (idempotent, safe with several replicas)."""
    ensure_tables(store, _TABLES, "trm-sre-shadow-ddl")


@dataclass(frozen=True)
class Call:
    """A remediation call, or none (`function` None)."""

    function: str | None
    parameters: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {"function": self.function, "parameters": self.parameters}

    @staticmethod
    def of_json(text: str | None) -> Call | None:
        if text is None:
            return None
        doc = json.loads(text)
        return Call(doc.get("function"), dict(doc.get("parameters") or {}))


@dataclass(frozen=True)
class ShadowRow:
    id: str
    incident_key: str
    alertname: str
    policy: str
    stage_index: int | None
    stage: str
    function: str | None
    parameters: dict[str, Any]
    confidence: float | None
    reasoning: str
    trace: list[Any]
    live_decision_id: str | None
    annotation: Call | None
    decided_at: float
    agreement: str | None = None
    truth_source: str | None = None
    truth_function: str | None = None
    truth_parameters: dict[str, Any] | None = None
    shadow_correct: bool | None = None
    final: bool = False
    compared_at: float | None = None

    @staticmethod
    def of(row: dict[str, Any]) -> ShadowRow:
        correct = row["shadow_correct"]
        return ShadowRow(
            id=row["id"],
            incident_key=row["incident_key"],
            alertname=row["alertname"],
            policy=row["policy"],
            stage_index=None if row["stage_index"] is None else int(row["stage_index"]),
            stage=row["stage"],
            function=row["function"],
            parameters=json.loads(row["parameters"] or "{}"),
            confidence=None if row["confidence"] is None else float(row["confidence"]),
            reasoning=row["reasoning"],
            trace=json.loads(row["trace"] or "[]"),
            live_decision_id=row["live_decision_id"],
            annotation=Call.of_json(row["annotation"]),
            decided_at=float(row["decided_at"]),
            agreement=row["agreement"],
            truth_source=row["truth_source"],
            truth_function=row["truth_function"],
            truth_parameters=None if row["truth_parameters"] is None else json.loads(row["truth_parameters"]),
            shadow_correct=None if correct is None else bool(correct),
            final=bool(row["final"]),
            compared_at=row["compared_at"],
        )


@dataclass(frozen=True)
class LiveFacts:
    """What the store knows about the live side of one incident: its decision, the human's answer, the outcome."""

    decision_outcome: str | None  # trigger | escalate | None (no live decision)
    function: str | None
    parameters: dict[str, Any]
    state: str | None  # the live decision's state (triggered, dry_run, approval_pending, approved, rejected, ...)
    approval_state: str | None
    outcome_state: str | None  # the trigger's outcome: pending | resolved | a final state | None (no trigger)
    correction: Call | None  # a rejection's correction


@dataclass(frozen=True)
class Comparison:
    agreement: str
    truth_source: str
    truth: Call
    shadow_correct: bool | None
    final: bool


@dataclass(frozen=True)
class NaturalRow:
    decision_id: str
    incident_key: str
    policy: str
    function: str
    alertname: str
    decided_at: float
    window_seconds: int
    state: str
    resolved_at: float | None
    finished_at: float | None


class ShadowSql(DialectSql):
    """The statements, on one transaction of either backend."""

    # shadow decisions

    def insert_shadow(self, row: ShadowRow) -> bool:
        """Record a shadow decision; False if it was already recorded (a replay)."""
        return (
            self._run(
                "INSERT INTO shadow_decisions (id, incident_key, alertname, policy, stage_index, stage, function,"
                " parameters, confidence, reasoning, trace, live_decision_id, annotation, decided_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (
                    row.id,
                    row.incident_key,
                    row.alertname,
                    row.policy,
                    row.stage_index,
                    row.stage,
                    row.function,
                    json.dumps(row.parameters, sort_keys=True),
                    row.confidence,
                    row.reasoning,
                    json.dumps(row.trace, sort_keys=True, default=str),
                    row.live_decision_id,
                    None if row.annotation is None else json.dumps(row.annotation.as_json(), sort_keys=True),
                    row.decided_at,
                ),
            )
            == 1
        )

    def open_shadows(self, limit: int = 500) -> list[ShadowRow]:
        """Shadow decisions whose comparison is not final yet, oldest first."""
        rows = self._all("SELECT * FROM shadow_decisions WHERE final = 0 ORDER BY decided_at, id LIMIT ?", (limit,))
        return [ShadowRow.of(r) for r in rows]

    def shadows(self, since: float = 0.0, policy: str | None = None) -> list[ShadowRow]:
        sql = "SELECT * FROM shadow_decisions WHERE decided_at >= ?"
        args: list[Any] = [since]
        if policy is not None:
            sql += " AND policy = ?"
            args.append(policy)
        return [ShadowRow.of(r) for r in self._all(sql + " ORDER BY decided_at, id", args)]

    def shadows_of_incident(self, incident_key: str) -> list[ShadowRow]:
        rows = self._all(
            "SELECT * FROM shadow_decisions WHERE incident_key = ? ORDER BY decided_at, id", (incident_key,)
        )
        return [ShadowRow.of(r) for r in rows]

    def shadow(self, shadow_id: str) -> ShadowRow | None:
        row = self._one("SELECT * FROM shadow_decisions WHERE id = ?", (shadow_id,))
        return None if row is None else ShadowRow.of(row)

    def live_facts(self, incident_key: str) -> LiveFacts:
        """The live side of an incident (the `outcomes` and `corrections` tables must exist)."""
        row = self._one(
            "SELECT d.outcome, d.function, d.parameters, d.state, a.state AS approval_state,"
            " o.state AS outcome_state, c.decision_id AS corrected, c.function AS correction_function,"
            " c.parameters AS correction_parameters"
            " FROM decisions d LEFT JOIN approvals a ON a.decision_id = d.id"
            " LEFT JOIN outcomes o ON o.decision_id = d.id LEFT JOIN corrections c ON c.decision_id = d.id"
            " WHERE d.incident_key = ?",
            (incident_key,),
        )
        if row is None:
            return LiveFacts(None, None, {}, None, None, None, None)
        correction = (
            Call(row["correction_function"], json.loads(row["correction_parameters"] or "{}"))
            if row["corrected"] is not None
            else None
        )
        return LiveFacts(
            row["outcome"],
            row["function"],
            json.loads(row["parameters"] or "{}"),
            row["state"],
            row["approval_state"],
            row["outcome_state"],
            correction,
        )

    def set_comparison(self, shadow_id: str, c: Comparison, now: float) -> bool:
        """Write the comparison unless it is already final; True when written."""
        return (
            self._run(
                "UPDATE shadow_decisions SET agreement = ?, truth_source = ?, truth_function = ?,"
                " truth_parameters = ?, shadow_correct = ?, final = ?, compared_at = ? WHERE id = ? AND final = 0",
                (
                    c.agreement,
                    c.truth_source,
                    c.truth.function,
                    json.dumps(c.truth.parameters, sort_keys=True),
                    None if c.shadow_correct is None else int(c.shadow_correct),
                    int(c.final),
                    now,
                    shadow_id,
                ),
            )
            == 1
        )

    # natural resolutions

    def insert_natural(self, row: NaturalRow) -> bool:
        return (
            self._run(
                "INSERT INTO natural_resolutions (decision_id, incident_key, policy, function, alertname, decided_at,"
                " window_seconds, state, resolved_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (decision_id) DO NOTHING",
                (
                    row.decision_id,
                    row.incident_key,
                    row.policy,
                    row.function,
                    row.alertname,
                    row.decided_at,
                    row.window_seconds,
                    row.state,
                    row.resolved_at,
                    row.finished_at,
                ),
            )
            == 1
        )

    def open_naturals(self, limit: int = 500) -> list[tuple[NaturalRow, bool, float | None]]:
        """Pending natural resolutions, each with whether its incident is known and when it resolved."""
        rows = self._all(
            "SELECT n.*, i.incident_key AS incident_found, i.resolved_at AS incident_resolved_at"
            " FROM natural_resolutions n LEFT JOIN incidents i ON i.incident_key = n.incident_key"
            " WHERE n.state = 'pending' ORDER BY n.decided_at LIMIT ?",
            (limit,),
        )
        out = []
        for r in rows:
            found, resolved = r.pop("incident_found") is not None, r.pop("incident_resolved_at")
            out.append((NaturalRow(**r), found, resolved))
        return out

    def finish_natural(self, decision_id: str, state: str, resolved_at: float | None, now: float) -> bool:
        return (
            self._run(
                "UPDATE natural_resolutions SET state = ?, resolved_at = ?, finished_at = ?"
                " WHERE decision_id = ? AND state = 'pending'",
                (state, resolved_at, now, decision_id),
            )
            == 1
        )

    def naturals(self, since: float = 0.0, policy: str | None = None) -> list[NaturalRow]:
        sql = "SELECT * FROM natural_resolutions WHERE decided_at >= ?"
        args: list[Any] = [since]
        if policy is not None:
            sql += " AND policy = ?"
            args.append(policy)
        return [NaturalRow(**r) for r in self._all(sql + " ORDER BY decided_at", args)]

    def outcome_counts(self, since: float = 0.0, policy: str | None = None) -> list[tuple[str, str, int]]:
        """(function, final outcome state, count) of live triggers since `since` (the `outcomes` table)."""
        sql = "SELECT function, state, COUNT(*) AS n FROM outcomes WHERE state NOT IN ('pending', 'resolved')"
        sql += " AND triggered_at >= ?"
        args: list[Any] = [since]
        if policy is not None:
            sql += " AND policy = ?"
            args.append(policy)
        rows = self._all(sql + " GROUP BY function, state", args)
        return [(r["function"], r["state"], int(r["n"])) for r in rows]
