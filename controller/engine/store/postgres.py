"""`PostgresStore`: the store on PostgreSQL, shared by N active replicas (`--store postgresql://…`).

The same interface as the SQLite `Store` (`controller.engine.store.base`),
the same tables and meanings (`controller.engine.store.schema`), plus what
several writers on one database need:

- Exactly once by construction: incidents are inserted with
  `INSERT … ON CONFLICT DO NOTHING` on the incident key, so whichever
  replicas receive an alert and its re-sends, one of them records it as new
  and the others count a re-send; decisions are unique per incident and a
  decision commit first locks its incident's row (`SELECT … FOR UPDATE`), so
  a second commit for it waits and then finds it decided; outbox entries are
  inserted once per CloudEvent id.
- Guards across replicas: reading a target's cooldown or a policy's
  storm-breaker count inside a write transaction first takes a transaction
  advisory lock on that target / policy, so the read, the plan and the write
  of two replicas deciding for the same target or policy happen one after the
  other (the second sees the first's cooldown and budget).
- Claims with leases: an undecided alert carries `claimed_by`/`lease_until`
  (set by the replica that recorded it); `undecided_alerts` claims those whose
  lease ran out (`FOR UPDATE SKIP LOCKED`), so the work of a killed replica
  moves to another after `lease_s`. `due_outbox` claims what it returns by
  pushing `next_attempt_at` a lease ahead, and a fresh outbox entry starts
  leased to the replica that committed it (its immediate delivery); a
  replica killed mid-delivery leaves the entry due again after the lease.
- Singletons: `singleton(name)` takes a session advisory lock on a
  dedicated connection (TCP keepalives bound how long a dead holder keeps it).
- Migrations: versioned (`trm_sre_schema`), applied in one transaction under
  a transaction advisory lock, so replicas starting together apply each
  version once; a database newer than this build is refused
  (`controller.engine.store.postgres_migrations`).

Durability: alert records and approval answers commit with PostgreSQL's
`synchronous_commit` (on by default); what the engine can redo commits with
`synchronous_commit = off`, as the SQLite store uses `synchronous=NORMAL`.
Every psycopg failure surfaces as `StoreError`.

Modules: this one holds the store (pool, transactions, the operations that are
one transaction each); `postgres_tx` the operations inside one transaction,
`postgres_sweep` the retention statements, `postgres_migrations` the schema.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.string import StrDumperUnknown
from psycopg_pool import ConnectionPool

from controller.engine.store import postgres_sweep
from controller.engine.store.postgres_migrations import migrate
from controller.engine.store.postgres_tx import PostgresTx
from controller.engine.store.schema import (
    OutboxEntry,
    PendingAlert,
    RecordedAlert,
    StoreError,
    outbox_from_row,
)
from controller.engine.store.shared_queries import SharedQueries
from controller.schemas.alerts import AlertEvent
from controller.schemas.decision import LAMBDA_TRIGGER

# Kept small: one chunk's keys travel as one array parameter.
_CLAIM_BATCH = 1000
# TCP keepalives: a replica that vanished (node lost, network cut) releases its locks within about 30 s.
_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}


class _NulSafeStrDumper(StrDumperUnknown):
    """Strings as psycopg sends them, with NUL replaced by U+FFFD: PostgreSQL's text cannot hold NUL.

    A label value may hold one (Alertmanager sends what Prometheus has; SQLite stores it), and it
    reaches raw text columns (incidents.alertname, a decision's target, cooldowns.target). Refused,
    it would fail the whole batch's transaction: a 503 that Alertmanager retries for ever. Replaced
    in every parameter, keys written and looked up agree; JSON columns (payload, decision body)
    escape it and keep it exact.
    """

    def dump(self, obj: str) -> Any:
        return super().dump(obj.replace("\x00", "\ufffd"))


def _configure(conn: psycopg.Connection[Any]) -> None:
    conn.adapters.register_dumper(str, _NulSafeStrDumper)


def replica_id() -> str:
    """A name for this process in claims (host, pid and a random suffix: a restarted pod is a new claimer)."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class _AdvisoryLock:
    """A session advisory lock held on its own connection (`PostgresStore.singleton`)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def held(self) -> bool:
        try:
            self._conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def release(self) -> None:
        try:
            self._conn.close()  # the session ends, and its advisory locks with it
        except psycopg.Error:
            pass


class PostgresStore(SharedQueries):
    """The store on PostgreSQL; see the module docstring."""

    def __init__(
        self,
        url: str,
        pool: ConnectionPool[Any],
        state_dir: Path,
        lease_s: float,
        clock: Callable[[], float],
        owner: str,
    ) -> None:
        self.url = url
        self._pool = pool
        self.state_dir = state_dir
        self.lease_s = lease_s
        self.owner = owner
        self._clock = clock
        self.is_open = True
        self.shared = True

    @classmethod
    def open(
        cls,
        url: str,
        state_dir: Path,
        *,
        pool_size: int = 10,
        lease_s: float = 60.0,
        connect_timeout_s: float = 10.0,
        busy_timeout_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> PostgresStore:
        """Connect, apply the migrations this build knows (once, whoever starts first), open the pool.

        `busy_timeout_s` bounds how long an operation waits for a pooled connection (all busy, or the
        database unreachable) before it fails with StoreError, as SQLite's busy timeout does: the
        webhook answers 503 instead of hanging Alertmanager.
        """
        state_dir = Path(state_dir)
        try:
            state_dir.mkdir(parents=True, exist_ok=True)  # the file sink (no K_SINK) still writes there
            migrate(url, connect_timeout_s)
            pool: ConnectionPool[Any] = ConnectionPool(
                url,
                min_size=1,
                max_size=max(pool_size, 1),
                kwargs={
                    "autocommit": True,
                    "row_factory": dict_row,
                    "connect_timeout": max(int(connect_timeout_s), 1),
                    **_KEEPALIVES,
                },
                timeout=busy_timeout_s,
                check=ConnectionPool.check_connection,
                configure=_configure,
                name="trm-sre-store",
                open=False,
            )
            pool.open(wait=True, timeout=connect_timeout_s)
        except (OSError, psycopg.Error) as exc:
            raise StoreError(f"cannot open the PostgreSQL store: {exc}") from exc
        return cls(url, pool, state_dir, lease_s, clock, replica_id())

    def close(self) -> None:
        if not self.is_open:
            return
        self.is_open = False
        self._pool.close()

    @contextmanager
    def transaction(self, durable: bool = True) -> Iterator[PostgresTx]:
        """One write transaction; any PostgreSQL error rolls back and raises StoreError."""
        if not self.is_open:
            raise StoreError("the store is closed")
        try:
            with self._pool.connection() as conn, conn.transaction():
                if not durable:
                    conn.execute("SET LOCAL synchronous_commit = off")
                yield PostgresTx(conn, self.owner, self.lease_s, writing=True)
        except psycopg.Error as exc:
            raise StoreError(str(exc)) from exc

    @contextmanager
    def reading(self) -> Iterator[PostgresTx]:
        """A consistent read (a read-only, repeatable-read transaction)."""
        if not self.is_open:
            raise StoreError("the store is closed")
        try:
            with self._pool.connection() as conn, conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                yield PostgresTx(conn, self.owner, self.lease_s, writing=False)
        except psycopg.Error as exc:
            raise StoreError(str(exc)) from exc

    def singleton(self, name: str) -> _AdvisoryLock | None:
        """Take the session advisory lock `name` on a connection of its own, or None if another holds it."""
        if not self.is_open:
            return None
        try:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5, **_KEEPALIVES)  # type: ignore[arg-type]
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect for the lock {name}: {exc}") from exc
        try:
            row = conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (f"trm-sre:{name}",)).fetchone()
        except psycopg.Error as exc:
            conn.close()
            raise StoreError(str(exc)) from exc
        if row is None or not row[0]:
            conn.close()
            return None
        return _AdvisoryLock(conn)

    # ingest

    def record_alerts(self, events: Sequence[AlertEvent], now: float) -> list[RecordedAlert]:
        """As `Store.record_alerts`, safe against other replicas recording the same alerts at the same time.

        Incidents are touched in key order (a stable sort: one incident's events keep their order), so two
        replicas recording overlapping batches take their row locks in the same order and never deadlock.
        """
        results: list[RecordedAlert | None] = [None] * len(events)
        order = sorted(range(len(events)), key=lambda i: events[i].incident_key)
        with self.transaction() as tx:
            for i in order:
                event = events[i]
                if event.alert.status == "firing":
                    results[i] = self._record_firing(tx, event, now)
                else:
                    results[i] = self._record_resolved(tx, event, now)
        return [r for r in results if r is not None]

    @staticmethod
    def _record_firing(tx: PostgresTx, event: AlertEvent, now: float) -> RecordedAlert:
        if tx._insert_incident(event, now, "open", None, ignore=True):
            return RecordedAlert("new", event, alert_id=tx.insert_alert(event, now, decided=False))
        incident = tx._lock_incident(event.incident_key)  # another replica's insert, committed by now
        tx.count_resend(event.incident_key, now)
        if (
            incident is not None
            and incident.state == "unmatched"
            and tx.decision_id_for_incident(event.incident_key) is None
        ):
            tx.set_incident_state(event.incident_key, "open")
            # One row per unmatched incident, refreshed in place (as `Store._record_firing`, issue #13.7).
            alert_id = tx.refresh_firing_alert(event, now)
            if alert_id is None:
                alert_id = tx.insert_alert(event, now, decided=False)
            return RecordedAlert("reevaluate", event, alert_id=alert_id)
        return RecordedAlert("duplicate", event)

    @staticmethod
    def _record_resolved(tx: PostgresTx, event: AlertEvent, now: float) -> RecordedAlert:
        if tx._insert_incident(event, now, "unmatched", now, ignore=True):
            # Resolved before we ever saw it fire (we were down, or send_resolved raced): keep the record.
            tx.insert_alert(event, now, decided=True)
            return RecordedAlert("resolved", event)
        incident = tx._lock_incident(event.incident_key)
        if incident is None or incident.resolved_at is not None:
            tx.count_resend(event.incident_key, now)
            return RecordedAlert("duplicate", event)
        tx.mark_incident_resolved(event.incident_key, now)
        tx.insert_alert(event, now, decided=True)
        cancelled_approvals = cancelled_events = 0
        decision_id = tx.decision_id_for_incident(event.incident_key)
        decision = tx.decision(decision_id) if decision_id else None
        if decision is not None and decision.on_resolved == "cancelPending":
            for approval in tx.pending_approvals_for_incident(event.incident_key):
                tx.set_approval_state(approval.id, "cancelled", now, "alert resolved")
                tx.set_decision_state(approval.decision_id, "approval_cancelled", "the alert resolved", now)
                cancelled_approvals += 1
            cancelled_events = tx.cancel_pending_events(decision.decision.id, (LAMBDA_TRIGGER,), now)
        return RecordedAlert(
            "resolved", event, cancelled_approvals=cancelled_approvals, cancelled_events=cancelled_events
        )

    def undecided_alerts(self) -> list[PendingAlert]:
        """Claim firing alerts nobody handled and no live replica holds (lease ended), oldest first."""
        now = self._clock()
        with self.transaction(durable=False) as tx:
            rows = tx._all(
                "UPDATE alerts SET claimed_by = %s, lease_until = %s WHERE id IN ("
                " SELECT id FROM alerts WHERE decided = 0 AND status = 'firing'"
                " AND (lease_until IS NULL OR lease_until <= %s) ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED)"
                " RETURNING id, payload",
                (self.owner, now + self.lease_s, now, _CLAIM_BATCH),
            )
        rows.sort(key=lambda r: r["id"])
        return [PendingAlert(int(r["id"]), AlertEvent.model_validate_json(r["payload"])) for r in rows]

    def mark_unmatched(self, alert_id: int, incident_key: str) -> None:
        with self.transaction(durable=False) as tx:
            if tx.decision_id_for_incident(incident_key) is None:
                tx.set_incident_state(incident_key, "unmatched")
            tx.mark_alert_decided(alert_id)

    # outbox

    def outbox_entry(self, event_id: str) -> OutboxEntry | None:
        with self.reading() as tx:
            row = tx._one(
                "SELECT event_id, decision_id, type, sink, attributes, data, state, attempts, next_attempt_at,"
                " last_error, last_status, created_at, delivered_at FROM outbox WHERE event_id = %s",
                (event_id,),
            )
        return outbox_from_row(row) if row else None

    def due_outbox(self, now: float, limit: int = 500) -> list[OutboxEntry]:
        """Claim up to `limit` due entries for this replica: they are not due for the others for a lease."""
        with self.transaction(durable=False) as tx:
            rows = tx._all(
                "UPDATE outbox SET next_attempt_at = %s WHERE event_id IN ("
                " SELECT event_id FROM outbox WHERE state = 'pending' AND next_attempt_at <= %s"
                " ORDER BY created_at, event_id LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING *",
                (now + self.lease_s, now, limit),
            )
        rows.sort(key=lambda r: (r["created_at"], r["event_id"]))
        return [outbox_from_row(r) for r in rows]

    def outbox_depth(self) -> int:
        with self.reading() as tx:
            row = tx._one("SELECT COUNT(*) AS n FROM outbox WHERE state = 'pending'")
        return int(row["n"]) if row else 0

    def mark_attempt_failed(
        self, event_id: str, attempts: int, status: int | None, error: str, next_attempt_at: float
    ) -> None:
        with self.transaction(durable=False) as tx:
            tx._run(
                "UPDATE outbox SET attempts = attempts + %s, last_status = %s, last_error = %s, next_attempt_at = %s"
                " WHERE event_id = %s AND state = 'pending'",
                (attempts, status, error[:2000], next_attempt_at, event_id),
            )

    def mark_dead(self, event_id: str, attempts: int, status: int | None, error: str, now: float) -> bool:
        with self.transaction(durable=False) as tx:
            return (
                tx._run(
                    "UPDATE outbox SET state = 'dead', attempts = attempts + %s, last_status = %s, last_error = %s,"
                    " next_attempt_at = %s WHERE event_id = %s AND state = 'pending'",
                    (attempts, status, error[:2000], now, event_id),
                )
                == 1
            )

    # decisions, approvals, responses

    # retention (what may go and why: `controller.engine.store.sweep`; PostgreSQL's SQL: `postgres_sweep`)

    def sweep_finished_incidents(self, cutoff: float, limit: int) -> dict[str, int]:
        """As `Store.sweep_finished_incidents`: finished incidents, then superseded firing rows (one transaction)."""
        with self.transaction(durable=False) as tx:
            counts = postgres_sweep.finished_incidents(tx, cutoff, limit)
            superseded = postgres_sweep.superseded_alerts(tx, cutoff, limit)
        if superseded:
            counts = {**counts, "alerts": counts.get("alerts", 0) + superseded}
        return counts

    def sweep_expired_cooldowns(self, cutoff: float, limit: int) -> int:
        with self.transaction(durable=False) as tx:
            return postgres_sweep.expired_cooldowns(tx, cutoff, limit)
