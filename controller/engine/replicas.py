"""Several active replicas on one shared store (PostgreSQL): claims handed over, loops that must run once.

Only for a shared store (`StoreBackend.shared`); on SQLite one process owns
the file and the pipeline runs as before.

- `ClaimRecovery.run`: every `claim_interval_s`, claim the undecided alerts
  whose lease ran out (their replica was killed, or is stuck) and queue them
  here, and re-read the outbox/approval gauges (other replicas move them).
  Decisions stay once per incident whoever decides (the store's unique
  incident key and its row lock), so a lease that ran out on a replica that
  was only slow costs a wasted decision, never a second one. Outbox entries
  need no loop of their own: the outbox's replay round claims due entries
  (`due_outbox`), including those a killed replica held.
- `run_as_singleton` (`Singleton`): run a loop (approval expiry, the
  retention sweep; in cluster mode the policy status writer) only
  while this replica holds the store's advisory lock for it; another replica
  takes over within `claim_interval_s` of the holder's death (its lock
  connection closes). A split brain lasts at most until the dead holder's
  connection times out (TCP keepalives), and both loops are idempotent
  (conditional updates, deletes of what is finished), so a brief overlap
  only repeats work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from controller.engine.config import EngineSettings
from controller.engine.gauges import StoreGauges
from controller.engine.store import StoreBackend, StoreError
from controller.engine.work_queue import WorkItem, WorkQueue

log = logging.getLogger(__name__)


class ClaimRecovery:
    """Queues the undecided alerts a shared store hands this replica; see the module docstring."""

    def __init__(self, settings: EngineSettings, store: StoreBackend, queue: WorkQueue, gauges: StoreGauges) -> None:
        self._settings = settings
        self._store = store
        self._queue = queue
        self._gauges = gauges

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._settings.claim_interval_s)
            try:
                await self.claim_once()
            except StoreError as exc:
                log.warning(
                    "store unavailable; claiming abandoned alerts skipped this round", extra={"error": str(exc)}
                )

    async def claim_once(self) -> int:
        """Claim and queue what no live replica holds; how many were queued."""
        pending = await asyncio.to_thread(self._store.undecided_alerts)
        queued = 0
        for alert in pending:
            if not self._queue.holds(alert.alert_id):
                self._queue.put(WorkItem(alert.alert_id, alert.event))
                queued += 1
        if queued:
            log.info("claimed alerts another replica left undecided", extra={"count": queued})
        return queued


class Singleton:
    """`run(loop)`: `run_as_singleton` for one lock name; `holding` says whether this replica holds it now."""

    def __init__(self, store: StoreBackend, name: str, check_interval_s: float) -> None:
        self.store = store
        self.name = name
        self.check_interval_s = check_interval_s
        self.holding = False

    async def run(self, loop: Callable[[], Coroutine[Any, Any, None]]) -> None:
        await run_as_singleton(self.store, self.name, loop, self.check_interval_s, self)


async def run_as_singleton(
    store: StoreBackend,
    name: str,
    loop: Callable[[], Coroutine[Any, Any, None]],
    check_interval_s: float,
    state: Singleton | None = None,
) -> None:
    """Run `loop()` while this process holds the store's singleton lock `name`; until cancelled."""
    while True:
        try:
            lock = await asyncio.to_thread(store.singleton, name)
        except StoreError as exc:
            log.warning("cannot ask for a singleton lock", extra={"lock": name, "error": str(exc)})
            lock = None
        if lock is None:
            await asyncio.sleep(check_interval_s)
            continue
        log.info("this replica runs the singleton loop", extra={"lock": name})
        task = asyncio.create_task(loop(), name=f"trm-sre-singleton-{name}")
        if state is not None:
            state.holding = True
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=check_interval_s)
                if not task.done() and not await asyncio.to_thread(lock.held):
                    log.warning("lost a singleton lock; another replica takes over", extra={"lock": name})
                    break
        finally:
            if state is not None:
                state.holding = False
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            await asyncio.to_thread(lock.release)
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.error("singleton loop failed", extra={"lock": name, "error": str(task.exception())})
