"""Shadow mode that measures itself, and the natural-resolution baseline.

Shadow decisions. For every alert, after the live decision is committed and
its CloudEvents are on their way, the workers call `record`: every Shadow
policy that matches the alert (`spec.mode: Shadow`; never selected to act)
runs its whole chain, and every `shadow: true` stage of the live policy
runs on its own (the live chain skips it). Each result is written to
`shadow_decisions` (deterministic id: a replay records nothing twice) with
its stage, function, parameters, confidence and the rule author's
annotation. Nothing else: no outbox entry, approval, cooldown, budget or
outcome, so a shadow decision can never act. The live path never waits on a
failing shadow: an error is logged and that alert's shadow sample is lost
(so is one whose worker crashed between the two commits).

Comparison. A loop (`run`, a singleton on a shared store) compares every
open shadow decision with the best ground truth the store has
(`controller.engine.shadow_compare`) and rewrites the comparison until its
ground truth is final (an approval answered, an outcome judged), then never
again; `agent_sre_shadow_decisions_total{policy,stage,agreement}` counts it
once, when it becomes final.

Natural resolutions. A dry-run decision that proposed a function is written
to `natural_resolutions` in the transaction that commits it
(`record_natural`); the loop marks it `resolved` when its incident resolved
within the policy's `verify.windowSeconds` with no action, `still_firing`
when the window ran out, `unknown` when the incident is no longer known.
That rate is the baseline a function's success rate must beat
(`trm-sre eval --from-store`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from controller.decision.chain import StageClients, annotated_call, decide_shadows, select_shadow_policies
from controller.decision.policy_index import PolicyIndex
from controller.engine.shadow_compare import compare
from controller.engine.store import StoreBackend, StoreError
from controller.engine.store.corrections_sql import ensure_schema as ensure_corrections
from controller.engine.store.outcomes_sql import ensure_schema as ensure_outcomes
from controller.engine.store.shadow_sql import Call, NaturalRow, ShadowRow, ShadowSql
from controller.engine.store.shadow_sql import ensure_schema as ensure_shadow
from controller.observability.metrics import Metrics
from controller.schemas.alerts import AlertEvent
from controller.schemas.decision import Decision, ShadowDecision
from controller.schemas.policy import Policy
from runbooks import Catalog

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Judged:
    policy: str
    stage: str
    agreement: str


class Shadows:
    """Records shadow decisions, compares them, judges natural resolutions; see the module docstring."""

    def __init__(
        self,
        store: StoreBackend,
        index: PolicyIndex,
        catalog: Catalog,
        clients: StageClients,
        metrics: Metrics,
        clock: Callable[[], float],
        *,
        interval_s: float = 1.0,
    ) -> None:
        self._store = store
        self._index = index
        self._catalog = catalog
        self._clients = clients
        self._metrics = metrics
        self._clock = clock
        self._interval_s = interval_s
        self._schema_ready = False

    def ensure_schema(self) -> None:
        """Its tables, and those its comparison joins (outcomes, corrections), if missing."""
        if not self._schema_ready:
            ensure_outcomes(self._store)
            ensure_corrections(self._store)
            ensure_shadow(self._store)
            self._schema_ready = True

    def of_incident(self, incident_key: str) -> list[dict[str, Any]]:
        """`shadows` of `GET /decisions/{id}`: what the shadow stages and policies would have done, and how
        that compares with the ground truth so far."""
        self.ensure_schema()
        return shadows_of(self._store, incident_key)

    # recording (after the live commit)

    def has_work(self, event: AlertEvent, live: Policy | None) -> list[Policy] | None:
        """The Shadow policies matching the alert, or None when there is nothing to shadow at all (cheap)."""
        shadows = select_shadow_policies(event, self._index)
        live_stages = live is not None and not live.spec.shadow and any(s.shadow for s in live.spec.chain)
        return shadows if shadows or live_stages else None

    async def record(self, event: AlertEvent, live: Policy | None, live_decision_id: str | None) -> int:
        """Decide and record the alert's shadow decisions; how many were new. Never raises."""
        try:
            shadows = self.has_work(event, live)
            if shadows is None:
                return 0
            return await self._record(event, live, shadows, live_decision_id)
        except Exception:  # measurement must never cost the live path anything
            log.exception("could not record shadow decisions", extra={"incident": event.incident_key})
            return 0

    async def _record(
        self, event: AlertEvent, live: Policy | None, shadows: list[Policy], live_decision_id: str | None
    ) -> int:
        if not self._schema_ready:
            await asyncio.to_thread(self.ensure_schema)
        decisions = await decide_shadows(event, live, shadows, self._catalog, self._clients)
        policies = {p.key: p for p in shadows}
        if live is not None:
            policies[live.key] = live
        rows = []
        for shadow in decisions:
            annotation = await annotated_call(event, policies[shadow.policy], self._catalog)
            rows.append(self._row(shadow, annotation, live_decision_id))
        return await asyncio.to_thread(self._insert, rows)

    def _row(
        self, shadow: ShadowDecision, annotation: tuple[str | None, dict[str, Any]] | None, live_id: str | None
    ) -> ShadowRow:
        return ShadowRow(
            id=shadow.id,
            incident_key=shadow.incident_key,
            alertname=shadow.alertname,
            policy=shadow.policy,
            stage_index=shadow.stage_index,
            stage=shadow.stage,
            function=shadow.function,
            parameters=dict(shadow.parameters),
            confidence=shadow.confidence,
            reasoning=shadow.reasoning[:2000],
            trace=[t.model_dump(mode="json") for t in shadow.trace],
            live_decision_id=live_id,
            annotation=None if annotation is None else Call(*annotation),
            decided_at=self._clock(),
        )

    def _insert(self, rows: list[ShadowRow]) -> int:
        with self._store.transaction(durable=False) as tx:
            sql = ShadowSql(tx)
            return sum(sql.insert_shadow(row) for row in rows)

    # natural resolutions (inside the engine's commit transaction)

    @staticmethod
    def record_natural(tx: Any, decision: Decision, policy: Policy, now: float) -> None:
        """In the transaction that commits a dry-run decision proposing a function: watch for a resolution."""
        if not decision.function:
            return
        ShadowSql(tx).insert_natural(
            NaturalRow(
                decision_id=decision.id,
                incident_key=decision.incident_key,
                policy=policy.key,
                function=decision.function,
                alertname=decision.alertname,
                decided_at=now,
                window_seconds=policy.spec.actions.verify.window_seconds,
                state="pending",
                resolved_at=None,
                finished_at=None,
            )
        )

    # the loop

    async def run(self) -> None:
        """Compare open shadow decisions and judge natural resolutions every `interval_s` until cancelled."""
        while True:
            try:
                await self.evaluate()
            except StoreError as exc:
                log.warning("cannot compare shadow decisions (will retry): %s", exc)
            await asyncio.sleep(self._interval_s)

    async def evaluate(self) -> int:
        """One pass; returns how many comparisons and natural resolutions became final."""
        judged, naturals = await asyncio.to_thread(self._evaluate)
        for j in judged:
            self._metrics.shadow_decisions.labels(policy=j.policy, stage=j.stage, agreement=j.agreement).inc()
        for policy, function, result in naturals:
            self._metrics.natural_resolutions.labels(policy=policy, function=function, result=result).inc()
        return len(judged) + len(naturals)

    def _evaluate(self) -> tuple[list[_Judged], list[tuple[str, str, str]]]:
        self.ensure_schema()
        now = self._clock()
        judged: list[_Judged] = []
        with self._store.reading() as tx:
            sql = ShadowSql(tx)
            open_ = [(row, sql.live_facts(row.incident_key)) for row in sql.open_shadows()]
            naturals = sql.open_naturals()
        for row, live in open_:
            result = compare(Call(row.function, row.parameters), row.annotation, live)
            if (result.agreement, result.truth_source, result.final) == (row.agreement, row.truth_source, False):
                continue  # nothing new to write
            with self._store.transaction(durable=False) as tx:
                if ShadowSql(tx).set_comparison(row.id, result, now) and result.final:
                    judged.append(_Judged(row.policy, row.stage, result.agreement))
        finished: list[tuple[str, str, str]] = []
        for natural, incident_known, resolved_at in naturals:
            state = _natural_state(natural, incident_known, resolved_at, now)
            if state is None:
                continue
            with self._store.transaction(durable=False) as tx:
                if ShadowSql(tx).finish_natural(natural.decision_id, state, resolved_at, now):
                    finished.append((natural.policy, natural.function, state))
        return judged, finished


def shadows_of(store: StoreBackend, incident_key: str) -> list[dict[str, Any]]:
    """An incident's shadow decisions as `GET /decisions/{id}` and `trm-sre explain` show them (the table must
    exist)."""
    with store.reading() as tx:
        rows = ShadowSql(tx).shadows_of_incident(incident_key)
    return [
        {
            "id": r.id,
            "policy": r.policy,
            "stage": r.stage,
            "function": r.function,
            "parameters": r.parameters,
            "confidence": r.confidence,
            "agreement": r.agreement,
            "truth_source": r.truth_source,
            "final": r.final,
        }
        for r in rows
    ]


def _natural_state(row: NaturalRow, incident_known: bool, resolved_at: float | None, now: float) -> str | None:
    """resolved | still_firing | unknown, or None while the window runs."""
    if not incident_known:
        return "unknown"
    window_end = row.decided_at + row.window_seconds
    if resolved_at is not None and resolved_at <= window_end:
        return "resolved"
    return "still_firing" if now >= window_end else None


__all__ = ["Shadows"]
