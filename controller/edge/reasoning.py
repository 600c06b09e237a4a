"""`/reason` and `io.homelab.reasoning.requested`: other agents ask what the policy's chain would decide.

The chain runs on the alert in the request's context without side effects
(nothing is stored or sent); the answer uses the names the trigger's data uses.

The answer says what the pipeline would really do now (issue #13.4): the
chosen function and parameters are kept, `guard` is what the policy's actions
make of them against the store as it is (`trigger`, `dry_run`,
`approval_required`, `cooldown`, `storm_breaker`, `escalate`), and the
top-level `outcome` is `trigger` only when the pipeline would trigger. The
alert obeys the same label and annotation limits as `/alertmanager`.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fastapi import HTTPException
from pydantic import ValidationError

from controller.client import FREE_FORM_REFUSAL, REMEDIATION_TASK, ReasonRequest, ReasonResult
from controller.edge.cloudevents_in import summarize_validation
from controller.edge.config import Limits
from controller.edge.limits import LimitExceeded, check_alert_limits
from controller.engine.trace_hooks import trm_steps
from controller.observability import tracing
from controller.schemas.alerts import Alert, AlertEvent
from controller.schemas.decision import Decision

if TYPE_CHECKING:
    from controller.engine.pipeline import Pipeline


def alert_event_from_context(context: dict[str, Any]) -> AlertEvent:
    """`context.alert` (an Alertmanager alert object) or `context.labels` / `context.annotations`."""
    raw = context.get("alert")
    if raw is None and "labels" in context:
        raw = {"labels": context.get("labels"), "annotations": context.get("annotations") or {}}
    if not isinstance(raw, dict):
        raise HTTPException(
            status_code=422,
            detail="remediation needs an alert: context.alert (an Alertmanager alert object) or context.labels",
        )
    fields = {"status": "firing", "startsAt": datetime.now(UTC).isoformat(), **raw}
    try:
        alert = Alert.model_validate(fields)
    except ValidationError as exc:
        raise HTTPException(status_code=422, detail=f"invalid alert in context: {summarize_validation(exc)}") from exc
    common = context.get("commonAnnotations") or {}
    return AlertEvent(alert=alert, common_annotations=common if isinstance(common, dict) else {}, source="reason")


def decision_answer(decision: Decision | None, guard: tuple[str, str] | None = None) -> dict[str, Any]:
    """The decision as the answer other agents read: the names the trigger's data uses, and the guards' verdict."""
    if decision is None:
        return {
            "lambda_function": None,
            "parameters": {},
            "outcome": "no_policy",
            "guard": None,
            "guard_reason": None,
            "policy": None,
            "decision_id": None,
            "stage": None,
            "reasoning": "no RemediationPolicy matches this alert",
        }
    chosen = decision.outcome == "trigger"
    outcome, why = guard if guard is not None else (decision.outcome, "")
    return {
        "lambda_function": decision.function if chosen else None,
        "parameters": decision.parameters if chosen else {},
        "outcome": outcome,
        "guard": outcome,
        "guard_reason": why,
        "policy": decision.policy,
        "decision_id": decision.id,
        "stage": decision.stage,
        "reasoning": decision.reasoning,
    }


async def answer_reasoning(pipeline: Pipeline, request: ReasonRequest, limits: Limits | None = None) -> ReasonResult:
    """Run the policy's chain for the alert in `request.context`, without side effects."""
    if request.task_type != REMEDIATION_TASK:
        raise HTTPException(status_code=422, detail=f"{FREE_FORM_REFUSAL} (task_type must be {REMEDIATION_TASK!r})")
    event = alert_event_from_context(request.context)
    if limits is not None:
        try:
            check_alert_limits([event], limits)
        except LimitExceeded as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from exc
    started_ns = time.time_ns()
    started = time.perf_counter()
    decision = await pipeline.decide_only(event)
    if decision is not None:  # the chain's stages as spans of the request's span (nothing when tracing is off)
        tracing.record_stages(decision.trace, started_ns, trm_steps(decision))
    guard = await asyncio.to_thread(pipeline.guard_outcome, decision) if decision is not None else None
    duration_ms = (time.perf_counter() - started) * 1000
    trace = [t.model_dump(mode="json") for t in decision.trace] if decision else []
    return ReasonResult(
        answer=json.dumps(decision_answer(decision, guard), sort_keys=True),
        steps=len(trace),
        confidence=(decision.confidence or 0.0) if decision and decision.outcome == "trigger" else 0.0,
        reasoning_trace=trace,
        duration_ms=round(duration_ms, 3),
        decision_id=decision.id if decision else None,
        conversation_id=request.conversation_id,
    )
