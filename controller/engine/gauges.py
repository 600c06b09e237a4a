"""The outbox-depth and pending-approvals gauges, re-read from the store after every change that moves them."""

from __future__ import annotations

import asyncio

from controller.engine.store import Store, StoreError
from controller.observability.metrics import Metrics


class StoreGauges:
    """Re-reads the outbox depth and pending approvals; the last outbox depth read is kept for the outbox."""

    def __init__(self, store: Store, metrics: Metrics) -> None:
        self._store = store
        self._metrics = metrics
        self._refreshing = False
        self._dirty = False
        #: Pending outbox entries at the last refresh (the outbox replays a backlog early when it is > 1).
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

    def _values(self) -> tuple[int, int]:
        return self._store.outbox_depth(), self._store.pending_approvals()
