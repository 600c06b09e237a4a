"""`Store`: the controller's SQLite database in one file; every public operation is one transaction.

Why SQLite: the controller's promises are about what happens across
Alertmanager re-sends, retries and crashes (one decision per incident, one
trigger per decision, a trigger accepted is a trigger delivered). Those
promises need state that survives the process, and one file in WAL mode
gives that with no extra service to run.

Durability is chosen per transaction. Recording alerts (the 2xx contract)
and a human's approval commit with `synchronous=FULL`: fsynced before we
answer. Everything the engine can redo commits with `synchronous=NORMAL`
(decisions with their outbox entries, delivery results, expiries): in WAL
mode that survives a process crash, and after a power loss the lost tail is
redone to the same result (a decision re-made under the same deterministic
id emits the same CloudEvent ids; a lost "delivered" mark re-sends the same
event, which consumers de-duplicate). So the only fsync an alert costs is
the one its 2xx needs.

One connection, guarded by a lock: every call runs in a worker thread
(`asyncio.to_thread`) and holds the lock for one short transaction. Writers
start with `BEGIN IMMEDIATE` so a read-then-write (the cooldown check, the
storm-breaker count) cannot interleave with another writer.

Every SQLite failure (disk full, read-only file, locked by another process,
closed store) surfaces as `StoreError`; nothing half-written stays behind
because each public operation is one transaction.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from controller.engine.store import sweep
from controller.engine.store.schema import (
    DB_FILENAME,
    DDL,
    SCHEMA_VERSION,
    OutboxEntry,
    PendingAlert,
    RecordedAlert,
    StoreError,
    outbox_from_row,
)
from controller.engine.store.shared_queries import SharedQueries
from controller.engine.store.tx import StoreTx
from controller.schemas.alerts import AlertEvent
from controller.schemas.decision import LAMBDA_TRIGGER


class Store(SharedQueries):
    """The controller's SQLite database in `state_dir`."""

    def __init__(self, conn: sqlite3.Connection, state_dir: Path) -> None:
        self._conn = conn
        self._lock = threading.RLock()
        self.state_dir = state_dir
        self.is_open = True
        self._synchronous = "FULL"
        #: One process owns the file: no claims, leases or singleton locks (`controller.engine.store.base`).
        self.shared = False

    @classmethod
    def open(cls, state_dir: Path, busy_timeout_s: float = 5.0, db_file: Path | None = None) -> Store:
        """Open (creating if needed) the database in `state_dir` (or `db_file`: `--store sqlite:///PATH`).

        `busy_timeout_s` bounds how long a write waits for another process
        holding the write lock before the operation fails with StoreError
        (and the HTTP edge answers 503 instead of hanging Alertmanager).
        """
        state_dir = Path(state_dir)
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
            db_file = Path(db_file) if db_file is not None else state_dir / DB_FILENAME
            db_file.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                db_file,
                timeout=busy_timeout_s,
                isolation_level=None,  # explicit BEGIN/COMMIT only
                check_same_thread=False,  # used from worker threads, always under the lock
            )
            conn.row_factory = sqlite3.Row
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"could not switch {state_dir / DB_FILENAME} to WAL mode (got {mode})")
            conn.execute("PRAGMA synchronous=FULL")  # the default; `transaction(durable=False)` relaxes it
            conn.execute("PRAGMA foreign_keys=ON")
            conn.executescript(DDL)
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the store in {state_dir}: {exc}") from exc
        if int(version) != SCHEMA_VERSION:
            conn.close()
            raise StoreError(f"store schema version {version} is not {SCHEMA_VERSION}; move {state_dir} aside")
        return cls(conn, state_dir)

    def close(self) -> None:
        """Checkpoint and close; idempotent."""
        with self._lock:
            if not self.is_open:
                return
            self.is_open = False
            # A checkpoint is an optimisation; the WAL is replayed on the next open anyway.
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()

    def singleton(self, name: str) -> _OwnLock:
        """This process is the only one on the file: it always holds every singleton lock."""
        return _OwnLock()

    @contextmanager
    def transaction(self, durable: bool = True) -> Iterator[StoreTx]:
        """One write transaction under the lock; any SQLite error rolls back and raises StoreError.

        durable=True fsyncs on commit (what we acknowledge to others);
        durable=False survives a process crash but not a power loss (what the
        engine can redo to the same result); see the module docstring.
        """
        with self._lock:
            if not self.is_open:
                raise StoreError("the store is closed")
            try:
                mode = "FULL" if durable else "NORMAL"
                if mode != self._synchronous:
                    self._conn.execute(f"PRAGMA synchronous={mode}")
                    self._synchronous = mode
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot begin a transaction: {exc}") from exc
            try:
                yield StoreTx(self._conn)
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise StoreError(str(exc)) from exc
            except BaseException:
                self._rollback()
                raise

    @contextmanager
    def reading(self) -> Iterator[StoreTx]:
        """A consistent read (deferred transaction); never writes."""
        with self._lock:
            if not self.is_open:
                raise StoreError("the store is closed")
            try:
                self._conn.execute("BEGIN")
                try:
                    yield StoreTx(self._conn)
                finally:
                    self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise StoreError(str(exc)) from exc

    def _rollback(self) -> None:
        try:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the connection rolls back on its own when the failed statement aborted the transaction

    # ingest

    def record_alerts(self, events: Sequence[AlertEvent], now: float) -> list[RecordedAlert]:
        """Record a batch of alert events in one transaction (the 2xx contract).

        Firing: a new incident is recorded with its alert and must be decided;
        a re-send of a known incident is only counted, except an incident no
        policy matched, which is re-evaluated (a policy may exist by now).
        Resolved: the incident is marked resolved, the alert recorded against
        it, and where the deciding policy said `onResolved: cancelPending`,
        its pending approval and undelivered trigger are cancelled.
        """
        results: list[RecordedAlert] = []
        with self.transaction() as tx:
            for event in events:
                if event.alert.status == "firing":
                    results.append(self._record_firing(tx, event, now))
                else:
                    results.append(self._record_resolved(tx, event, now))
        return results

    @staticmethod
    def _record_firing(tx: StoreTx, event: AlertEvent, now: float) -> RecordedAlert:
        incident = tx.incident(event.incident_key)
        if incident is None:
            tx.insert_incident(event, now, "open", None)
            return RecordedAlert("new", event, alert_id=tx.insert_alert(event, now, decided=False))
        tx.count_resend(event.incident_key, now)
        if incident.state == "unmatched" and tx.decision_id_for_incident(event.incident_key) is None:
            tx.set_incident_state(event.incident_key, "open")
            # One row per unmatched incident, refreshed in place: a Watchdog re-sent for months must not
            # add a row (with its whole payload) per re-send (issue #13.7).
            alert_id = tx.refresh_firing_alert(event, now)
            if alert_id is None:
                alert_id = tx.insert_alert(event, now, decided=False)
            return RecordedAlert("reevaluate", event, alert_id=alert_id)
        return RecordedAlert("duplicate", event)

    @staticmethod
    def _record_resolved(tx: StoreTx, event: AlertEvent, now: float) -> RecordedAlert:
        incident = tx.incident(event.incident_key)
        if incident is None:
            # Resolved before we ever saw it fire (we were down, or send_resolved raced): keep the record.
            tx.insert_incident(event, now, "unmatched", now)
            tx.insert_alert(event, now, decided=True)
            return RecordedAlert("resolved", event)
        if incident.resolved_at is not None:
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
            # A trigger still in the outbox (sink down) is as stale as a pending approval.
            cancelled_events = tx.cancel_pending_events(decision.decision.id, (LAMBDA_TRIGGER,), now)
        return RecordedAlert(
            "resolved", event, cancelled_approvals=cancelled_approvals, cancelled_events=cancelled_events
        )

    def undecided_alerts(self) -> list[PendingAlert]:
        """Firing alerts recorded but never handled: the work a crash left behind, oldest first."""
        with self.reading() as tx:
            rows = tx._all("SELECT id, payload FROM alerts WHERE decided = 0 AND status = 'firing' ORDER BY id")
        return [PendingAlert(r["id"], AlertEvent.model_validate_json(r["payload"])) for r in rows]

    def mark_unmatched(self, alert_id: int, incident_key: str) -> None:
        with self.transaction(durable=False) as tx:
            tx.mark_alert_decided(alert_id)
            if tx.decision_id_for_incident(incident_key) is None:
                tx.set_incident_state(incident_key, "unmatched")

    # outbox

    def outbox_entry(self, event_id: str) -> OutboxEntry | None:
        with self.reading() as tx:
            row = tx._one("SELECT * FROM outbox WHERE event_id = ?", (event_id,))
        return outbox_from_row(row) if row else None

    def due_outbox(self, now: float, limit: int = 500) -> list[OutboxEntry]:
        with self.reading() as tx:
            rows = tx._all(
                "SELECT * FROM outbox WHERE state = 'pending' AND next_attempt_at <= ?"
                " ORDER BY created_at, event_id LIMIT ?",
                (now, limit),
            )
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
                "UPDATE outbox SET attempts = attempts + ?, last_status = ?, last_error = ?, next_attempt_at = ?"
                " WHERE event_id = ? AND state = 'pending'",
                (attempts, status, error[:2000], next_attempt_at, event_id),
            )

    def mark_dead(self, event_id: str, attempts: int, status: int | None, error: str, now: float) -> bool:
        """Dead-letter a pending entry; False if it was no longer pending."""
        with self.transaction(durable=False) as tx:
            changed = tx._run(
                "UPDATE outbox SET state = 'dead', attempts = attempts + ?, last_status = ?, last_error = ?,"
                " next_attempt_at = ? WHERE event_id = ? AND state = 'pending'",
                (attempts, status, error[:2000], now, event_id),
            )
            return changed == 1

    # decisions, approvals, responses

    # retention

    def sweep_finished_incidents(self, cutoff: float, limit: int) -> dict[str, int]:
        """Delete up to `limit` finished incidents last active before `cutoff`, and all that hangs off them.

        One short transaction (the caller loops until a chunk comes back
        smaller than `limit`); rows deleted per table, `incidents` first.
        What goes, what stays whatever its age, and why deleting an incident
        is safe only once Alertmanager has stopped sending it:
        `controller.engine.store.sweep`.
        """
        with self.transaction(durable=False) as tx:  # a sweep lost to a power cut is redone by the next one
            counts = sweep.finished_incidents(tx, cutoff, limit)
            superseded = sweep.superseded_alerts(tx, cutoff, limit)
        if superseded:
            counts = {**counts, "alerts": counts.get("alerts", 0) + superseded}
        return counts

    def sweep_expired_cooldowns(self, cutoff: float, limit: int) -> int:
        """Delete up to `limit` cooldowns that ended before `cutoff`; how many (one short transaction).

        A cooldown that has ended holds nothing back any more (`set_cooldown`
        keeps the later end), so only its record is lost.
        """
        with self.transaction(durable=False) as tx:
            return sweep.expired_cooldowns(tx, cutoff, limit)


class _OwnLock:
    """The singleton lock of a store one process owns: always held."""

    def held(self) -> bool:
        return True

    def release(self) -> None:
        pass
