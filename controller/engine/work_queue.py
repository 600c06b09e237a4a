"""The alerts waiting for a decision: admission fills the queue, the decision workers drain it.

The queue itself is unbounded; `controller.engine.admission` bounds what
enters it (by count and by the seconds of work it represents, from the
`DrainRate` the workers measure). A queued alert is already in the store,
so whatever the queue holds when the process dies is re-queued by the next
start (`Store.undecided_alerts`).
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass
from typing import Any

from controller.schemas.alerts import AlertEvent
from controller.schemas.decision import Decision
from controller.schemas.policy import Policy


@dataclass
class WorkItem:
    """One firing alert to decide; the decision is kept if only its commit has to be retried."""

    alert_id: int
    event: AlertEvent
    policy: Policy | None = None
    decision: Decision | None = None
    commit_failures: int = 0
    # The span that stored the alert (an opentelemetry SpanContext; None when tracing is off or after a restart).
    trace_parent: Any = None


class DrainRate:
    """Decisions per second while every worker is busy: what a queued alert can expect.

    Measured only while alerts wait in the queue (a free worker would have
    taken them), so a quiet hour does not make the controller look slow;
    between backlogs the last measurement is kept. Completions come in
    bursts (a model batch finishes many at once), hence a window, not gaps.
    """

    _WINDOW_S = 5.0
    _MIN_SAMPLES = 16

    def __init__(self, assumed_per_s: float) -> None:
        self.per_s = max(assumed_per_s, 1e-3)
        self._times: collections.deque[float] = collections.deque()

    def completed(self, now: float, backlog: bool) -> None:
        if not backlog:
            self._times.clear()  # the next gap would include idle time
            return
        self._times.append(now)
        while now - self._times[0] > self._WINDOW_S:
            self._times.popleft()
        span = now - self._times[0]
        if len(self._times) >= self._MIN_SAMPLES and span > 0:
            self.per_s = (len(self._times) - 1) / span

    def seconds_for(self, alerts: int) -> float:
        return alerts / self.per_s


class WorkQueue:
    """The queue of `WorkItem`s, the alerts it holds (queued or being decided) and how fast it drains."""

    def __init__(self, assumed_decisions_per_s: float) -> None:
        self._items: asyncio.Queue[WorkItem] = asyncio.Queue()
        # Alert ids queued or being decided, so a restart's recovery does not queue one a second time.
        self._alerts: set[int] = set()
        self.drain_rate = DrainRate(assumed_decisions_per_s)

    def put(self, work: WorkItem) -> None:
        self._alerts.add(work.alert_id)
        self._items.put_nowait(work)

    def put_back(self, work: WorkItem) -> None:
        """Queue again an item whose commit is retried (its alert was never released)."""
        self._items.put_nowait(work)

    async def get(self) -> WorkItem:
        return await self._items.get()

    def task_done(self) -> None:
        self._items.task_done()

    def release(self, alert_id: int) -> None:
        """The alert is handled (or given up until the next start): no longer held."""
        self._alerts.discard(alert_id)

    def holds(self, alert_id: int) -> bool:
        return alert_id in self._alerts

    def qsize(self) -> int:
        return self._items.qsize()

    def empty(self) -> bool:
        return self._items.empty()
