"""Retention: finished incidents, ended cooldowns and final outcome, silence and correction rows older than
`retention_days` are deleted, in chunks.

The loop sweeps `retention_first_sweep_s` after start and then every
`retention_interval_s` (not at all when `retention_days` is 0). Each chunk
is its own short store transaction, so the webhook path waits at most one
chunk for the store's lock. What may never be deleted, and why the
retention must exceed Alertmanager's repeat_interval:
`controller.engine.store.sweep`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable

from controller.engine.config import EngineSettings
from controller.engine.history import rfc3339
from controller.engine.lifecycle import Lifecycle
from controller.engine.store import Store, StoreError
from controller.engine.store.ledger_sweep import sweep_finished_ledgers
from controller.observability.metrics import Metrics

log = logging.getLogger(__name__)

# Incidents per retention-sweep transaction; also bounds the SQL variables one DELETE carries.
_RETENTION_CHUNK_MAX = 500


class RetentionSweeper:
    """The retention loop (`run`) and one sweep (`sweep`); see the module docstring."""

    def __init__(
        self,
        settings: EngineSettings,
        store: Store,
        metrics: Metrics,
        lifecycle: Lifecycle,
        clock: Callable[[], float],
    ) -> None:
        self._settings = settings
        self._store = store
        self._metrics = metrics
        self._lifecycle = lifecycle
        self._clock = clock

    async def run(self) -> None:
        """The retention loop: the first sweep shortly after start, then one every `retention_interval_s`."""
        await asyncio.sleep(self._settings.retention_first_sweep_s)
        while True:
            try:
                await self.sweep()
            except StoreError as exc:
                log.warning("store unavailable; retention sweep skipped this round", extra={"error": str(exc)})
            await asyncio.sleep(self._settings.retention_interval_s)

    async def sweep(self) -> dict[str, int]:
        """One retention sweep: rows deleted per table ({} when `retention_days` is 0: keep everything).

        Deletes finished incidents whose last activity is older than
        `retention_days`, with everything hanging off them, and cooldowns that
        ended before then. Never an undecided alert, a pending outbox entry,
        a pending approval, or an incident still being re-sent: deleting a
        decided incident's decision would let a re-send of it be decided and
        triggered a second time, so an incident goes only after Alertmanager
        has been silent about it for the whole retention (the full argument:
        `controller.engine.store.sweep`).

        Each chunk (`retention_chunk` incidents) is its own short transaction
        in a worker thread; between chunks the store's lock is free for the
        webhook path. Raises StoreError if the store fails (what earlier
        chunks deleted stays deleted, and counted).
        """
        days = self._settings.retention_days
        if days <= 0:
            return {}
        started = time.monotonic()
        cutoff = self._clock() - days * 86_400
        chunk = min(max(self._settings.retention_chunk, 1), _RETENTION_CHUNK_MAX)
        swept: collections.Counter[str] = collections.Counter()
        while not self._lifecycle.stopping:
            counts = await asyncio.to_thread(self._store.sweep_finished_incidents, cutoff, chunk)
            self._count_swept(swept, counts)
            if counts.get("incidents", 0) < chunk:
                break
        while not self._lifecycle.stopping:
            ended = await asyncio.to_thread(self._store.sweep_expired_cooldowns, cutoff, chunk)
            self._count_swept(swept, {"cooldowns": ended})
            if ended < chunk:
                break
        while not self._lifecycle.stopping:
            ledgers = await asyncio.to_thread(sweep_finished_ledgers, self._store, cutoff, chunk)
            self._count_swept(swept, ledgers)
            if max(ledgers.values(), default=0) < chunk:
                break
        # No VACUUM (it rewrites the whole file while holding the lock) and no `PRAGMA incremental_vacuum`
        # (a no-op: it needs auto_vacuum=INCREMENTAL from the database's creation, which existing stores
        # lack and which could only be switched on by a VACUUM). SQLite reuses the freed pages for new
        # rows, so under a steady alert rate the file levels off at about retention x rate (operations.md);
        # it only shrinks if an operator VACUUMs it offline.
        if swept:
            log.info(
                "retention sweep deleted finished rows",
                extra={
                    "rows": dict(swept),
                    "retention_days": days,
                    "cutoff": rfc3339(cutoff),
                    "duration_s": round(time.monotonic() - started, 3),
                },
            )
        return dict(swept)

    def _count_swept(self, swept: collections.Counter[str], counts: dict[str, int]) -> None:
        for table, rows in counts.items():
            if rows:
                swept[table] += rows
                self._metrics.rows_swept.labels(table=table).inc(rows)
