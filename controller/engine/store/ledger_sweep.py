"""Retention for the tables kept beside the incidents: outcomes, silences, corrections.

These tables are created on demand (`ensure_tables`, not every store has
them) and are keyed by `decision_id`. A row goes once it is final and older
than the retention: an outcome once judged, a silence once expired or
failed, a correction once recorded. What is open (an outcome still being
watched, a silence still held in Alertmanager) is never deleted, whatever
its age. Circuits are not swept: one row per (policy, function), and their
state must survive.
"""

from __future__ import annotations

from typing import Any

from controller.engine.store.dialect_sql import DialectSql, dialect
from controller.engine.store.outcomes_sql import FINAL_STATES

# (table, the column that says when the row became final, what makes it final)
_FINISHED_ROWS: tuple[tuple[str, str, str], ...] = (
    ("outcomes", "finished_at", "state IN (" + ", ".join(f"'{s}'" for s in FINAL_STATES) + ")"),
    ("silences", "updated_at", "state IN ('expired', 'failed')"),
    ("corrections", "recorded_at", "1 = 1"),
)


class _LedgerSql(DialectSql):
    def has_table(self, table: str) -> bool:
        if dialect(self._conn) == "sqlite":
            return self._one("SELECT 1 AS x FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)) is not None
        found = self._one("SELECT to_regclass(?) IS NOT NULL AS x", (table,))
        return bool(found and found["x"])

    def delete_finished(self, table: str, column: str, final: str, cutoff: float, limit: int) -> int:
        # Table and column names come from _FINISHED_ROWS above, never from input.
        return self._run(
            f"DELETE FROM {table} WHERE decision_id IN"
            f" (SELECT decision_id FROM {table} WHERE {final} AND {column} < ? LIMIT ?)",
            (cutoff, limit),
        )


def sweep_finished_ledgers(store: Any, cutoff: float, limit: int) -> dict[str, int]:
    """Delete up to `limit` final rows older than `cutoff` from each ledger table that exists; rows per table."""
    deleted: dict[str, int] = {}
    for table, column, final in _FINISHED_ROWS:
        with store.transaction() as tx:
            sql = _LedgerSql(tx)
            if sql.has_table(table):
                deleted[table] = sql.delete_finished(table, column, final, cutoff, limit)
    return deleted
