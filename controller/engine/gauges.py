"""The outbox-depth and pending-approvals gauges, re-read from the store after the changes that move them.

The rare changes (a failed or dead-lettered delivery, an approval, a cancellation) re-read them at once
(`refresh`); the hot path (a decision committed, an event delivered: hundreds a second under load) asks for
a trailing re-read instead (`refresh_soon`), at most one per `REFRESH_SOON_S`, so an alert costs no store
read for its gauges and the gauges are at most that stale.
"""

from __future__ import annotations

import asyncio

from controller.engine.store import Store, StoreError
from controller.observability.metrics import Metrics

#: How stale the gauges may be after a hot-path change (one store read per this, however many changes).
REFRESH_SOON_S = 1.0


class StoreGauges:
    """Re-reads the outbox depth and pending approvals; the last outbox depth read is kept for the outbox."""

    def __init__(self, store: Store, metrics: Metrics) -> None:
        self._store = store
        self._metrics = metrics
        self._refreshing = False
        self._dirty = False
        self._soon: asyncio.TimerHandle | None = None
        self._soon_task: asyncio.Task[None] | None = None
        #: Pending outbox entries at the last refresh.
        self.outbox_depth = 0

    async def refresh(self) -> None:
        """Re-read the outbox depth and pending approvals; concurrent calls coalesce into one more read."""
        if self._refreshing:
            self._dirty = True
            return
        self._refreshing = True
        try:
            while True:
                self._dirty = False
                depth, approvals = await asyncio.to_thread(self._values)
                self.outbox_depth = depth
                self._metrics.outbox_depth.set(depth)
                self._metrics.approvals_pending.set(approvals)
                if not self._dirty:
                    break
        except StoreError:
            pass  # refreshed on the next change
        finally:
            self._refreshing = False

    def refresh_soon(self) -> None:
        """A re-read within `REFRESH_SOON_S`, shared with every other change until it runs."""
        if self._soon is None:
            self._soon = asyncio.get_running_loop().call_later(REFRESH_SOON_S, self._refresh_now)

    def _refresh_now(self) -> None:
        self._soon = None
        self._soon_task = asyncio.create_task(self.refresh(), name="trm-sre-gauges")

    def close(self) -> None:
        """Stopping: no trailing re-read any more."""
        if self._soon is not None:
            self._soon.cancel()
            self._soon = None
        if self._soon_task is not None:
            self._soon_task.cancel()
            self._soon_task = None

    def _values(self) -> tuple[int, int]:
        return self._store.outbox_depth(), self._store.pending_approvals()
