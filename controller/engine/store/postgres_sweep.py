"""Retention on PostgreSQL: `controller.engine.store.sweep`'s rules in PostgreSQL's SQL.

What may go, what stays whatever its age, and why: `controller.engine.store.sweep`.
The differences are the dialect (GREATEST, named parameters, arrays) and
`FOR UPDATE … SKIP LOCKED`: a row another replica's transaction is changing
right now is not finished, whatever it looks like, and is left to a later sweep.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from controller.engine.store.sweep import SWEPT_TABLES

if TYPE_CHECKING:
    from controller.engine.store.postgres_tx import PostgresTx

# `controller.engine.store.sweep._SWEEPABLE_INCIDENTS` in PostgreSQL's dialect.
_SWEEPABLE_INCIDENTS = """
SELECT i.incident_key, d.id AS decision_id
FROM incidents i LEFT JOIN decisions d ON d.incident_key = i.incident_key
WHERE i.last_seen < %(cutoff)s
  AND i.state IN ('decided', 'unmatched')
  AND (d.id IS NULL OR d.updated_at < %(cutoff)s)
  AND NOT EXISTS (
    SELECT 1 FROM alerts a WHERE a.incident_key = i.incident_key AND (a.decided = 0 OR a.received_at >= %(cutoff)s))
  AND NOT EXISTS (
    SELECT 1 FROM outbox o WHERE o.decision_id = d.id
      AND (o.state NOT IN ('delivered', 'dead', 'cancelled')
           OR GREATEST(o.created_at, o.next_attempt_at, COALESCE(o.delivered_at, 0)) >= %(cutoff)s))
  AND NOT EXISTS (
    SELECT 1 FROM approvals p WHERE p.decision_id = d.id
      AND (p.state NOT IN ('approved', 'rejected', 'expired', 'cancelled')
           OR GREATEST(p.requested_at, COALESCE(p.resolved_at, 0)) >= %(cutoff)s))
  AND NOT EXISTS (
    SELECT 1 FROM approvals p WHERE p.incident_key = i.incident_key
      AND (p.state NOT IN ('approved', 'rejected', 'expired', 'cancelled')
           OR GREATEST(p.requested_at, COALESCE(p.resolved_at, 0)) >= %(cutoff)s))
  AND NOT EXISTS (SELECT 1 FROM responses r WHERE r.decision_id = d.id AND r.received_at >= %(cutoff)s)
ORDER BY i.last_seen
LIMIT %(limit)s
FOR UPDATE OF i SKIP LOCKED
"""

# `controller.engine.store.sweep._SUPERSEDED_ALERTS` in PostgreSQL's dialect: firing rows of an unmatched
# incident that a later re-send superseded (stores written before re-sends refreshed the row in place held
# one per re-send), older than the cutoff. The newest firing row stays (it is what a re-evaluation decides on).
_SUPERSEDED_ALERTS = """
SELECT a.id FROM alerts a JOIN incidents i ON i.incident_key = a.incident_key
WHERE i.state = 'unmatched' AND a.status = 'firing' AND a.decided = 1 AND a.received_at < %(cutoff)s
  AND a.id < (SELECT MAX(b.id) FROM alerts b WHERE b.incident_key = a.incident_key AND b.status = 'firing')
LIMIT %(limit)s
FOR UPDATE OF a SKIP LOCKED
"""

# Children first: the foreign keys (no ON DELETE CASCADE) must hold at every statement.
_DELETE_ORDER = (
    ("responses", "decision_id", "decisions"),
    ("outbox", "decision_id", "decisions"),
    ("approvals", "decision_id", "decisions"),
    ("approvals", "incident_key", "keys"),  # the same rows, unless an approval named another decision
    ("alerts", "incident_key", "keys"),
    ("decisions", "id", "decisions"),
    ("incidents", "incident_key", "keys"),
)


def finished_incidents(tx: PostgresTx, cutoff: float, limit: int) -> dict[str, int]:
    """Delete up to `limit` sweepable incidents and all that hangs off them; rows deleted per table."""
    rows = tx._all(_SWEEPABLE_INCIDENTS, {"cutoff": cutoff, "limit": limit})
    if not rows:
        return {}
    values = {
        "keys": [r["incident_key"] for r in rows],
        "decisions": [r["decision_id"] for r in rows if r["decision_id"] is not None],
    }
    counts: dict[str, int] = {}
    for table, column, which in _DELETE_ORDER:
        if values[which]:
            deleted = tx._run(f"DELETE FROM {table} WHERE {column} = ANY(%s)", (values[which],))
            counts[table] = counts.get(table, 0) + deleted
    return {table: counts[table] for table in SWEPT_TABLES if counts.get(table)}


def superseded_alerts(tx: PostgresTx, cutoff: float, limit: int) -> int:
    """Delete up to `limit` superseded firing rows of unmatched incidents (see `_SUPERSEDED_ALERTS`); how many."""
    ids = [r["id"] for r in tx._all(_SUPERSEDED_ALERTS, {"cutoff": cutoff, "limit": limit})]
    if not ids:
        return 0
    return tx._run("DELETE FROM alerts WHERE id = ANY(%s)", (ids,))


def expired_cooldowns(tx: PostgresTx, cutoff: float, limit: int) -> int:
    """Delete up to `limit` cooldowns that ended before `cutoff`; how many."""
    return tx._run(
        "DELETE FROM cooldowns WHERE target IN"
        " (SELECT target FROM cooldowns WHERE until < %s LIMIT %s FOR UPDATE SKIP LOCKED)",
        (cutoff, limit),
    )
