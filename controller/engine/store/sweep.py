"""Retention: which finished rows may be deleted, and the statements that delete them in bounded chunks.

`Store.sweep_finished_incidents` and `Store.sweep_expired_cooldowns` run
these inside one short transaction each; the engine's retention loop calls
them until a chunk comes back smaller than its limit.

What goes: an incident that is decided or unmatched, together with
its alerts, its decision, the decision's outbox entries, approval and
lambda responses, when every one of those is finished and the last
activity on any of them is older than `cutoff`. Finished means: every
alert handled (`decided = 1`), every outbox entry delivered,
dead-lettered or cancelled, the approval (if any) approved, rejected,
expired or cancelled. Last activity is the latest of the incident's
`last_seen` (every re-send of the incident, firing or resolved, moves
it: `count_resend`; so does the resolution), the decision's
`updated_at` (approval answers, lambda responses, expiry), each outbox
entry's creation, last attempt or delivery, each approval's request
or answer, each alert's and response's arrival.

Also: the firing rows of an unmatched incident that a later re-send
superseded, once older than `cutoff` (`superseded_alerts`; stores written
before re-sends refreshed the row in place held one per re-send).

What stays, whatever its age: an undecided alert (a crash's work
list), a pending outbox entry (a trigger accepted is a trigger
delivered), a pending approval (a human may still answer it), and any
incident with one of those.

The invariant this keeps, once per incident: the incident row and its
decision are what turn a re-send into a duplicate instead of a new
decision (`Store._record_firing` only counts a re-send of a known incident,
and re-evaluates an unmatched one only while it has no decision).
Deleting an incident therefore forgets that it was decided, and is
safe only once Alertmanager has stopped sending it. Alertmanager
re-sends a firing alert every `repeat_interval` (4 h by default) and
each re-send refreshes `last_seen`, so an incident still firing stays
recent and is never swept, as long as the retention is longer than
the longest gap between two sends of one incident (the CLI accepts
whole days only, at least one). An incident silent for longer than
the retention (resolved, or no longer sent: a silence or inhibition
longer than the retention, a repeat_interval longer than it) is
forgotten, and should it be sent again it is a new incident, decided
again. A resolved alert arriving for a swept incident is recorded as
a resolved incident that was never seen firing (no decision).

Also safe for the other readers of these tables: the storm breaker
counts decisions within its window (at most a day, shorter than any
allowed retention); approvals and outbox entries still in use are
pending and therefore kept; cooldowns are swept separately, by their
own expiry. `GET /decisions/{id}` and `trm-sre explain` answer "not
found" for a swept decision, and a lambda response for it is refused
as unknown.
"""

from __future__ import annotations

from controller.engine.store.tx import StoreTx

#: The tables a retention sweep deletes from (the `table` label of the swept-rows counter).
SWEPT_TABLES = ("incidents", "alerts", "decisions", "outbox", "approvals", "responses", "cooldowns")
# States that never change again; a row in any other state (pending, or one added later) is never swept.
_FINISHED_OUTBOX = ("delivered", "dead", "cancelled")
_FINISHED_APPROVALS = ("approved", "rejected", "expired", "cancelled")
_FINISHED_INCIDENTS = ("decided", "unmatched")

# One chunk of finished incidents last active before the cutoff (?1), oldest first, at most ?2.
# An incident qualifies only if nothing about it is unfinished or recent; see the module docstring.
_SWEEPABLE_INCIDENTS = f"""
SELECT i.incident_key, d.id AS decision_id
FROM incidents i LEFT JOIN decisions d ON d.incident_key = i.incident_key
WHERE i.last_seen < ?1
  AND i.state IN ({", ".join(f"'{s}'" for s in _FINISHED_INCIDENTS)})
  AND (d.id IS NULL OR d.updated_at < ?1)
  AND NOT EXISTS (
    SELECT 1 FROM alerts a WHERE a.incident_key = i.incident_key AND (a.decided = 0 OR a.received_at >= ?1))
  AND NOT EXISTS (
    SELECT 1 FROM outbox o WHERE o.decision_id = d.id
      AND (o.state NOT IN ({", ".join(f"'{s}'" for s in _FINISHED_OUTBOX)})
           OR MAX(o.created_at, o.next_attempt_at, COALESCE(o.delivered_at, 0)) >= ?1))
  AND NOT EXISTS (
    SELECT 1 FROM approvals p WHERE p.decision_id = d.id
      AND (p.state NOT IN ({", ".join(f"'{s}'" for s in _FINISHED_APPROVALS)})
           OR MAX(p.requested_at, COALESCE(p.resolved_at, 0)) >= ?1))
  AND NOT EXISTS (
    SELECT 1 FROM approvals p WHERE p.incident_key = i.incident_key
      AND (p.state NOT IN ({", ".join(f"'{s}'" for s in _FINISHED_APPROVALS)})
           OR MAX(p.requested_at, COALESCE(p.resolved_at, 0)) >= ?1))
  AND NOT EXISTS (SELECT 1 FROM responses r WHERE r.decision_id = d.id AND r.received_at >= ?1)
ORDER BY i.last_seen
LIMIT ?2
"""


def finished_incidents(tx: StoreTx, cutoff: float, limit: int) -> dict[str, int]:
    """Delete up to `limit` sweepable incidents and all that hangs off them; rows deleted per table."""
    rows = tx._all(_SWEEPABLE_INCIDENTS, (cutoff, limit))
    if not rows:
        return {}
    keys = [r["incident_key"] for r in rows]
    decisions = [r["decision_id"] for r in rows if r["decision_id"] is not None]
    counts: dict[str, int] = {}

    def delete(table: str, column: str, values: list[str]) -> None:
        if values:
            marks = ",".join("?" for _ in values)
            deleted = tx._run(f"DELETE FROM {table} WHERE {column} IN ({marks})", values)
            counts[table] = counts.get(table, 0) + deleted

    # Children first: the foreign keys (no ON DELETE CASCADE) must hold at every statement.
    delete("responses", "decision_id", decisions)
    delete("outbox", "decision_id", decisions)
    delete("approvals", "decision_id", decisions)
    delete("approvals", "incident_key", keys)  # the same rows, unless an approval named another decision
    delete("alerts", "incident_key", keys)
    delete("decisions", "id", decisions)
    delete("incidents", "incident_key", keys)
    return {table: counts[table] for table in SWEPT_TABLES if counts.get(table)}


# Firing rows of an unmatched incident that a later re-send superseded, older than the cutoff (?1), at most ?2.
# Stores written before re-sends refreshed the row in place (issue #13.7) hold one such row per re-send of an
# alert no policy matched (a Watchdog): the incident stays recent while it fires, so the incident sweep above
# never reaches them. The newest firing row stays (it is what a re-evaluation decides on).
_SUPERSEDED_ALERTS = """
SELECT a.id FROM alerts a JOIN incidents i ON i.incident_key = a.incident_key
WHERE i.state = 'unmatched' AND a.status = 'firing' AND a.decided = 1 AND a.received_at < ?1
  AND a.id < (SELECT MAX(b.id) FROM alerts b WHERE b.incident_key = a.incident_key AND b.status = 'firing')
LIMIT ?2
"""


def superseded_alerts(tx: StoreTx, cutoff: float, limit: int) -> int:
    """Delete up to `limit` superseded firing rows of unmatched incidents (see `_SUPERSEDED_ALERTS`); how many."""
    ids = [r["id"] for r in tx._all(_SUPERSEDED_ALERTS, (cutoff, limit))]
    if not ids:
        return 0
    return tx._run(f"DELETE FROM alerts WHERE id IN ({','.join('?' for _ in ids)})", ids)


def expired_cooldowns(tx: StoreTx, cutoff: float, limit: int) -> int:
    """Delete up to `limit` cooldowns that ended before `cutoff`; how many."""
    return tx._run(
        "DELETE FROM cooldowns WHERE target IN (SELECT target FROM cooldowns WHERE until < ? LIMIT ?)",
        (cutoff, limit),
    )
