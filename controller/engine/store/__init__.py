"""Durable state: alerts, incidents, decisions, the outbox, approvals and cooldowns, in one SQLite file.

The package's parts:

- `schema`: the DDL (what each table and column means), the rows the store
  hands out, and `StoreError`, the one error it raises.
- `tx`: `StoreTx`, the reads and writes available inside one transaction.
- `store`: `Store`, the connection, its transactions (durability chosen per
  transaction) and the operations the engine calls, each one transaction.
- `sweep`: retention, what finished rows may be deleted and why.
- `base`: `StoreBackend`, the interface both stores implement (and what a
  shared store adds: claims, leases, singleton locks).
- `postgres`: `PostgresStore`, the same interface on PostgreSQL, for N
  active replicas on one database (imported only when a URL names it).
- `backends`: `open_store(url, state_dir)`, the store a `--store` URL names.

All SQL lives in this package: the engine's parts call `Store` and `StoreTx`
methods, never SQL, so another database can sit behind the same interface.
The public names are re-exported here (`from controller.engine.store import
Store, StoreError`).
"""

from controller.engine.store.backends import open_store, store_kind
from controller.engine.store.base import SingletonLock, StoreBackend, StoreTxApi
from controller.engine.store.schema import (
    DB_FILENAME,
    SCHEMA_VERSION,
    ApprovalRow,
    ApprovalState,
    DecisionRecord,
    DecisionRow,
    IncidentRow,
    IncidentState,
    OutboxEntry,
    OutboxState,
    PendingAlert,
    RecordedAlert,
    StoreError,
    as_inserted,
)
from controller.engine.store.store import Store
from controller.engine.store.sweep import SWEPT_TABLES
from controller.engine.store.tx import StoreTx

__all__ = [
    "DB_FILENAME",
    "SCHEMA_VERSION",
    "SWEPT_TABLES",
    "ApprovalRow",
    "ApprovalState",
    "DecisionRecord",
    "DecisionRow",
    "IncidentRow",
    "IncidentState",
    "OutboxEntry",
    "OutboxState",
    "PendingAlert",
    "RecordedAlert",
    "SingletonLock",
    "Store",
    "StoreBackend",
    "StoreError",
    "StoreTx",
    "StoreTxApi",
    "as_inserted",
    "open_store",
    "store_kind",
]
