"""Approvals: a human answers an approval request (`resolve`), or nobody does and it expires (`run`).

A decision whose policy requires approval is committed as `approval_pending`
with an approval request (a random token) and emits an approval CloudEvent
instead of the trigger. Approving it emits the trigger then, in the same
durable transaction that records the answer, and starts the target's
cooldown; rejecting it, or letting it expire, emits nothing. An approval
that is no longer pending keeps its state whatever is answered later, so a
double click approves once. A resolved alert whose policy says
`onResolved: cancelPending` cancels its pending approval at ingest
(`Store.record_alerts`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from controller.engine.config import EngineSettings
from controller.engine.delivery import trigger_entry
from controller.engine.errors import StoreUnavailable
from controller.engine.gauges import StoreGauges
from controller.engine.outbox import OutboxSender
from controller.engine.policy_stats import PolicyStatusRecorder
from controller.engine.store import ApprovalRow, Store, StoreError
from controller.observability.metrics import Metrics
from controller.schemas.decision import Decision

log = logging.getLogger(__name__)


class Approvals:
    """Resolves approval requests and expires the unanswered ones; see the module docstring."""

    def __init__(
        self,
        settings: EngineSettings,
        store: Store,
        outbox: OutboxSender,
        gauges: StoreGauges,
        recorder: PolicyStatusRecorder,
        metrics: Metrics,
        clock: Callable[[], float],
    ) -> None:
        self._settings = settings
        self._store = store
        self._outbox = outbox
        self._gauges = gauges
        self._recorder = recorder
        self._metrics = metrics
        self._clock = clock

    async def run(self) -> None:
        """The expiry loop: every `approval_check_interval_s`, expire what nobody answered in time."""
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
                await self._gauges.refresh()

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

    async def resolve(self, approval_id: str, approve: bool, actor: str) -> str:
        """approved (the trigger is emitted now) | rejected | expired | cancelled | unknown.

        Answering an approval that is no longer pending returns its state
        unchanged, so a double click approves once.
        """
        try:
            state, approved = await asyncio.shield(asyncio.to_thread(self._resolve, approval_id, approve, actor))
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
            self._outbox.deliver_soon((event_id,))
        elif state in ("rejected", "expired"):
            self._metrics.actions.labels(action=state if state == "rejected" else "approval_expired").inc()
        await self._gauges.refresh()
        return state

    def _resolve(self, approval_id: str, approve: bool, actor: str) -> tuple[str, tuple[Decision, str] | None]:
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
