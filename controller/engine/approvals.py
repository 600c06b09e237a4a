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

An approval releases the trigger only if every other guard still holds at
the moment it is given (issue #13.2): the policy is looked up again in the
PolicyIndex, and the approval is `cancelled`, with the reason on the
decision, when the policy is gone, is in dry run, or no longer allows the
function, its parameters or the target namespace (the proposal is validated
again against the policy as it is now); the target's cooldown and the
policy's storm breaker are read again from the store in the approving
transaction. The expiry loop applies the same policy check to every pending
approval, so deleting a policy, or changing it in a way that matters,
cancels what waits on it without anyone answering.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from controller.decision.policy_index import PolicyIndex
from controller.decision.validation import validate_proposal
from controller.engine.config import EngineSettings
from controller.engine.delivery import trigger_entry
from controller.engine.errors import StoreUnavailable
from controller.engine.gauges import StoreGauges
from controller.engine.guards import STORM_BREAKER
from controller.engine.outbox import OutboxSender
from controller.engine.outcomes import Outcomes
from controller.engine.policy_stats import PolicyStatusRecorder
from controller.engine.store import ApprovalRow, Store, StoreError, StoreTxApi
from controller.engine.store.corrections_sql import CorrectionRow, CorrectionSql
from controller.engine.store.corrections_sql import ensure_schema as ensure_corrections
from controller.observability.metrics import Metrics
from controller.schemas.decision import Decision
from runbooks import Catalog, InvalidCall, default_catalog

log = logging.getLogger(__name__)

# A rejection's correction: (function or None for "no action was right", parameters).
Correction = tuple[str | None, dict[str, Any]]


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
        index: PolicyIndex | None = None,
        catalog: Catalog | None = None,
        index_complete: Callable[[], bool] = lambda: True,
    ) -> None:
        self._index = index
        self._index_complete = index_complete
        self._catalog = catalog
        self._settings = settings
        self._store = store
        self._outbox = outbox
        self._gauges = gauges
        self._recorder = recorder
        self._metrics = metrics
        self._clock = clock
        self._corrections_ready = False

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
            expired_now = tx.expired_approvals(now)
            stale = [(a, why) for a in tx.pending_approval_rows() if (why := self._policy_refusal(tx, a)) is not None]
        if stale:
            self._cancel_stale(stale, now)
        if not expired_now:
            return []  # the common case: no write lock taken every second for nothing
        with self._store.transaction(durable=False) as tx:
            expired = tx.expired_approvals(now)
            for approval in expired:
                tx.set_approval_state(approval.id, "expired", now, None)
                tx.set_decision_state(
                    approval.decision_id, "approval_expired", "nobody answered the approval request", now
                )
        return expired

    def _cancel_stale(self, stale: list[tuple[ApprovalRow, str]], now: float) -> None:
        """Cancel pending approvals whose policy is gone or no longer allows them (checked again in the tx)."""
        with self._store.transaction(durable=False) as tx:
            for approval, _ in stale:
                current = tx.approval(approval.id)
                if current is None or current.state != "pending":
                    continue
                why = self._policy_refusal(tx, current)
                if why is None:
                    continue
                tx.set_approval_state(approval.id, "cancelled", now, None)
                tx.set_decision_state(approval.decision_id, "approval_cancelled", why, now)
                log.info("approval cancelled", extra={"approval_id": approval.id, "reason": why})
                self._metrics.actions.labels(action="approval_cancelled").inc()

    def _policy_refusal(self, tx: StoreTxApi, approval: ApprovalRow) -> str | None:
        """Why the policy as it is now would not act on this approval's decision; None when it still would."""
        if self._index is None:
            return None
        policy = self._index.get(approval.policy)
        if policy is None:
            if not self._index_complete():
                return None  # not loaded yet (cluster mode, just started): `_resolve` refuses without cancelling
            return f"policy {approval.policy} no longer exists"
        if policy.spec.actions.dry_run:
            return f"policy {approval.policy} is now in dry run"
        row = tx.decision(approval.decision_id)
        if row is None:
            return "the decision is gone"
        decision = row.decision
        if decision.function is None:
            return "the decision has no function"
        if self._catalog is not None:
            verdict = validate_proposal(decision.function, decision.parameters, policy, self._catalog)
            if not verdict.accepted:
                return f"policy {approval.policy} no longer allows it: {verdict.reason}"
        elif decision.function not in policy.spec.allowed_functions:
            return f"policy {approval.policy} no longer allows {decision.function}"
        return None

    def _guard_refusal(self, tx: StoreTxApi, approval: ApprovalRow, decision: Decision, now: float) -> str | None:
        """The cooldown and the storm breaker, read again from the store as they are now."""
        if decision.function:
            until = tx.cooldown_until(decision.target)
            if until is not None and now < until:
                return f"{decision.target} is cooling down until {_iso(until)}"
        policy = self._index.get(approval.policy) if self._index is not None else None
        if policy is not None:
            circuit = Outcomes.circuit(tx, policy, decision.function, now)
            if circuit.state == "open":  # it opened while the request waited: no trigger until its cooldown ends
                return circuit.reason
            actions = policy.spec.actions
            used = tx.budget_used(
                approval.policy,
                now - actions.window_seconds,
                excluding=decision.id,
                cap=actions.max_triggers_per_window,
            )
            if used >= actions.max_triggers_per_window:
                return (
                    f"{STORM_BREAKER}: {used} triggers of policy {approval.policy} within {actions.window_seconds}s"
                    f" (limit {actions.max_triggers_per_window})"
                )
        return None

    async def resolve(self, approval_id: str, approve: bool, actor: str) -> str:
        """approved (the trigger is emitted now) | rejected | expired | cancelled | unknown.

        Answering an approval that is no longer pending returns its state
        unchanged, so a double click approves once.
        """
        return (await self.answer(approval_id, approve, actor))[0]

    def _ensure_corrections(self) -> None:
        if not self._corrections_ready:
            ensure_corrections(self._store)
            self._corrections_ready = True

    def correction(self, decision_id: str) -> dict[str, Any] | None:
        """`correction` of `GET /decisions/{id}`: what the rejecting human said the right call was, or None."""
        self._ensure_corrections()
        with self._store.reading() as tx:
            row = CorrectionSql(tx).correction(decision_id)
        return None if row is None else row.as_json()

    def checked_correction(self, correction: Correction) -> Correction:
        """The correction with its parameters cleaned against the runbook; InvalidCall when it names no function
        of the catalog or its parameters do not fit. Not checked against the policy: a human may say the right
        call was one the policy does not allow yet."""
        function, parameters = correction
        if function is None:
            if parameters:
                raise InvalidCall(None, ["a correction of 'no action' takes no parameters"])
            return None, {}
        return function, (self._catalog or default_catalog()).validate_call(function, parameters)

    async def answer(
        self, approval_id: str, approve: bool, actor: str, correction: Correction | None = None
    ) -> tuple[str, str | None]:
        """`resolve`, with the reason when the approval was cancelled now (a guard no longer holds).

        A rejection may carry a `correction` (already `checked_correction`); it is recorded with the rejection,
        in the same transaction, and only when this answer rejects the request."""
        try:
            state, approved, why, cancelled_now = await asyncio.shield(
                asyncio.to_thread(self._resolve, approval_id, approve, actor, correction)
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
            self._outbox.deliver_soon((event_id,))
        elif state in ("rejected", "expired"):
            self._metrics.actions.labels(action=state if state == "rejected" else "approval_expired").inc()
        elif cancelled_now:
            self._metrics.actions.labels(action="approval_cancelled").inc()
            log.warning(
                "approval refused: a guard no longer holds; approval cancelled",
                extra={"approval_id": approval_id, "actor": actor, "reason": why},
            )
        await self._gauges.refresh()
        return state, why

    def _resolve(
        self, approval_id: str, approve: bool, actor: str, correction: Correction | None = None
    ) -> tuple[str, tuple[Decision, str] | None, str | None, bool]:
        """Runs in a thread: the approval's new state, for an approval the decision and its trigger's event id,
        the reason when it is cancelled, and whether this answer cancelled it."""
        now = self._clock()
        if correction is not None:
            self._ensure_corrections()
        with self._store.transaction() as tx:
            approval = tx.approval(approval_id)
            if approval is None:
                return "unknown", None, None, False
            if approval.state != "pending":
                row = tx.decision(approval.decision_id) if approval.state == "cancelled" else None
                return approval.state, None, (row.reason if row is not None else None), False
            if now >= approval.expires_at:
                tx.set_approval_state(approval_id, "expired", now, None)
                tx.set_decision_state(
                    approval.decision_id, "approval_expired", "nobody answered the approval request", now
                )
                return "expired", None, None, False
            if not approve:
                tx.set_approval_state(approval_id, "rejected", now, actor)
                tx.set_decision_state(approval.decision_id, "rejected", f"rejected by {actor}", now)
                if correction is not None:
                    function, parameters = correction
                    row = CorrectionRow(approval.decision_id, approval_id, function, parameters, actor, now)
                    CorrectionSql(tx).insert(row)
                return "rejected", None, None, False
            row = tx.decision(approval.decision_id)
            event = tx.firing_event(approval.incident_key)
            if row is None or event is None:
                return "unknown", None, None, False
            decision = row.decision
            if self._index is not None and self._index.get(approval.policy) is None and not self._index_complete():
                return "pending", None, "the policies are still being loaded; answer again in a moment", False
            why = self._policy_refusal(tx, approval) or self._guard_refusal(tx, approval, decision, now)
            if why is not None:
                # Refused, not deferred: what the human approved is no longer what the policy allows now.
                tx.set_approval_state(approval_id, "cancelled", now, actor)
                tx.set_decision_state(decision.id, "approval_cancelled", f"approval by {actor} refused: {why}", now)
                return "cancelled", None, why, True
            entry = trigger_entry(decision, event, self._settings.ce_source, approval.sink)
            tx.set_approval_state(approval_id, "approved", now, actor)
            tx.set_decision_state(decision.id, "approved", f"approved by {actor}", now)
            tx.insert_outbox(entry, now)
            policy = self._index.get(approval.policy) if self._index is not None else None
            if policy is not None:
                Outcomes.record_trigger(tx, decision, policy, event, now)  # its outcome, judged later
            # A human decided: the trigger goes out now, and the target's cooldown starts with it.
            if approval.cooldown_seconds > 0 and decision.function:
                tx.set_cooldown(decision.target, now + approval.cooldown_seconds, decision.id, approval.policy)
        return "approved", (decision, entry.event_id), None, False


def correction_of(store: Store, decision_id: str) -> dict[str, Any] | None:
    """A decision's correction read from any store (`trm-sre explain`); None if it has none."""
    try:
        with store.reading() as tx:
            row = CorrectionSql(tx).correction(decision_id)
    except StoreError:  # a store from before corrections existed: no table, no correction
        return None
    return None if row is None else row.as_json()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
