"""The fallback chain: walk a policy's stages in order; the first ACCEPTED stage decides.

`decide` is the pure decision core's entry point: alert + policy + catalog +
injected clients in, a `Decision` out. It never raises for anything an alert,
a policy, a model or a server can do: every stage returns a trace, and a stage
that breaks anyway is recorded as ERROR and handed over. If no stage accepts,
the decision is to escalate, with every stage's reason in ``reasoning``.

The decision id is derived from (incident, policy), so re-deciding a replayed
alert yields the same id. Resolved alerts are not meant to be decided (the
pipeline records them), but `decide` treats them like any other alert rather
than failing.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from controller.decision.stages import (
    StageClients,
    StageContext,
    run_function_calling,
    run_rules,
    run_static_annotation,
    run_trm,
)
from controller.schemas.alerts import AlertEvent
from controller.schemas.decision import Decision, StageOutcome, StageTrace, decision_id
from controller.schemas.policy import Policy, Stage
from runbooks import Catalog

if TYPE_CHECKING:
    from controller.decision.policy_index import PolicyIndex

__all__ = ["StageClients", "decide", "select_policy"]


def select_policy(event: AlertEvent, index: PolicyIndex) -> Policy | None:
    """The policy that governs this alert, or None.

    Precedence: the highest ``spec.priority``, then the most specific match
    (``AlertMatch.specificity``), then ``namespace/name`` ascending.
    """
    matching = index.matching(event)
    return matching[0] if matching else None


async def _run(ctx: StageContext, stage: Stage, clients: StageClients) -> StageTrace:
    if stage.static_annotation is not None:
        return await run_static_annotation(ctx)
    if stage.trm is not None:
        return await run_trm(ctx, stage.trm, clients)
    if stage.function_calling is not None:
        return await run_function_calling(ctx, stage.function_calling, clients)
    return await run_rules(ctx, stage.rules or ())


async def _timed(ctx: StageContext, stage: Stage, clients: StageClients) -> StageTrace:
    started = time.perf_counter()
    try:
        trace = await _run(ctx, stage, clients)
    except Exception as exc:  # noqa: BLE001 - a bug in a stage must cost one stage, not the decision
        trace = ctx.trace(
            StageOutcome.ERROR, f"internal error in the {ctx.kind} stage: {type(exc).__name__}: {str(exc)[:200]}"
        )
    return trace.model_copy(update={"latency_ms": (time.perf_counter() - started) * 1000})


def _summary(traces: list[StageTrace]) -> str:
    return "; ".join(f"{t.stage}: {t.outcome.value}: {t.reason}" for t in traces) or "the policy has no stages"


async def decide(event: AlertEvent, policy: Policy, catalog: Catalog, clients: StageClients) -> Decision:
    """Walk the policy's chain for one alert; trigger on the first accepted stage, else escalate."""
    traces: list[StageTrace] = []
    common = {
        "id": decision_id(event.incident_key, policy.key),
        "incident_key": event.incident_key,
        "fingerprint": event.fingerprint,
        "alertname": event.alert.alertname,
        "policy": policy.key,
    }
    for index, stage in enumerate(policy.spec.chain):
        ctx = StageContext(index=index, kind=stage.kind, event=event, policy=policy, catalog=catalog)
        trace = await _timed(ctx, stage, clients)
        traces.append(trace)
        if trace.outcome is StageOutcome.ACCEPTED:
            return Decision(
                **common,
                outcome="trigger",
                function=trace.function,
                parameters=trace.parameters,
                stage=trace.stage,
                confidence=trace.confidence,
                reasoning=f"{trace.stage}: {trace.reason}",
                trace=tuple(traces),
            )
    return Decision(**common, outcome="escalate", reasoning=_summary(traces), trace=tuple(traces))
