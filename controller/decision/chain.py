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

import asyncio
import time
from typing import TYPE_CHECKING, Any

from controller.decision.stages import (
    StageClients,
    StageContext,
    run_function_calling,
    run_rules,
    run_static_annotation,
    run_trm,
)
from controller.schemas.alerts import AlertEvent
from controller.schemas.decision import (
    Decision,
    ShadowDecision,
    StageOutcome,
    StageTrace,
    decision_id,
    shadow_decision_id,
)
from controller.schemas.policy import Policy, Stage
from runbooks import Catalog

if TYPE_CHECKING:
    from controller.decision.policy_index import PolicyIndex

__all__ = ["StageClients", "annotated_call", "decide", "decide_shadows", "select_policy", "select_shadow_policies"]


def select_policy(event: AlertEvent, index: PolicyIndex) -> Policy | None:
    """The policy that governs this alert, or None. A Shadow policy never governs one.

    Precedence: the highest ``spec.priority``, then the most specific match
    (``AlertMatch.specificity``), then ``namespace/name`` ascending.
    """
    return next((p for p in index.matching(event) if not p.spec.shadow), None)


def select_shadow_policies(event: AlertEvent, index: PolicyIndex) -> list[Policy]:
    """Every Shadow policy that matches the alert (each is evaluated beside the live one), in precedence order."""
    return [p for p in index.matching(event) if p.spec.shadow]


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
        if stage.shadow and not policy.spec.shadow:
            continue  # evaluated on its own beside the chain (`decide_shadows`), never acted on
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


async def decide_shadows(
    event: AlertEvent, live: Policy | None, shadows: list[Policy], catalog: Catalog, clients: StageClients
) -> list[ShadowDecision]:
    """The shadow decisions for one alert: each Shadow policy's whole chain, and each `shadow: true` stage of
    the live policy on its own. Concurrent; nothing here acts on anything."""
    jobs = [_shadow_policy(event, p, catalog, clients) for p in shadows]
    if live is not None and not live.spec.shadow:
        jobs += [
            _shadow_stage(event, live, index, stage, catalog, clients)
            for index, stage in enumerate(live.spec.chain)
            if stage.shadow
        ]
    return list(await asyncio.gather(*jobs))


async def _shadow_policy(event: AlertEvent, policy: Policy, catalog: Catalog, clients: StageClients) -> ShadowDecision:
    decision = await decide(event, policy, catalog, clients)
    confidence = decision.confidence
    if decision.outcome == "escalate":  # how sure the most confident stage was that passed
        reported = [t.confidence for t in decision.trace if t.confidence is not None]
        confidence = max(reported) if reported else None
    return ShadowDecision(
        id=shadow_decision_id(event.incident_key, policy.key, None),
        incident_key=event.incident_key,
        alertname=event.alert.alertname,
        policy=policy.key,
        stage_index=None,
        stage=decision.stage or "none",
        function=decision.function if decision.outcome == "trigger" else None,
        parameters=decision.parameters,
        confidence=confidence,
        reasoning=decision.reasoning,
        trace=decision.trace,
    )


async def _shadow_stage(
    event: AlertEvent, policy: Policy, index: int, stage: Stage, catalog: Catalog, clients: StageClients
) -> ShadowDecision:
    ctx = StageContext(index=index, kind=stage.kind, event=event, policy=policy, catalog=catalog)
    trace = await _timed(ctx, stage, clients)
    accepted = trace.outcome is StageOutcome.ACCEPTED
    return ShadowDecision(
        id=shadow_decision_id(event.incident_key, policy.key, index),
        incident_key=event.incident_key,
        alertname=event.alert.alertname,
        policy=policy.key,
        stage_index=index,
        stage=stage.kind,
        function=trace.function if accepted else None,
        parameters=trace.parameters if accepted else {},
        confidence=trace.confidence,
        reasoning=f"{trace.stage}: {trace.outcome.value}: {trace.reason}",
        trace=(trace,),
    )


async def annotated_call(
    event: AlertEvent, policy: Policy, catalog: Catalog
) -> tuple[str | None, dict[str, Any]] | None:
    """The rule author's call in the alert's `lambda_function` / `lambda_parameters` annotations, as the
    staticAnnotation stage reads it: (function, parameters), (None, {}) for an explicit "none", or None when
    the alert carries no usable annotation."""
    function = event.merged_annotations().get("lambda_function", "").strip()
    if not function:
        return None
    if function.lower() in ("none", "null"):
        return None, {}  # the author says no action is right
    ctx = StageContext(index=0, kind="staticAnnotation", event=event, policy=policy, catalog=catalog)
    trace = await run_static_annotation(ctx)
    if trace.outcome is StageOutcome.ACCEPTED and trace.function:
        return trace.function, dict(trace.parameters)
    return None  # an annotation the policy could not use (unknown or disallowed function, bad parameters)
