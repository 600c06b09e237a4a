"""The engine: alerts in, decisions made once per incident, CloudEvents out through a durable outbox.

One alert's way through:

1. `ingest` records a batch of alert events in one durable store
   transaction and only then returns (the edge answers 2xx after that, so an
   acknowledged alert is never lost); webhooks that arrive together share
   one transaction (a group commit: one fsync for all of them). New firing incidents are queued for the workers;
   re-sends are counted and dropped; resolved alerts are recorded against
   their incident and may cancel what is still pending.
   (`controller.engine.admission`, which also bounds the queue: `work_queue`.)
2. A worker selects the policy, runs the decision chain, and commits the
   decision together with everything it emits (outbox entries, cooldown,
   approval) in one transaction: a crash before the commit re-decides the
   same alert into the same deterministic id, a crash after it re-sends the
   same CloudEvent ids. (`controller.engine.workers`.)
3. Delivery sends each new outbox entry at once (with retries); whatever is
   still pending after a sink outage is replayed by the outbox loop, one
   probe per sink per round, until it is delivered or dead-lettered.
   (`controller.engine.outbox`.)
4. A timer loop expires approval requests nobody answered; `resolve_approval`
   records a human's answer. (`controller.engine.approvals`.)
5. A retention loop deletes what is finished and older than `retention_days`
   (`sweep_retention`), in short transactions, so the store stops growing.
   (`controller.engine.retention`.)

On a shared store (PostgreSQL, several replicas: `StoreBackend.shared`),
the approval-expiry and retention loops run only on the replica holding
their advisory lock, and a claim loop takes over the undecided alerts of
replicas that died (`controller.engine.replicas`).

`Pipeline` is the one place these parts are built and wired together; it
starts and stops them, answers readiness, and is what the edge, the app and
the tests call. The parts share the store, the work queue, the
outbox/approval gauges (`controller.engine.gauges`) and whether the engine
runs or is stopping (`controller.engine.lifecycle`).

The policy's `actions` (dry run, approval, cooldown, storm breaker) are
applied by the pure `controller.engine.guards.plan_actions`, inside the commit
transaction. Everything blocking (SQLite, the file sink) runs in worker
threads so the event loop (shared with the HTTP server and the kopf
operator) stays responsive.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from controller.decision.chain import StageClients, decide, select_policy
from controller.decision.policy_index import PolicyIndex
from controller.engine.admission import Admission, IngestResult
from controller.engine.approvals import Approvals, Correction
from controller.engine.config import EngineSettings
from controller.engine.errors import Overloaded, StoreUnavailable
from controller.engine.gauges import StoreGauges
from controller.engine.guards import GuardState, plan_actions
from controller.engine.history import history_as_json
from controller.engine.lifecycle import Lifecycle
from controller.engine.outbox import OutboxSender
from controller.engine.outcomes import Outcomes
from controller.engine.policy_stats import PolicyStatusRecorder
from controller.engine.replicas import ClaimRecovery, run_as_singleton
from controller.engine.retention import RetentionSweeper
from controller.engine.shadows import Shadows
from controller.engine.silences import AlertmanagerClient, AlertmanagerConfig, Silences, silence_of
from controller.engine.store import StoreBackend, StoreError
from controller.engine.work_queue import WorkItem, WorkQueue
from controller.engine.workers import DecisionWorkers
from controller.observability.metrics import Metrics
from controller.schemas.alerts import AlertEvent
from controller.schemas.decision import Decision, decision_id
from runbooks import Catalog

# What callers import from here: the engine's settings, what `ingest` returns and the errors it raises.
__all__ = ["IngestResult", "Overloaded", "Pipeline", "StoreUnavailable"]

#: How long `decide_only` reuses a decision for the same alert content under the same policy index.
REASON_CACHE_TTL_S = 10.0
REASON_CACHE_MAX = 256

log = logging.getLogger(__name__)


class Pipeline:
    """See the module docstring. One per process; `start()` inside the running event loop."""

    def __init__(
        self,
        settings: EngineSettings,
        store: StoreBackend,
        index: PolicyIndex,
        catalog: Catalog,
        clients: StageClients,
        recorder: PolicyStatusRecorder,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
        index_complete: Callable[[], bool] = lambda: True,
    ) -> None:
        self._settings = settings
        self._store = store
        self._index = index
        # decide_only: (index version, policy, alert content) -> (monotonic expiry, decision); in-flight runs.
        self._reason_cache: dict[tuple[int, str, str], tuple[float, Decision]] = {}
        self._reason_pending: dict[tuple[int, str, str], asyncio.Future[Decision]] = {}
        self._catalog = catalog
        self._clients = clients
        self._metrics = metrics
        self._clock = clock
        self._lifecycle = Lifecycle()
        self._queue = WorkQueue(settings.assumed_decisions_per_s)
        self._gauges = StoreGauges(store, metrics)
        self._outbox = OutboxSender(settings, store, self._gauges, recorder, metrics, self._lifecycle, clock)
        self._admission = Admission(settings, store, self._queue, self._gauges, metrics, self._lifecycle, clock)
        self._shadows = Shadows(store, index, catalog, clients, metrics, clock, interval_s=settings.outcome_interval_s)
        self._workers = DecisionWorkers(
            settings,
            store,
            self._queue,
            index,
            catalog,
            clients,
            self._outbox,
            self._gauges,
            recorder,
            metrics,
            clock,
            self._shadows,
        )
        self._approvals = Approvals(
            settings,
            store,
            self._outbox,
            self._gauges,
            recorder,
            metrics,
            clock,
            index=index,
            catalog=catalog,
            index_complete=index_complete,
        )
        self._retention = RetentionSweeper(settings, store, metrics, self._lifecycle, clock)
        self._claims = ClaimRecovery(settings, store, self._queue, self._gauges)
        self._outcomes = Outcomes(
            store,
            index,
            recorder,
            metrics,
            self._lifecycle,
            clock,
            interval_s=settings.outcome_interval_s,
            index_complete=index_complete,
        )
        self._silences: Silences | None = None
        if settings.alertmanager_url:  # silences tied to remediation (controller.engine.silences)
            self._silences = Silences(
                store,
                index,
                metrics,
                clock,
                AlertmanagerClient(
                    AlertmanagerConfig(
                        settings.alertmanager_url, settings.alertmanager_token_file, settings.alertmanager_ca_file
                    )
                ),
                interval_s=settings.silence_interval_s,
            )
        self._tasks: list[asyncio.Task[None]] = []

    # lifecycle

    async def start(self) -> None:
        """Start workers, the outbox and approval loops; re-queue what a crash left undecided."""
        if self._lifecycle.running:
            return
        self._outbox.open()
        with contextlib.suppress(StoreError):  # else the outcome loop creates them once the store is writable
            await asyncio.to_thread(self._outcomes.ensure_schema)  # its tables, before any decision writes them
            await asyncio.to_thread(self._shadows.ensure_schema)
        try:
            pending = await asyncio.to_thread(self._store.undecided_alerts)
        except StoreError as exc:
            await self._outbox.close()
            raise StoreUnavailable(f"cannot read undecided alerts: {exc}") from exc
        recovered = [p for p in pending if not self._queue.holds(p.alert_id)]
        for alert in recovered:
            self._queue.put(WorkItem(alert.alert_id, alert.event))
        if recovered:
            log.info("re-queued alerts recorded before a restart but never decided", extra={"count": len(recovered)})
        self._lifecycle.running = True
        self._lifecycle.stopping = False
        self._tasks = [
            asyncio.create_task(self._workers.run(), name=f"trm-sre-worker-{i}")
            for i in range(max(self._settings.workers, 1))
        ]
        self._tasks.append(asyncio.create_task(self._outbox.run(), name="trm-sre-outbox"))
        self._tasks.append(
            asyncio.create_task(self._singleton("approvals", self._approvals.run), name="trm-sre-approvals")
        )
        if self._settings.retention_days > 0:
            self._tasks.append(
                asyncio.create_task(self._singleton("retention", self._retention.run), name="trm-sre-retention")
            )
        self._tasks.append(
            asyncio.create_task(self._singleton("outcomes", self._outcomes.run), name="trm-sre-outcomes")
        )
        self._tasks.append(asyncio.create_task(self._singleton("shadows", self._shadows.run), name="trm-sre-shadows"))
        if self._silences is not None:
            self._tasks.append(
                asyncio.create_task(self._singleton("silences", self._silences.run), name="trm-sre-silences")
            )
        if self._store.shared:  # every replica's status writer may need the outcome counts; one judges them
            self._tasks.append(asyncio.create_task(self._outcomes.run_status(), name="trm-sre-outcome-status"))
        if self._store.shared:  # replicas share the store: take over what a dead one left (controller.engine.replicas)
            self._tasks.append(asyncio.create_task(self._claims.run(), name="trm-sre-claims"))
        self._outbox.wake()  # replay whatever the last run left pending, now
        await self._gauges.refresh()

    def _singleton(self, name: str, loop: Callable[[], Coroutine[Any, Any, None]]) -> Coroutine[Any, Any, None]:
        """`loop()` itself on a store of our own; on a shared store, only while this replica holds its lock."""
        if not self._store.shared:
            return loop()
        return run_as_singleton(self._store, name, loop, self._settings.claim_interval_s)

    async def stop(self, drain_timeout_s: float = 20) -> None:
        """Refuse new alerts, finish queued and in-flight work, try pending deliveries once, stop.

        Whatever does not finish within `drain_timeout_s` stays in the store
        (undecided alerts, pending outbox entries) for the next start. The
        store itself is left open: whoever opened it closes it.
        """
        if not self._lifecycle.running:
            return
        self._lifecycle.stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(drain_timeout_s, 0)
        if drain_timeout_s > 0:
            await self.wait_idle(drain_timeout_s)
            remaining = deadline - loop.time()
            if remaining > 0:
                # Whatever is not delivered in time stays pending for the next start.
                with contextlib.suppress(TimeoutError, StoreError):
                    await asyncio.wait_for(self._outbox.replay_due(), remaining)
        self._workers.cancel_commit_retries()
        tasks = [*self._tasks, *self._outbox.delivery_tasks()]
        for task in tasks:
            task.cancel()
        if tasks:
            # Bounded: a task stuck in a worker thread (SQLite waiting on a lock, say) must not
            # hold the shutdown past the pod's grace period; its work is still in the store.
            _, stuck = await asyncio.wait(tasks, timeout=5)
            if stuck:
                log.warning("stopping with %d task(s) still running in worker threads", len(stuck))
        self._tasks = []
        self._outbox.forget_deliveries()
        self._workers.forget_in_flight()
        await self._workers.aclose()
        self._gauges.close()
        await self._outbox.close()
        self._lifecycle.running = False

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
        return self._queue.empty() and not self._workers.busy and not self._outbox.busy

    def readiness(self) -> tuple[bool, list[str]]:
        reasons: list[str] = []
        if not self._store.is_open:
            reasons.append("the store is closed")
        if not self._lifecycle.running:
            reasons.append("the pipeline is not running")
        elif self._lifecycle.stopping:
            reasons.append("the pipeline is stopping")
        if self._queue.qsize() >= self._settings.queue_size:
            reasons.append(f"the work queue is full ({self._queue.qsize()} alerts waiting)")
        return not reasons, reasons

    # what the edge calls

    async def ingest(self, events: list[AlertEvent]) -> IngestResult:
        """Record every event in one transaction, then queue the new incidents (`controller.engine.admission`).

        Raises Overloaded (stopping, or too much work waiting) or StoreUnavailable (nothing recorded).
        """
        return await self._admission.ingest(events)

    async def resolve_approval(self, approval_id: str, approve: bool, actor: str) -> str:
        """approved (the trigger is emitted now) | rejected | expired | cancelled | unknown.

        Answering an approval that is no longer pending returns its state
        unchanged, so a double click approves once.
        """
        return await self._approvals.resolve(approval_id, approve, actor)

    async def answer_approval(
        self, approval_id: str, approve: bool, actor: str, correction: Correction | None = None
    ) -> tuple[str, str | None]:
        """`resolve_approval`, with the reason when the approval was cancelled because a guard no longer holds;
        a rejection may carry a `correction` (from `check_correction`), recorded as ground truth."""
        return await self._approvals.answer(approval_id, approve, actor, correction)

    def check_correction(self, correction: Correction) -> Correction:
        """A rejection's correction checked against the runbook catalog; ValueError (InvalidCall) naming why not."""
        return self._approvals.checked_correction(correction)

    def approval_policy(self, approval_id: str) -> tuple[str, str] | None:
        """(namespace, name) of the policy an approval request belongs to; None for an unknown id."""
        try:
            approval = self._store.approval(approval_id)
        except StoreError as exc:
            raise StoreUnavailable(str(exc)) from exc
        if approval is None:
            return None
        namespace, _, name = approval.policy.partition("/")
        return namespace, name

    async def sweep_retention(self) -> dict[str, int]:
        """One retention sweep now: rows deleted per table (`controller.engine.retention`)."""
        return await self._retention.sweep()

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
        """What the engine would decide for this alert: nothing recorded, nothing emitted.

        `/reason` and reasoning CloudEvents call this per request; the chain (a model, an LLM endpoint)
        is not free, so the same alert content under the same index is decided once per
        `REASON_CACHE_TTL_S`, and concurrent asks for it share one run (issue #13.8).
        """
        policy = select_policy(event, self._index)
        if policy is None:
            return None
        content = json.dumps([event.alert.labels, event.merged_annotations()], sort_keys=True)
        key = (self._index.version, policy.key, hashlib.sha256(content.encode()).hexdigest())
        now = time.monotonic()
        cached = self._reason_cache.get(key)
        if cached is not None and cached[0] > now:
            decision = cached[1]
        elif (pending := self._reason_pending.get(key)) is not None:
            decision = await asyncio.shield(pending)
        else:
            future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
            self._reason_pending[key] = future
            try:
                decision = await decide(event, policy, self._catalog, self._clients)
            except BaseException as exc:
                future.set_exception(exc if isinstance(exc, Exception) else RuntimeError("interrupted"))
                raise
            finally:
                del self._reason_pending[key]
            future.set_result(decision)
            self._reason_cache[key] = (time.monotonic() + REASON_CACHE_TTL_S, decision)
            while len(self._reason_cache) > REASON_CACHE_MAX:
                self._reason_cache.pop(next(iter(self._reason_cache)))
        # The alert's own identity (its incident), whichever request first ran the chain.
        return decision.model_copy(
            update={
                "id": decision_id(event.incident_key, policy.key),
                "incident_key": event.incident_key,
                "fingerprint": event.fingerprint,
            }
        )

    def guard_outcome(self, decision: Decision) -> tuple[str, str]:
        """What the policy's actions would make of `decision` now, read from the store without writing.

        (outcome, reason): trigger | dry_run | approval_required | cooldown | storm_breaker | escalate.
        """
        policy = self._index.get(decision.policy)
        if policy is None:
            return "escalate", f"policy {decision.policy} no longer exists"
        actions = policy.spec.actions
        now = self._clock()
        try:
            with self._store.reading() as tx:
                circuit = Outcomes.circuit(tx, policy, decision.function, now)
                guard = GuardState(
                    now=now,
                    cooldown_until=tx.cooldown_until(decision.target) if decision.function else None,
                    budget_used=tx.budget_used(
                        policy.key, now - actions.window_seconds, cap=actions.max_triggers_per_window
                    ),
                    incident_resolved=False,
                    circuit=circuit.state,
                    circuit_reason=circuit.reason,
                )
        except StoreError as exc:
            raise StoreUnavailable(str(exc)) from exc
        plan = plan_actions(decision, actions, guard)
        outcome = {
            "triggered": "trigger",
            "dry_run": "dry_run",
            "approval_pending": "approval_required",
            "cooldown": "cooldown",
        }.get(plan.state)
        if outcome is None:
            # An open circuit breaker answers `escalate`, its reason naming the circuit.
            outcome = "storm_breaker" if plan.action == "storm_breaker" else "escalate"
        return outcome, plan.reason

    def get_decision(self, decision_id: str) -> dict[str, Any] | None:
        """A decision, its trace and its delivery, approval, resolution and outcome history (JSON-able)."""
        try:
            history = self._store.decision_history(decision_id)
        except StoreError as exc:
            raise StoreUnavailable(str(exc)) from exc
        if history is None:
            return None
        out = history_as_json(history)
        try:
            out["verification"] = self._outcomes.verification(decision_id)
            out["correction"] = self._approvals.correction(decision_id)
            out["shadows"] = self._shadows.of_incident(out["incident_key"])
            if self._silences is not None:
                self._silences.ensure_schema()
                out["silence"] = silence_of(self._store, decision_id)
        except StoreError as exc:
            raise StoreUnavailable(str(exc)) from exc
        return out

    @property
    def shadows(self) -> Shadows:
        """Shadow decisions and natural resolutions (`controller.engine.shadows`): compare and judge them."""
        return self._shadows

    @property
    def outcomes(self) -> Outcomes:
        """Trigger outcomes and circuit breakers (`controller.engine.outcomes`): evaluate, reset by hand."""
        return self._outcomes
