"""The decision workers: each takes a queued alert, decides it, and commits the decision atomically.

A worker selects the policy (no match: the incident is marked unmatched, to
be re-evaluated when Alertmanager re-sends it), runs the decision chain, and
commits the decision together with everything it emits in one transaction:
the policy's actions are planned from the guards read in that transaction
(`controller.engine.guards.plan_actions`: cooldown, storm breaker, dry run,
approval), and the outbox entries, approval request and cooldown are written
with the decision. A crash before the commit re-decides the same alert into
the same deterministic id; a crash after it re-sends the same CloudEvent ids.
If only the commit fails (the store is unavailable), the decision is kept
and its commit retried later with backoff; it is never decided twice.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from controller.decision.chain import StageClients, decide, select_policy
from controller.decision.policy_index import PolicyIndex
from controller.engine.coalesce import Coalescer
from controller.engine.config import EngineSettings
from controller.engine.delivery import approval_entry, escalation_entry, trigger_entry
from controller.engine.gauges import StoreGauges
from controller.engine.guards import ActionPlan, GuardState, plan_actions
from controller.engine.history import rfc3339
from controller.engine.outbox import OutboxSender
from controller.engine.outcomes import Outcomes
from controller.engine.policy_stats import PolicyStatusRecorder
from controller.engine.shadows import Shadows
from controller.engine.store import ApprovalRow, DecisionRecord, OutboxEntry, Store, StoreError, as_inserted
from controller.engine.trace_hooks import decision_span, stamp, trm_steps
from controller.engine.work_queue import WorkItem, WorkQueue
from controller.observability import tracing
from controller.observability.logging import correlation
from controller.observability.metrics import Metrics
from controller.schemas.alerts import AlertEvent
from controller.schemas.decision import Decision
from controller.schemas.policy import Policy
from runbooks import Catalog

log = logging.getLogger(__name__)

# Backoff for a decision whose commit failed because the store was unavailable.
_COMMIT_RETRY_INITIAL_S = 0.5
_COMMIT_RETRY_MAX_S = 30.0
# Decisions committed per thread hand-off: the workers that finish deciding while one hop runs share the next.
_COMMITS_PER_HOP = 64


@dataclass(frozen=True)
class _Committed:
    decision: Decision
    policy: Policy
    plan: ActionPlan
    new_entries: tuple[OutboxEntry, ...]  # as inserted: sent without reading them back
    other_event_ids: tuple[str, ...]  # already in the outbox (a re-commit): read before sending


class DecisionWorkers:
    """The worker loop (`run`, one task per worker) and what each worker does; see the module docstring."""

    def __init__(
        self,
        settings: EngineSettings,
        store: Store,
        queue: WorkQueue,
        index: PolicyIndex,
        catalog: Catalog,
        clients: StageClients,
        outbox: OutboxSender,
        gauges: StoreGauges,
        recorder: PolicyStatusRecorder,
        metrics: Metrics,
        clock: Callable[[], float],
        shadows: Shadows,
    ) -> None:
        self._settings = settings
        self._store = store
        self._queue = queue
        self._index = index
        self._catalog = catalog
        self._clients = clients
        self._outbox = outbox
        self._gauges = gauges
        self._recorder = recorder
        self._metrics = metrics
        self._clock = clock
        self._shadows = shadows
        self._in_flight = 0
        self._commit_retries: dict[int, asyncio.TimerHandle] = {}
        # One hop into a worker thread for the decisions that wait together; each keeps its own transaction.
        self._commits: Coalescer[tuple[WorkItem, contextvars.Context], _Committed | None | Exception] = Coalescer(
            self._commit_decisions, max_items=_COMMITS_PER_HOP, name="trm-sre-decision-commits"
        )

    @property
    def busy(self) -> bool:
        """An alert is being decided, or a decision waits to re-commit."""
        return bool(self._in_flight or self._commit_retries)

    def cancel_commit_retries(self) -> None:
        """When stopping: drop the commit retries still waiting (their alerts stay undecided for the next start)."""
        for handle in self._commit_retries.values():
            handle.cancel()
        self._commit_retries.clear()

    def forget_in_flight(self) -> None:
        """The pipeline cancelled the worker tasks: whatever was being decided is no longer in flight."""
        self._in_flight = 0

    async def aclose(self) -> None:
        """Stopping: drop the commits still waiting for a hop (their alerts stay undecided for the next start)."""
        await self._commits.aclose()

    async def run(self) -> None:
        """One worker: decide queued alerts, one at a time, until cancelled."""
        while True:
            work = await self._queue.get()
            self._in_flight += 1
            try:
                with decision_span(work):
                    await self._handle(work)
            except StoreError as exc:
                self._retry_commit_later(work, exc)
            except Exception:  # a bug must not kill the worker; the alert stays undecided for the next start
                self._queue.release(work.alert_id)
                log.exception("could not handle an alert", extra={"incident": work.event.incident_key})
            finally:
                self._in_flight -= 1
                self._queue.task_done()
                self._queue.drain_rate.completed(time.monotonic(), backlog=not self._queue.empty())

    async def _handle(self, work: WorkItem) -> None:
        event = work.event
        if work.decision is None or work.policy is None:
            with tracing.span("policy.match"):
                policy = select_policy(event, self._index)
                tracing.set_attributes({"trm_sre.policy": policy.key if policy is not None else "none"})
            if policy is None:
                await asyncio.to_thread(self._store.mark_unmatched, work.alert_id, event.incident_key)
                self._queue.release(work.alert_id)
                log.info(
                    "no policy matches the alert",
                    extra={"incident": event.incident_key, "alertname": event.alert.alertname},
                )
                await self._shadows.record(event, None, None)  # a Shadow policy may still match it
                return
            work.policy = policy
            work.decision = stamp(await self._decide(event, policy))
        with correlation(work.decision.id):
            with tracing.span("outbox.commit"):
                committed = await self._commits.submit((work, contextvars.copy_context()))
            if isinstance(committed, Exception):
                raise committed
            self._queue.release(work.alert_id)
            if committed is None:
                log.info("incident already decided; nothing to do", extra={"incident": event.incident_key})
                return
            self._after_commit(committed)
            self._outbox.deliver_new(committed.new_entries)
            if committed.other_event_ids:
                self._outbox.deliver_soon(committed.other_event_ids)
            if committed.plan.approval_expires_at is not None:
                await self._gauges.refresh()  # an approval request: rare, and the gauge says so at once
            else:
                self._gauges.refresh_soon()
            # Only now, with the live decision committed and on its way: the shadow decisions beside it.
            await self._shadows.record(event, committed.policy, committed.decision.id)

    def _retry_commit_later(self, work: WorkItem, exc: StoreError) -> None:
        work.commit_failures += 1
        delay = min(_COMMIT_RETRY_INITIAL_S * 2 ** (work.commit_failures - 1), _COMMIT_RETRY_MAX_S)
        log.warning(
            "store unavailable; the decision is retried later",
            extra={"incident": work.event.incident_key, "retry_in_s": delay, "error": str(exc)},
        )

        def requeue() -> None:
            self._commit_retries.pop(work.alert_id, None)
            self._queue.put_back(work)

        self._commit_retries[work.alert_id] = asyncio.get_running_loop().call_later(delay, requeue)

    async def _decide(self, event: AlertEvent, policy: Policy) -> Decision:
        with tracing.span("chain", attributes={"trm_sre.policy": policy.key}):
            started_ns = time.time_ns()
            decision = await decide(event, policy, self._catalog, self._clients)
            steps = trm_steps(decision)
            tracing.record_stages(decision.trace, started_ns, steps)
            exemplar = tracing.exemplar()
        for trace in decision.trace:
            self._metrics.stage_latency.labels(stage=trace.stage).observe(trace.latency_ms / 1000, exemplar)
            if trace.stage == "trm" and trace.confidence is not None:
                self._metrics.trm_confidence.observe(trace.confidence)
                self._metrics.observe_trm(steps.get(trace.index), trace.confidence)
        return decision

    def _commit_decisions(
        self, asks: Sequence[tuple[WorkItem, contextvars.Context]], _key: object
    ) -> list[_Committed | None | Exception]:
        """Runs in a thread: each decision in its own transaction, in its worker's context (its trace).

        A decision whose commit fails gets its exception back (its worker raises it); the others commit.
        """
        answers: list[_Committed | None | Exception] = []
        for work, context in asks:
            try:
                answers.append(context.run(self._commit_decision, work))
            except Exception as exc:  # noqa: BLE001 - handed back to the one worker it belongs to
                answers.append(exc)
        return answers

    def _commit_decision(self, work: WorkItem) -> _Committed | None:
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
            circuit = Outcomes.circuit(tx, policy, decision.function, now)
            guard = GuardState(
                now=now,
                cooldown_until=tx.cooldown_until(decision.target) if decision.function else None,
                budget_used=tx.budget_used(
                    policy.key, now - actions.window_seconds, cap=actions.max_triggers_per_window
                ),
                incident_resolved=incident is not None and incident.resolved_at is not None,
                circuit=circuit.state,
                circuit_reason=circuit.reason,
            )
            with tracing.span("guards"):
                plan = plan_actions(decision, actions, guard)
                tracing.set_attributes({"trm_sre.plan.action": plan.action, "trm_sre.plan.state": plan.state})
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
            inserted = [tx.insert_outbox(entry, now) for entry in entries]
            if plan.cooldown_until is not None and decision.function:
                tx.set_cooldown(decision.target, plan.cooldown_until, decision.id, policy.key)
            if approval is not None:
                tx.insert_approval(approval)
            Outcomes.record_sighting(tx, decision, event, now)  # where a recurrence is looked for
            if "trigger" in plan.emit:
                Outcomes.record_trigger(tx, decision, policy, event, now)  # its outcome, judged later
            if plan.state == "dry_run":
                Shadows.record_natural(tx, decision, policy, now)  # did it resolve with no action?
            tx.mark_alert_decided(work.alert_id)
            tx.set_incident_state(decision.incident_key, "decided")
        return _Committed(
            decision,
            policy,
            plan,
            tuple(as_inserted(e, now) for e, new in zip(entries, inserted, strict=True) if new),
            tuple(e.event_id for e, new in zip(entries, inserted, strict=True) if not new),
        )

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
                    approval_entry(decision, event, source, sink, approval.id, rfc3339(approval.expires_at) or "")
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
