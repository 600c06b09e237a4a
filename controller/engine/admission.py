"""Admission: alerts are recorded durably (one group commit) before they are acknowledged, then queued.

`Admission.ingest` refuses (`Overloaded`, 503 with Retry-After) while the
engine is stopping or once the waiting alerts would be more work than the
workers can do soon: by count (`queue_size`) and by time (`max_queue_wait_s`
at the `DrainRate` the workers measure). An accepted batch is recorded in one
durable transaction shared with the webhooks that arrive meanwhile (a group
commit: one fsync for all of them); only then are its new firing incidents
queued and the caller answered. A failed commit raises `StoreUnavailable`:
nothing was acknowledged, and Alertmanager retries.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from controller.engine.coalesce import Coalescer
from controller.engine.config import EngineSettings
from controller.engine.errors import Overloaded, StoreUnavailable
from controller.engine.gauges import StoreGauges
from controller.engine.lifecycle import Lifecycle
from controller.engine.store import RecordedAlert, Store, StoreError
from controller.engine.trace_hooks import link_resends
from controller.engine.work_queue import WorkItem, WorkQueue
from controller.observability import tracing
from controller.observability.metrics import Metrics
from controller.schemas.alerts import AlertEvent

log = logging.getLogger(__name__)

# Alerts per group commit; one webhook's payload is never split (Alertmanager sends at most a few hundred).
_GROUP_COMMIT_MAX_ALERTS = 2000


@dataclass(frozen=True)
class IngestResult:
    accepted: int
    new_incidents: int
    duplicates: int
    resolved: int


class Admission:
    """Bounds, records and queues incoming alert batches; see the module docstring."""

    def __init__(
        self,
        settings: EngineSettings,
        store: Store,
        queue: WorkQueue,
        gauges: StoreGauges,
        metrics: Metrics,
        lifecycle: Lifecycle,
        clock: Callable[[], float],
    ) -> None:
        self._settings = settings
        self._store = store
        self._queue = queue
        self._gauges = gauges
        self._metrics = metrics
        self._lifecycle = lifecycle
        self._clock = clock
        self._reserved = 0  # queue slots promised to ingests still committing
        # Group commit: the webhooks that arrive while one durable commit (an fsync) runs share the next.
        self._alert_commits: Coalescer[list[AlertEvent], list[RecordedAlert]] = Coalescer(
            self._record_payloads, max_items=_GROUP_COMMIT_MAX_ALERTS, size=len, name="trm-sre-alert-commits"
        )

    async def ingest(self, events: list[AlertEvent]) -> IngestResult:
        """Record every event in one transaction, then queue the new incidents; see the module docstring."""
        if not events:
            return IngestResult(0, 0, 0, 0)
        if self._lifecycle.stopping:
            raise Overloaded("the controller is shutting down", self._settings.overload_retry_after_s)
        firing = sum(1 for e in events if e.alert.status == "firing")
        waiting = self._queue.qsize() + self._reserved
        drain_rate = self._queue.drain_rate
        # An oversized batch is still taken when nothing else waits, or it could never get in.
        if waiting:
            wait_s = drain_rate.seconds_for(waiting + firing)
            if waiting + firing > self._settings.queue_size or wait_s > self._settings.max_queue_wait_s:
                raise Overloaded(
                    f"{waiting} alerts are waiting for a decision (about {wait_s:.0f} s of work at "
                    f"{drain_rate.per_s:.0f} decisions/s)",
                    self._settings.overload_retry_after_s,
                )
        # Reserved before the first await: the shielded task below starts a loop tick later, and concurrent
        # ingests checked meanwhile must see these slots as taken (or a flood would pass the bound at once).
        self._reserved += firing
        # Shielded: once the transaction may commit, the enqueue after it must run even if the caller goes away.
        return await asyncio.shield(self._record_and_enqueue(events, firing))

    async def _record_and_enqueue(self, events: Sequence[AlertEvent], firing: int) -> IngestResult:
        """Record, then queue; `firing` queue slots were reserved by `ingest` and are released here."""
        try:
            with tracing.span("store.commit", attributes={"trm_sre.alerts": len(events)}):
                records = await self._alert_commits.submit(list(events))
        except StoreError as exc:
            raise StoreUnavailable(str(exc)) from exc
        finally:
            self._reserved -= firing
        trace_parent = tracing.current_span_context()  # the ingest span: the decisions continue its trace
        new = duplicates = resolved = cancelled = 0
        for record in records:
            self._metrics.alerts_received.labels(source=record.event.source, status=record.event.alert.status).inc()
            if record.alert_id is not None:
                self._queue.put(WorkItem(record.alert_id, record.event, trace_parent=trace_parent))
            if record.kind == "new":
                new += 1
            elif record.kind == "resolved":
                resolved += 1
                cancelled += record.cancelled_approvals
            else:
                duplicates += 1
                self._metrics.dedup_hits.labels(kind="incident").inc()
            if record.cancelled_approvals or record.cancelled_events:
                self._metrics.actions.labels(action="approval_cancelled").inc(record.cancelled_approvals)
                log.info(
                    "alert resolved: cancelled what was still pending",
                    extra={
                        "incident": record.event.incident_key,
                        "approvals": record.cancelled_approvals,
                        "events": record.cancelled_events,
                    },
                )
        if cancelled or any(r.cancelled_events for r in records):
            await self._gauges.refresh()
        if duplicates and tracing.enabled():
            try:
                await asyncio.to_thread(link_resends, self._store, records)
            except StoreError as exc:  # only the links are lost; the alerts are recorded
                log.warning("could not link re-sent alerts to their traces", extra={"error": str(exc)})
        return IngestResult(len(events), new, duplicates, resolved)

    def _record_payloads(self, payloads: Sequence[list[AlertEvent]], _key: object) -> list[list[RecordedAlert]]:
        """Runs in a thread: several webhooks' alerts in one transaction, each caller's records handed back.

        The same as recording each payload in its own transaction, in arrival order: one payload's
        alert re-sent in a later one is a duplicate either way. If the commit fails, every payload in
        it is unrecorded and each caller answers 503.
        """
        records = self._store.record_alerts([e for events in payloads for e in events], self._clock())
        answers, start = [], 0
        for events in payloads:
            answers.append(records[start : start + len(events)])
            start += len(events)
        return answers
