"""The engine: alerts in, decisions made once per incident, CloudEvents out through a durable outbox.

One alert's way through:

1. `ingest` records a batch of alert events in one durable store
   transaction and only then returns (the edge answers 2xx after that, so an
   acknowledged alert is never lost); webhooks that arrive together share
   one transaction (a group commit: one fsync for all of them). New firing incidents are queued for the workers;
   re-sends are counted and dropped; resolved alerts are recorded against
   their incident and may cancel what is still pending.
2. A worker selects the policy, runs the decision chain, and commits the
   decision together with everything it emits (outbox entries, cooldown,
   approval) in one transaction: a crash before the commit re-decides the
   same alert into the same deterministic id, a crash after it re-sends the
   same CloudEvent ids.
3. Delivery sends each new outbox entry at once (with retries); whatever is
   still pending after a sink outage is replayed by the outbox loop, one
   probe per sink per round, until it is delivered or dead-lettered.
4. A timer loop expires approval requests nobody answered.
5. A retention loop deletes what is finished and older than `retention_days`
   (`sweep_retention`), in short transactions, so the store stops growing.

The policy's `actions` (dry run, approval, cooldown, storm breaker) are
applied by the pure `controller.engine.guards.plan_actions`, inside the commit
transaction. Everything blocking (SQLite, the file sink) runs in worker
threads so the event loop (shared with the HTTP server and the kopf
operator) stays responsive.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from controller.engine.guards import ActionPlan, GuardState, plan_actions
from controller.engine.coalesce import Coalescer
from controller.decision.chain import StageClients, decide, select_policy
from controller.engine.delivery import (
    JSONL_SINK_FILENAME,
    DeliveryResult,
    SinkClient,
    approval_entry,
    escalation_entry,
    trigger_entry,
)
from controller.observability.logging import correlation
from controller.observability.metrics import Metrics
from controller.decision.policy_index import PolicyIndex
from controller.schemas.alerts import AlertEvent
from controller.schemas.decision import LAMBDA_TRIGGER, Decision
from controller.schemas.policy import Policy
from controller.engine.policy_stats import PolicyStatusRecorder
from controller.engine.store import ApprovalRow, DecisionRecord, OutboxEntry, RecordedAlert, Store, StoreError
from runbooks import Catalog

log = logging.getLogger(__name__)

# Alerts per group commit; one webhook's payload is never split (Alertmanager sends at most a few hundred).
_GROUP_COMMIT_MAX_ALERTS = 2000
# How many due outbox entries one replay round reads (more are read in the next, immediate, round).
_REPLAY_BATCH = 500
# Incidents per retention-sweep transaction; also bounds the SQL variables one DELETE carries.
_RETENTION_CHUNK_MAX = 500
# Backoff for a decision whose commit failed because the store was unavailable.
_COMMIT_RETRY_INITIAL_S = 0.5
_COMMIT_RETRY_MAX_S = 30.0


class Overloaded(Exception):
    """The work queue is full (or the engine is stopping): answer 503 with Retry-After."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StoreUnavailable(Exception):
    """The store cannot record right now (disk full, read-only, locked, closed); nothing was acknowledged."""


@dataclass(frozen=True)
class PipelineSettings:
    """How the engine delivers and how much it takes on. Times in seconds."""

    #: K_SINK: where events go when the policy names no sink. None: appended to `<state dir>/triggers.jsonl`.
    sink: str | None = None
    #: `source` of every CloudEvent we emit.
    ce_source: str = "/trm-sre"
    #: K_CE_OVERRIDES extensions (parsed by the edge), added to every event at send time.
    ce_overrides: dict[str, str] = field(default_factory=dict)
    #: Alerts waiting for a decision; beyond this `ingest` raises Overloaded (Alertmanager retries on 503).
    queue_size: int = 10_000
    #: Also refuse once the waiting alerts would take longer than this to decide at the rate measured
    #: under backlog: an alert acknowledged now should still be acted on within a minute, and one
    #: answered 503 is retried by Alertmanager (a fixed count means minutes of work on a slow node).
    #: 45 s leaves a quarter of that minute for the rate to have been measured too high and for delivery.
    max_queue_wait_s: float = 45.0
    #: The decision rate assumed until one has been measured under backlog.
    assumed_decisions_per_s: float = 50.0
    #: Concurrent decisions. Each mostly waits (the model batcher, a thread hand-off, an LLM server),
    #: and concurrent TRM asks become one batch, so this is also the largest batch the model sees.
    workers: int = 32
    #: Requests per delivery before the entry is left to the replay loop; Knative's default retry is similar.
    delivery_attempts: int = 6
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 10.0
    #: How often the outbox loop replays what a sink outage left pending.
    redeliver_interval_s: float = 5.0
    sink_timeout_s: float = 5.0
    #: An event still undelivered after this long is dead-lettered (a remediation an hour late is a new risk).
    outbox_max_age_s: float = 3600.0
    #: How often unanswered approval requests are checked for expiry.
    approval_check_interval_s: float = 1.0
    #: Concurrent requests to sinks.
    delivery_concurrency: int = 16
    #: Retry-After when overloaded or stopping.
    overload_retry_after_s: int = 5
    #: Finished incidents (with their alerts, decision, outbox entries, approval, responses) and ended
    #: cooldowns are deleted once idle this many days; 0 keeps everything. What is never deleted, and why
    #: this must exceed Alertmanager's repeat_interval: `Store.sweep_finished_incidents`.
    retention_days: int = 30
    #: How often the retention sweep runs, and how soon after start the first one does.
    retention_interval_s: float = 600.0
    retention_first_sweep_s: float = 60.0
    #: Incidents deleted per transaction (about five rows each; at most 500): the store's lock, which
    #: the webhook path shares, is held for one chunk at a time, a few milliseconds.
    retention_chunk: int = 200


@dataclass(frozen=True)
class IngestResult:
    accepted: int
    new_incidents: int
    duplicates: int
    resolved: int


@dataclass
class _Work:
    """One firing alert to decide; the decision is kept if only its commit has to be retried."""

    alert_id: int
    event: AlertEvent
    policy: Policy | None = None
    decision: Decision | None = None
    commit_failures: int = 0


@dataclass(frozen=True)
class _Committed:
    decision: Decision
    policy: Policy
    plan: ActionPlan
    event_ids: tuple[str, ...]


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


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Pipeline:
    """See the module docstring. One per process; `start()` inside the running event loop."""

    def __init__(
        self,
        settings: PipelineSettings,
        store: Store,
        index: PolicyIndex,
        catalog: Catalog,
        clients: StageClients,
        recorder: PolicyStatusRecorder,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._store = store
        self._index = index
        self._catalog = catalog
        self._clients = clients
        self._recorder = recorder
        self._metrics = metrics
        self._clock = clock
        self._queue: asyncio.Queue[_Work] = asyncio.Queue()
        self._queued_alerts: set[int] = set()
        self._reserved = 0  # queue slots promised to ingests still committing
        self._in_flight = 0
        self._commit_retries: dict[int, asyncio.TimerHandle] = {}
        self._delivering: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._deliveries: set[asyncio.Task[Any]] = set()
        self._wake_outbox = asyncio.Event()
        self._sink: SinkClient | None = None
        self._delivery_slots = asyncio.Semaphore(max(settings.delivery_concurrency, 1))
        self._outbox_depth = 0
        self._drain_rate = DrainRate(settings.assumed_decisions_per_s)
        # Group commit: the webhooks that arrive while one durable commit (an fsync) runs share the next.
        self._alert_commits: Coalescer[list[AlertEvent], list[RecordedAlert]] = Coalescer(
            self._record_payloads, max_items=_GROUP_COMMIT_MAX_ALERTS, size=len, name="trm-sre-alert-commits"
        )
        self._gauges_refreshing = False
        self._gauges_dirty = False
        self._running = False
        self._stopping = False

    # lifecycle

    async def start(self) -> None:
        """Start workers, the outbox and approval loops; re-queue what a crash left undecided."""
        if self._running:
            return
        self._sink = SinkClient(
            default_sink=self._settings.sink,
            jsonl_path=self._store.state_dir / JSONL_SINK_FILENAME,
            overrides=self._settings.ce_overrides,
            timeout_s=self._settings.sink_timeout_s,
            attempts=self._settings.delivery_attempts,
            backoff_initial_s=self._settings.backoff_initial_s,
            backoff_max_s=self._settings.backoff_max_s,
        )
        try:
            pending = await asyncio.to_thread(self._store.undecided_alerts)
        except StoreError as exc:
            await self._sink.aclose()
            raise StoreUnavailable(f"cannot read undecided alerts: {exc}") from exc
        recovered = [p for p in pending if p.alert_id not in self._queued_alerts]
        for alert in recovered:
            self._enqueue(_Work(alert.alert_id, alert.event))
        if recovered:
            log.info("re-queued alerts recorded before a restart but never decided", extra={"count": len(recovered)})
        self._running = True
        self._stopping = False
        self._tasks = [
            asyncio.create_task(self._worker(), name=f"trm-sre-worker-{i}")
            for i in range(max(self._settings.workers, 1))
        ]
        self._tasks.append(asyncio.create_task(self._outbox_loop(), name="trm-sre-outbox"))
        self._tasks.append(asyncio.create_task(self._approval_loop(), name="trm-sre-approvals"))
        if self._settings.retention_days > 0:
            self._tasks.append(asyncio.create_task(self._retention_loop(), name="trm-sre-retention"))
        self._wake_outbox.set()  # replay whatever the last run left pending, now
        await self._refresh_gauges()

    async def stop(self, drain_timeout_s: float = 20) -> None:
        """Refuse new alerts, finish queued and in-flight work, try pending deliveries once, stop.

        Whatever does not finish within `drain_timeout_s` stays in the store
        (undecided alerts, pending outbox entries) for the next start. The
        store itself is left open: whoever opened it closes it.
        """
        if not self._running:
            return
        self._stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(drain_timeout_s, 0)
        if drain_timeout_s > 0:
            await self.wait_idle(drain_timeout_s)
            remaining = deadline - loop.time()
            if remaining > 0:
                # Whatever is not delivered in time stays pending for the next start.
                with contextlib.suppress(TimeoutError, StoreError):
                    await asyncio.wait_for(self._replay_due(), remaining)
        for handle in self._commit_retries.values():
            handle.cancel()
        self._commit_retries.clear()
        tasks = [*self._tasks, *self._deliveries]
        for task in tasks:
            task.cancel()
        if tasks:
            # Bounded: a task stuck in a worker thread (SQLite waiting on a lock, say) must not
            # hold the shutdown past the pod's grace period; its work is still in the store.
            _, stuck = await asyncio.wait(tasks, timeout=5)
            if stuck:
                log.warning("stopping with %d task(s) still running in worker threads", len(stuck))
        self._tasks, self._deliveries = [], set()
        self._delivering.clear()
        self._in_flight = 0
        if self._sink is not None:
            await self._sink.aclose()
            self._sink = None
        self._running = False

    async def wait_idle(self, timeout_s: float) -> bool:
        """True once nothing is queued, deciding, waiting to re-commit or being delivered."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            if self._idle():
                return True
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.01)

    def _idle(self) -> bool:
        return self._queue.empty() and not self._in_flight and not self._commit_retries and not self._delivering

    def readiness(self) -> tuple[bool, list[str]]:
        reasons: list[str] = []
        if not self._store.is_open:
            reasons.append("the store is closed")
        if not self._running:
            reasons.append("the pipeline is not running")
        elif self._stopping:
            reasons.append("the pipeline is stopping")
        if self._queue.qsize() >= self._settings.queue_size:
            reasons.append(f"the work queue is full ({self._queue.qsize()} alerts waiting)")
        return not reasons, reasons

    # ingest

    async def ingest(self, events: list[AlertEvent]) -> IngestResult:
        """Record every event in one transaction, then queue the new incidents; see the module docstring."""
        if not events:
            return IngestResult(0, 0, 0, 0)
        if self._stopping:
            raise Overloaded("the controller is shutting down", self._settings.overload_retry_after_s)
        firing = sum(1 for e in events if e.alert.status == "firing")
        waiting = self._queue.qsize() + self._reserved
        # An oversized batch is still taken when nothing else waits, or it could never get in.
        if waiting:
            wait_s = self._drain_rate.seconds_for(waiting + firing)
            if waiting + firing > self._settings.queue_size or wait_s > self._settings.max_queue_wait_s:
                raise Overloaded(
                    f"{waiting} alerts are waiting for a decision (about {wait_s:.0f} s of work at "
                    f"{self._drain_rate.per_s:.0f} decisions/s)",
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
            records = await self._alert_commits.submit(list(events))
        except StoreError as exc:
            raise StoreUnavailable(str(exc)) from exc
        finally:
            self._reserved -= firing
        new = duplicates = resolved = cancelled = 0
        for record in records:
            self._metrics.alerts_received.labels(source=record.event.source, status=record.event.alert.status).inc()
            if record.alert_id is not None:
                self._enqueue(_Work(record.alert_id, record.event))
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
            await self._refresh_gauges()
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

    def _enqueue(self, work: _Work) -> None:
        self._queued_alerts.add(work.alert_id)
        self._queue.put_nowait(work)

    # deciding

    async def _worker(self) -> None:
        while True:
            work = await self._queue.get()
            self._in_flight += 1
            try:
                await self._handle(work)
            except StoreError as exc:
                self._retry_commit_later(work, exc)
            except Exception:  # a bug must not kill the worker; the alert stays undecided for the next start
                self._queued_alerts.discard(work.alert_id)
                log.exception("could not handle an alert", extra={"incident": work.event.incident_key})
            finally:
                self._in_flight -= 1
                self._queue.task_done()
                self._drain_rate.completed(time.monotonic(), backlog=not self._queue.empty())

    async def _handle(self, work: _Work) -> None:
        event = work.event
        if work.decision is None or work.policy is None:
            policy = select_policy(event, self._index)
            if policy is None:
                await asyncio.to_thread(self._store.mark_unmatched, work.alert_id, event.incident_key)
                self._queued_alerts.discard(work.alert_id)
                log.info(
                    "no policy matches the alert",
                    extra={"incident": event.incident_key, "alertname": event.alert.alertname},
                )
                return
            work.policy = policy
            work.decision = await self._decide(event, policy)
        with correlation(work.decision.id):
            committed = await asyncio.to_thread(self._commit_decision, work)
            self._queued_alerts.discard(work.alert_id)
            if committed is None:
                log.info("incident already decided; nothing to do", extra={"incident": event.incident_key})
                return
            self._after_commit(committed)
            self._deliver_soon(committed.event_ids)
            await self._refresh_gauges()

    def _retry_commit_later(self, work: _Work, exc: StoreError) -> None:
        work.commit_failures += 1
        delay = min(_COMMIT_RETRY_INITIAL_S * 2 ** (work.commit_failures - 1), _COMMIT_RETRY_MAX_S)
        log.warning(
            "store unavailable; the decision is retried later",
            extra={"incident": work.event.incident_key, "retry_in_s": delay, "error": str(exc)},
        )

        def requeue() -> None:
            self._commit_retries.pop(work.alert_id, None)
            self._queue.put_nowait(work)

        self._commit_retries[work.alert_id] = asyncio.get_running_loop().call_later(delay, requeue)

    async def _decide(self, event: AlertEvent, policy: Policy) -> Decision:
        decision = await decide(event, policy, self._catalog, self._clients)
        for trace in decision.trace:
            self._metrics.stage_latency.labels(stage=trace.stage).observe(trace.latency_ms / 1000)
            if trace.stage == "trm" and trace.confidence is not None:
                self._metrics.trm_confidence.observe(trace.confidence)
        return decision

    def _commit_decision(self, work: _Work) -> _Committed | None:
        """Runs in a thread: read the guards, plan, write the decision and all it emits, atomically."""
        decision, policy, event = work.decision, work.policy, work.event
        assert decision is not None and policy is not None
        actions = policy.spec.actions
        now = self._clock()
        with self._store.transaction(durable=False) as tx:
            if tx.decision_id_for_incident(decision.incident_key) is not None:
                tx.mark_alert_decided(work.alert_id)
                tx.set_incident_state(decision.incident_key, "decided")
                return None
            incident = tx.incident(decision.incident_key)
            guard = GuardState(
                now=now,
                cooldown_until=tx.cooldown_until(decision.target) if decision.function else None,
                budget_used=tx.budget_used(policy.key, now - actions.window_seconds),
                incident_resolved=incident is not None and incident.resolved_at is not None,
            )
            plan = plan_actions(decision, actions, guard)
            tx.insert_decision(
                DecisionRecord(
                    decision,
                    policy.generation,
                    actions.mode,
                    actions.on_resolved,
                    plan.state,
                    plan.reason,
                    plan.budgeted,
                ),
                now,
            )
            approval = self._approval_for(plan, decision, policy, now)
            entries = self._entries_for(plan, decision, event, actions.sink, approval)
            for entry in entries:
                tx.insert_outbox(entry, now)
            if plan.cooldown_until is not None and decision.function:
                tx.set_cooldown(decision.target, plan.cooldown_until, decision.id, policy.key)
            if approval is not None:
                tx.insert_approval(approval)
            tx.mark_alert_decided(work.alert_id)
            tx.set_incident_state(decision.incident_key, "decided")
        return _Committed(decision, policy, plan, tuple(e.event_id for e in entries))

    @staticmethod
    def _approval_for(plan: ActionPlan, decision: Decision, policy: Policy, now: float) -> ApprovalRow | None:
        if plan.approval_expires_at is None:
            return None
        actions = policy.spec.actions
        return ApprovalRow(
            # A random token, not the (guessable) decision id: knowing an alert's labels must not let anyone approve it.
            id=secrets.token_hex(16),
            decision_id=decision.id,
            incident_key=decision.incident_key,
            policy=policy.key,
            on_resolved=actions.on_resolved,
            cooldown_seconds=actions.cooldown_seconds,
            sink=actions.sink,
            state="pending",
            requested_at=now,
            expires_at=plan.approval_expires_at,
            resolved_at=None,
            actor=None,
        )

    def _entries_for(
        self, plan: ActionPlan, decision: Decision, event: AlertEvent, sink: str | None, approval: ApprovalRow | None
    ) -> list[OutboxEntry]:
        source = self._settings.ce_source
        entries: list[OutboxEntry] = []
        for kind in plan.emit:
            if kind == "trigger":
                entries.append(trigger_entry(decision, event, source, sink))
            elif kind == "escalation":
                entries.append(escalation_entry(decision, event, source, sink, plan.escalation_reasons))
            elif kind == "approval" and approval is not None:
                entries.append(
                    approval_entry(decision, event, source, sink, approval.id, _iso(approval.expires_at) or "")
                )
        return entries

    def _after_commit(self, committed: _Committed) -> None:
        """Metrics, the policy's status and the log line for a freshly committed decision."""
        decision, plan, policy = committed.decision, committed.plan, committed.policy
        self._metrics.decisions.labels(stage=decision.stage or "none", outcome=decision.outcome).inc()
        self._metrics.actions.labels(action=plan.action).inc()
        if plan.state == "cooldown":
            self._metrics.dedup_hits.labels(kind="cooldown").inc()
        self._recorder.record(policy.key, decision, "matched")
        if plan.record is not None:
            message = (
                f"{plan.record.replace('_', ' ')}: {plan.reason}; decision {decision.id}"
                if plan.action == "storm_breaker"
                else ""
            )
            self._recorder.record(policy.key, decision, plan.record, message)
        fields = {
            "policy": policy.key,
            "incident": decision.incident_key,
            "alertname": decision.alertname,
            "function": decision.function,
            "parameters": decision.parameters,
            "stage": decision.stage,
            "state": plan.state,
            "reason": plan.reason,
        }
        if plan.state == "dry_run":
            log.info("dry run: nothing emitted", extra=fields)
        elif plan.state == "escalated":
            log.warning("escalated", extra=fields)
        else:
            log.info("decision committed", extra=fields)

    # delivery

    def _deliver_soon(self, event_ids: Sequence[str]) -> None:
        if not self._running or self._sink is None:
            self._wake_outbox.set()
            return
        for event_id in event_ids:
            if event_id not in self._delivering:
                self._delivering.add(event_id)
                task = asyncio.create_task(self._deliver_claimed(event_id, attempts=None))
                self._deliveries.add(task)
                task.add_done_callback(self._deliveries.discard)

    async def _deliver_claimed(self, event_id: str, attempts: int | None) -> DeliveryResult | None:
        """Deliver an entry this task has claimed in `_delivering`; None if it is no longer pending."""
        try:
            async with self._delivery_slots:
                entry = await asyncio.to_thread(self._store.outbox_entry, event_id)
                if entry is None or entry.state != "pending" or self._sink is None:
                    return None
                with correlation(entry.decision_id):
                    result = await self._sink.deliver(entry, attempts)
                    await self._settle(entry, result)
            return result
        except StoreError as exc:
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
            await asyncio.to_thread(self._store.mark_delivered, entry.event_id, result.attempts, result.status, now)
            self._count(entry, "sent")
            log.info("event delivered", extra={"event_id": entry.event_id, "type": entry.type, "status": result.status})
            if self._outbox_depth > 1:
                self._wake_outbox.set()  # the sink answers again: replay the backlog now, not in a round's time
        elif not result.retryable or now - entry.created_at >= self._settings.outbox_max_age_s:
            reason = (
                result.error
                if not result.retryable
                else f"undelivered after {self._settings.outbox_max_age_s:.0f}s: {result.error}"
            )
            if await asyncio.to_thread(
                self._store.mark_dead, entry.event_id, result.attempts, result.status, reason, now
            ):
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
            self._count(entry, "failed")
            log.warning(
                "delivery failed; left for the replay loop", extra={"event_id": entry.event_id, "error": result.error}
            )
        await self._refresh_gauges()

    def _count(self, entry: OutboxEntry, result: str, amount: int = 1) -> None:
        self._metrics.deliveries.labels(type=entry.type, result=result).inc(amount)
        if entry.type == LAMBDA_TRIGGER:
            self._metrics.triggers.labels(result=result).inc(amount)

    async def _outbox_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):  # woken early, or a round's time passed
                await asyncio.wait_for(self._wake_outbox.wait(), timeout=self._settings.redeliver_interval_s)
            self._wake_outbox.clear()
            try:
                await self._replay_due()
            except StoreError as exc:
                log.warning("store unavailable; outbox replay skipped this round", extra={"error": str(exc)})

    async def _replay_due(self) -> None:
        """One replay round: per sink, send due entries in order, stopping at the first retryable failure."""
        if self._sink is None:
            return
        due = await asyncio.to_thread(self._store.due_outbox, self._clock(), _REPLAY_BATCH)
        by_sink: dict[str | None, list[OutboxEntry]] = {}
        for entry in due:
            by_sink.setdefault(self._sink.sink_for(entry), []).append(entry)
        completed = await asyncio.gather(*(self._replay_sink(entries) for entries in by_sink.values()))
        if len(due) == _REPLAY_BATCH and all(completed):
            self._wake_outbox.set()  # more are due than one round reads

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

    # approvals

    async def _approval_loop(self) -> None:
        while True:
            await asyncio.sleep(self._settings.approval_check_interval_s)
            try:
                expired = await asyncio.to_thread(self._expire_approvals)
            except StoreError as exc:
                log.warning("store unavailable; approval expiry skipped this round", extra={"error": str(exc)})
                continue
            if expired:
                self._metrics.actions.labels(action="approval_expired").inc(len(expired))
                for approval in expired:
                    log.info(
                        "approval expired", extra={"approval_id": approval.id, "decision_id": approval.decision_id}
                    )
                await self._refresh_gauges()

    def _expire_approvals(self) -> list[ApprovalRow]:
        now = self._clock()
        with self._store.reading() as tx:
            if not tx.expired_approvals(now):
                return []  # the common case: no write lock taken every second for nothing
        with self._store.transaction(durable=False) as tx:
            expired = tx.expired_approvals(now)
            for approval in expired:
                tx.set_approval_state(approval.id, "expired", now, None)
                tx.set_decision_state(
                    approval.decision_id, "approval_expired", "nobody answered the approval request", now
                )
        return expired

    async def resolve_approval(self, approval_id: str, approve: bool, actor: str) -> str:
        """approved (the trigger is emitted now) | rejected | expired | cancelled | unknown.

        Answering an approval that is no longer pending returns its state
        unchanged, so a double click approves once.
        """
        try:
            state, approved = await asyncio.shield(
                asyncio.to_thread(self._resolve_approval, approval_id, approve, actor)
            )
        except StoreError as exc:
            raise StoreUnavailable(str(exc)) from exc
        if approved is not None:
            decision, event_id = approved
            self._metrics.actions.labels(action="approved").inc()
            self._recorder.record(
                decision.policy, decision, "trigger", f"trigger: approved by {actor}; decision {decision.id}"
            )
            log.info(
                "approval granted; trigger queued",
                extra={"approval_id": approval_id, "actor": actor, "decision_id": decision.id},
            )
            self._deliver_soon((event_id,))
        elif state in ("rejected", "expired"):
            self._metrics.actions.labels(action=state if state == "rejected" else "approval_expired").inc()
        await self._refresh_gauges()
        return state

    def _resolve_approval(self, approval_id: str, approve: bool, actor: str) -> tuple[str, tuple[Decision, str] | None]:
        """Runs in a thread: the approval's new state, and for an approval the decision and its trigger's event id."""
        now = self._clock()
        with self._store.transaction() as tx:
            approval = tx.approval(approval_id)
            if approval is None:
                return "unknown", None
            if approval.state != "pending":
                return approval.state, None
            if now >= approval.expires_at:
                tx.set_approval_state(approval_id, "expired", now, None)
                tx.set_decision_state(
                    approval.decision_id, "approval_expired", "nobody answered the approval request", now
                )
                return "expired", None
            if not approve:
                tx.set_approval_state(approval_id, "rejected", now, actor)
                tx.set_decision_state(approval.decision_id, "rejected", f"rejected by {actor}", now)
                return "rejected", None
            row = tx.decision(approval.decision_id)
            event = tx.firing_event(approval.incident_key)
            if row is None or event is None:
                return "unknown", None
            decision = row.decision
            entry = trigger_entry(decision, event, self._settings.ce_source, approval.sink)
            tx.set_approval_state(approval_id, "approved", now, actor)
            tx.set_decision_state(decision.id, "approved", f"approved by {actor}", now)
            tx.insert_outbox(entry, now)
            # A human decided: the trigger goes out now, and the target's cooldown starts with it.
            if approval.cooldown_seconds > 0 and decision.function:
                tx.set_cooldown(decision.target, now + approval.cooldown_seconds, decision.id, approval.policy)
        return "approved", (decision, entry.event_id)

    # retention

    async def _retention_loop(self) -> None:
        await asyncio.sleep(self._settings.retention_first_sweep_s)
        while True:
            try:
                await self.sweep_retention()
            except StoreError as exc:
                log.warning("store unavailable; retention sweep skipped this round", extra={"error": str(exc)})
            await asyncio.sleep(self._settings.retention_interval_s)

    async def sweep_retention(self) -> dict[str, int]:
        """One retention sweep: rows deleted per table ({} when `retention_days` is 0: keep everything).

        Deletes finished incidents whose last activity is older than
        `retention_days`, with everything hanging off them, and cooldowns that
        ended before then. Never an undecided alert, a pending outbox entry,
        a pending approval, or an incident still being re-sent: deleting a
        decided incident's decision would let a re-send of it be decided and
        triggered a second time, so an incident goes only after Alertmanager
        has been silent about it for the whole retention (the full argument:
        `Store.sweep_finished_incidents`).

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
        while not self._stopping:
            counts = await asyncio.to_thread(self._store.sweep_finished_incidents, cutoff, chunk)
            self._count_swept(swept, counts)
            if counts.get("incidents", 0) < chunk:
                break
        while not self._stopping:
            ended = await asyncio.to_thread(self._store.sweep_expired_cooldowns, cutoff, chunk)
            self._count_swept(swept, {"cooldowns": ended})
            if ended < chunk:
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
                    "cutoff": _iso(cutoff),
                    "duration_s": round(time.monotonic() - started, 3),
                },
            )
        return dict(swept)

    def _count_swept(self, swept: collections.Counter[str], counts: dict[str, int]) -> None:
        for table, rows in counts.items():
            if rows:
                swept[table] += rows
                self._metrics.rows_swept.labels(table=table).inc(rows)

    # lambda responses, queries

    async def record_lambda_response(self, correlation_id: str, success: bool, data: dict[str, Any]) -> bool:
        """Store a lambda's answer (io.knative.lambda.response.*) on its decision; False if the id is unknown."""
        try:
            decision = await asyncio.to_thread(
                self._store.record_response, correlation_id, success, data, self._clock()
            )
        except StoreError as exc:
            raise StoreUnavailable(str(exc)) from exc
        if decision is None:
            return False
        self._metrics.remediation_results.labels(
            function=decision.function or "none", result="success" if success else "error"
        ).inc()
        return True

    async def decide_only(self, event: AlertEvent) -> Decision | None:
        """What the engine would decide for this alert: nothing recorded, nothing emitted."""
        policy = select_policy(event, self._index)
        if policy is None:
            return None
        return await decide(event, policy, self._catalog, self._clients)

    def get_decision(self, decision_id: str) -> dict[str, Any] | None:
        """A decision, its trace and its delivery, approval, resolution and outcome history (JSON-able)."""
        try:
            history = self._store.decision_history(decision_id)
        except StoreError as exc:
            raise StoreUnavailable(str(exc)) from exc
        return None if history is None else render_history(history)

    async def _refresh_gauges(self) -> None:
        """Re-read the outbox depth and pending approvals; concurrent calls coalesce into one more read."""
        if self._gauges_refreshing:
            self._gauges_dirty = True
            return
        self._gauges_refreshing = True
        try:
            while True:
                self._gauges_dirty = False
                depth, approvals = await asyncio.to_thread(self._gauge_values)
                self._outbox_depth = depth
                self._metrics.outbox_depth.set(depth)
                self._metrics.approvals_pending.set(approvals)
                if not self._gauges_dirty:
                    break
        except StoreError:
            pass  # refreshed on the next change
        finally:
            self._gauges_refreshing = False

    def _gauge_values(self) -> tuple[int, int]:
        return self._store.outbox_depth(), self._store.pending_approvals()


def render_history(history: dict[str, Any]) -> dict[str, Any]:
    """The store's rows as the `/decisions/{id}` document: times in RFC 3339, JSON columns parsed."""
    row = history["decision"]
    decision = Decision.model_validate_json(row["body"])
    incident = history["incident"] or {}
    approval = history["approval"]
    return {
        "id": decision.id,
        "incident_key": decision.incident_key,
        "policy": decision.policy,
        "policy_generation": row["policy_generation"],
        "mode": row["mode"],
        "outcome": decision.outcome,
        "state": row["state"],
        "reason": row["reason"],
        "function": decision.function,
        "parameters": decision.parameters,
        "stage": decision.stage,
        "confidence": decision.confidence,
        "reasoning": decision.reasoning,
        "trace": [t.model_dump(mode="json") for t in decision.trace],
        "decided_at": _iso(row["created_at"]),
        "updated_at": _iso(row["updated_at"]),
        "result": row["result"],
        "incident": {
            "fingerprint": incident.get("fingerprint"),
            "alertname": incident.get("alertname"),
            "starts_at": incident.get("starts_at"),
            "first_seen": _iso(incident.get("first_seen")),
            "resend_count": incident.get("duplicates", 0),
            "resolved": incident.get("resolved_at") is not None,
            "resolved_at": _iso(incident.get("resolved_at")),
        },
        "alerts": [
            {"status": a["status"], "source": a["source"], "received_at": _iso(a["received_at"])}
            for a in history["alerts"]
        ],
        "deliveries": [
            {
                "event_id": o["event_id"],
                "type": o["type"],
                "state": o["state"],
                "sink": o["sink"],
                "attempts": o["attempts"],
                "last_status": o["last_status"],
                "last_error": o["last_error"],
                "created_at": _iso(o["created_at"]),
                "delivered_at": _iso(o["delivered_at"]),
            }
            for o in history["outbox"]
        ],
        "approval": None
        if approval is None
        else {
            "id": approval["id"],
            "state": approval["state"],
            "requested_at": _iso(approval["requested_at"]),
            "expires_at": _iso(approval["expires_at"]),
            "resolved_at": _iso(approval["resolved_at"]),
            "actor": approval["actor"],
        },
        "responses": [
            {"success": bool(r["success"]), "data": json.loads(r["data"]), "received_at": _iso(r["received_at"])}
            for r in history["responses"]
        ],
    }
