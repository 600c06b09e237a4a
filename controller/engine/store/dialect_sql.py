"""Statements that run unchanged on either backend: the SQL dialect adapter the outcome and silence tables share.

The SQL is written once with `?` placeholders; on PostgreSQL they become
`%s` (psycopg). Both backends hand out rows that convert to dicts.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any


def dialect(conn: Any) -> str:
    return "sqlite" if isinstance(conn, sqlite3.Connection) else "postgresql"


def ensure_tables(store: Any, ddl_template: str, lock_name: str) -> None:
    """Create the tables of `ddl_template` if missing ({real} is the float type); idempotent, safe with replicas."""
    with store.transaction() as tx:
        conn = tx._conn
        if dialect(conn) == "sqlite":
            ddl = ddl_template.format(real="REAL").replace("BIGINT", "INTEGER")
        else:
            # Two replicas creating the same table at once collide in the catalog: serialise them.
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (lock_name,))
            ddl = ddl_template.format(real="DOUBLE PRECISION")
        for statement in ddl.split(";"):  # one by one: sqlite3's executescript would commit the transaction
            if statement.strip():
                conn.execute(statement)


class DialectSql:
    """Runs `?`-placeholder SQL on one transaction of either backend."""

    def __init__(self, tx: Any) -> None:
        self._conn = tx._conn
        self._pg = dialect(self._conn) == "postgresql"

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self._pg else sql

    def _all(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return [dict(r) for r in self._conn.execute(self._sql(sql), tuple(args)).fetchall()]

    def _one(self, sql: str, args: Sequence[Any] = ()) -> dict[str, Any] | None:
        row = self._conn.execute(self._sql(sql), tuple(args)).fetchone()
        return None if row is None else dict(row)

    def _run(self, sql: str, args: Sequence[Any] = ()) -> int:
        return int(self._conn.execute(self._sql(sql), tuple(args)).rowcount)
