"""Delivery: every outbox entry the store holds is sent to its sink until delivered or dead-lettered.

A freshly committed entry is sent at once (`deliver_soon`: the sink client
retries it `delivery_attempts` times with backoff). Its result is settled in
the store: delivered, left pending for the replay loop, or dead-lettered (not
retryable, or still undelivered after `outbox_max_age_s`; the policy's status
records the dead letter). Whatever a sink outage left pending is replayed by
the outbox loop every `redeliver_interval_s`, one entry at a time per sink,
oldest first, so a sink still down costs one probe per round; a delivery
that succeeds wakes the loop to replay the backlog at once.

An entry is claimed (`_delivering`) by at most one task at a time, so the
immediate send and the replay loop never send it twice concurrently. A fresh
entry is sent as committed, without reading the store (`deliver_new`); the
replay loop may have found it pending and settled it in the moment between
its commit and that send (on SQLite a fresh entry is due at once), so the
entries settled lately are remembered (`_settled`) and not sent again. A
consumer still de-duplicates by CloudEvent id, as after a crash.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.trace import SpanKind

from controller.engine.coalesce import Coalescer
from controller.engine.config import EngineSettings
from controller.engine.delivery import JSONL_SINK_FILENAME, DeliveryResult, SinkClient
from controller.engine.gauges import StoreGauges
from controller.engine.lifecycle import Lifecycle
from controller.engine.policy_stats import PolicyStatusRecorder
from controller.engine.store import OutboxEntry, Store, StoreError
from controller.observability import tracing
from controller.observability.logging import correlation
from controller.observability.metrics import Metrics
from controller.schemas.decision import LAMBDA_TRIGGER

log = logging.getLogger(__name__)

# How many due outbox entries one replay round reads (more are read in the next, immediate, round).
_REPLAY_BATCH = 500
# Delivered marks per store commit: the deliveries that finish while one commit runs share the next.
_DELIVERED_MARKS_PER_COMMIT = 500
# Event ids settled lately (delivered or dead-lettered), remembered so a fresh entry's send-as-committed does
# not repeat what the replay loop already did; the gap it covers is a commit's hand-back, well under a second.
_SETTLED_REMEMBERED = 10_000


class OutboxSender:
    """Sends outbox entries now (`deliver_soon`) and replays what is left pending (`run`); see the module docstring."""

    def __init__(
        self,
        settings: EngineSettings,
        store: Store,
        gauges: StoreGauges,
        recorder: PolicyStatusRecorder,
        metrics: Metrics,
        lifecycle: Lifecycle,
        clock: Callable[[], float],
    ) -> None:
        self._settings = settings
        self._store = store
        self._gauges = gauges
        self._recorder = recorder
        self._metrics = metrics
        self._lifecycle = lifecycle
        self._clock = clock
        self._sink: SinkClient | None = None
        self._delivering: set[str] = set()  # event ids claimed by a delivery task
        self._settled: collections.deque[str] = collections.deque(maxlen=_SETTLED_REMEMBERED)
        self._settled_ids: set[str] = set()
        self._deliveries: set[asyncio.Task[Any]] = set()
        self._wake = asyncio.Event()
        self._delivery_slots = asyncio.Semaphore(max(settings.delivery_concurrency, 1))
        # A delivery failed since the sink last answered: the next success replays the backlog at once.
        self._backlog = False
        self._delivered_marks: Coalescer[tuple[str, int, int | None, float], None] = Coalescer(
            self._mark_delivered, max_items=_DELIVERED_MARKS_PER_COMMIT, name="trm-sre-delivered-marks"
        )

    # lifecycle (driven by the pipeline)

    def open(self) -> None:
        """Create the sink client; deliveries go through it until `close`."""
        self._sink = SinkClient(
            default_sink=self._settings.sink,
            jsonl_path=self._store.state_dir / JSONL_SINK_FILENAME,
            overrides=self._settings.ce_overrides,
            timeout_s=self._settings.sink_timeout_s,
            attempts=self._settings.delivery_attempts,
            backoff_initial_s=self._settings.backoff_initial_s,
            backoff_max_s=self._settings.backoff_max_s,
        )

    async def close(self) -> None:
        await self._delivered_marks.aclose()
        if self._sink is not None:
            await self._sink.aclose()
            self._sink = None

    @property
    def busy(self) -> bool:
        """An entry is being delivered right now."""
        return bool(self._delivering)

    def delivery_tasks(self) -> list[asyncio.Task[Any]]:
        """The immediate deliveries still running (the pipeline cancels them when it stops)."""
        return list(self._deliveries)

    def forget_deliveries(self) -> None:
        """After the pipeline cancelled them: nothing is claimed any more (pending entries stay in the store)."""
        self._deliveries = set()
        self._delivering.clear()

    def wake(self) -> None:
        """Replay what is due now, not in a round's time."""
        self._wake.set()

    # sending

    def deliver_soon(self, event_ids: Sequence[str]) -> None:
        """Send these entries now (each read from the store first: it may no longer be pending)."""
        self._deliver_now([(event_id, None) for event_id in event_ids])

    def deliver_new(self, entries: Sequence[OutboxEntry]) -> None:
        """Send entries just committed now, as committed: no store read between the commit and the send."""
        self._deliver_now([(entry.event_id, entry) for entry in entries])

    def _deliver_now(self, claims: Sequence[tuple[str, OutboxEntry | None]]) -> None:
        if not self._lifecycle.running or self._sink is None:
            self._wake.set()
            return
        for event_id, entry in claims:
            if event_id not in self._delivering and event_id not in self._settled_ids:
                self._delivering.add(event_id)
                task = asyncio.create_task(self._deliver_claimed(event_id, attempts=None, entry=entry))
                self._deliveries.add(task)
                task.add_done_callback(self._deliveries.discard)

    async def _deliver_claimed(
        self, event_id: str, attempts: int | None, entry: OutboxEntry | None = None
    ) -> DeliveryResult | None:
        """Deliver an entry this task has claimed in `_delivering`; None if it is no longer pending.

        `entry`: the entry as just committed (claimed before anything else could send or settle it);
        None: read it from the store.
        """
        try:
            async with self._delivery_slots:
                if entry is None:
                    entry = await asyncio.to_thread(self._store.outbox_entry, event_id)
                if entry is None or entry.state != "pending" or self._sink is None:
                    return None
                with (
                    correlation(entry.decision_id),
                    tracing.span(
                        "delivery",
                        parent=tracing.incoming_parent((entry.attributes.get("traceparent"), None)),
                        kind=SpanKind.PRODUCER,
                        attributes={"cloudevents.event_id": entry.event_id, "cloudevents.event_type": entry.type},
                    ),
                ):
                    result = await self._sink.deliver(entry, attempts)
                    tracing.set_attributes({"trm_sre.delivered": result.delivered, "trm_sre.attempts": result.attempts})
                    await self._settle(entry, result)
            return result
        except StoreError as exc:
            self._backlog = True
            log.warning(
                "store unavailable during delivery; the replay loop retries",
                extra={"event_id": event_id, "error": str(exc)},
            )
            return None
        finally:
            self._delivering.discard(event_id)

    async def _settle(self, entry: OutboxEntry, result: DeliveryResult) -> None:
        """Record a delivery's result: delivered, left pending for the replay loop, or dead-lettered."""
        now = self._clock()
        if result.retries:
            self._count(entry, "retried", result.retries)
        if result.delivered:
            await self._delivered_marks.submit((entry.event_id, result.attempts, result.status, now))
            self._remember_settled(entry.event_id)
            self._count(entry, "sent")
            log.info("event delivered", extra={"event_id": entry.event_id, "type": entry.type, "status": result.status})
            if self._backlog:
                self._backlog = False
                self._wake.set()  # the sink answers again: replay the backlog now, not in a round's time
            self._gauges.refresh_soon()
            return
        if not result.retryable or now - entry.created_at >= self._settings.outbox_max_age_s:
            reason = (
                result.error
                if not result.retryable
                else f"undelivered after {self._settings.outbox_max_age_s:.0f}s: {result.error}"
            )
            dead = await asyncio.to_thread(
                self._store.mark_dead, entry.event_id, result.attempts, result.status, reason, now
            )
            self._remember_settled(entry.event_id)
            if dead:
                self._count(entry, "dead_lettered")
                log.error(
                    "event dead-lettered", extra={"event_id": entry.event_id, "type": entry.type, "error": reason}
                )
                row = await asyncio.to_thread(self._store.decision, entry.decision_id)
                if row is not None:
                    message = f"dead letter: {entry.type} {entry.event_id} for decision {entry.decision_id}: {reason}"
                    self._recorder.record(row.decision.policy, row.decision, "dead_letter", message[:1000])
        else:
            next_at = now + self._settings.redeliver_interval_s
            await asyncio.to_thread(
                self._store.mark_attempt_failed, entry.event_id, result.attempts, result.status, result.error, next_at
            )
            self._backlog = True
            self._count(entry, "failed")
            log.warning(
                "delivery failed; left for the replay loop", extra={"event_id": entry.event_id, "error": result.error}
            )
        await self._gauges.refresh()

    def _remember_settled(self, event_id: str) -> None:
        if len(self._settled) == self._settled.maxlen:
            self._settled_ids.discard(self._settled[0])
        self._settled.append(event_id)
        self._settled_ids.add(event_id)

    def _mark_delivered(self, marks: Sequence[tuple[str, int, int | None, float]], _key: object) -> list[None]:
        """Runs in a thread: the delivered marks that waited, in one commit."""
        self._store.mark_delivered_many(marks)
        return [None] * len(marks)

    def _count(self, entry: OutboxEntry, result: str, amount: int = 1) -> None:
        self._metrics.deliveries.labels(type=entry.type, result=result).inc(amount)
        if entry.type == LAMBDA_TRIGGER:
            self._metrics.triggers.labels(result=result).inc(amount)

    # replaying

    async def run(self) -> None:
        """The outbox loop: a replay round every `redeliver_interval_s`, or at once when woken."""
        while True:
            with contextlib.suppress(TimeoutError):  # woken early, or a round's time passed
                await asyncio.wait_for(self._wake.wait(), timeout=self._settings.redeliver_interval_s)
            self._wake.clear()
            try:
                await self.replay_due()
            except StoreError as exc:
                log.warning("store unavailable; outbox replay skipped this round", extra={"error": str(exc)})

    async def replay_due(self) -> None:
        """One replay round: per sink, send due entries in order, stopping at the first retryable failure."""
        if self._sink is None:
            return
        due = await asyncio.to_thread(self._store.due_outbox, self._clock(), _REPLAY_BATCH)
        by_sink: dict[str | None, list[OutboxEntry]] = {}
        for entry in due:
            by_sink.setdefault(self._sink.sink_for(entry), []).append(entry)
        completed = await asyncio.gather(*(self._replay_sink(entries) for entries in by_sink.values()))
        if len(due) == _REPLAY_BATCH and all(completed):
            self._wake.set()  # more are due than one round reads

    async def _replay_sink(self, entries: list[OutboxEntry]) -> bool:
        """Single attempts, oldest first; False if the sink is still failing (the rest waits a round)."""
        for entry in entries:
            if entry.event_id in self._delivering:
                continue
            self._delivering.add(entry.event_id)
            result = await self._deliver_claimed(entry.event_id, attempts=1)
            if result is not None and not result.delivered and result.retryable:
                return False
        return True
