"""The four chain stages. Each proposes at most one call and returns a `StageTrace`; none raises.

A stage's outcome tells the chain whether to stop (ACCEPTED) or hand over to the
next stage, and the trace's reason tells a human why:

- ``staticAnnotation``: the alert's ``lambda_function`` / ``lambda_parameters``
  annotations (the group's common annotations under the alert's own). Parameters
  the annotation leaves out are filled from the alert's labels, using each
  runbook parameter's ``sources`` (as the system we replace did, and as rule
  authors expect); the reason names every filled parameter. Confidence 1.0.
- ``trm``: the Tiny Recursive Model, run in a worker thread under ``timeoutMs``.
  Its decision *text* goes through the common parser, like any model output.
- ``functionCalling``: an LLM server through tool calling (see
  ``function_calling.py``). LLM servers report no calibrated confidence, so the
  stage's confidence is None; a stage with ``minConfidence`` set therefore never
  accepts (BELOW_THRESHOLD, saying so) and only records what the model proposed.
- ``rules``: the policy's own rules; the first rule whose match covers the alert
  is the stage's only proposal (later rules are not tried even if it fails
  validation, so a rule author can predict the outcome). Confidence 1.0: a rule
  is the operator's explicit intent.

Every proposal, whichever stage made it, is checked by ``validation.py``.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from controller.decision import function_calling
from controller.decision.matching import compile_match
from controller.decision.parsing import (
    ParsedCall,
    ParseError,
    load_json_object,
    parse_call,
)
from controller.decision.templates import TemplateError, render_template
from controller.decision.validation import validate_proposal
from controller.schemas.alerts import AlertEvent
from controller.schemas.decision import StageOutcome, StageTrace
from controller.schemas.policy import (
    FunctionCallingStage,
    Policy,
    Rule,
    SecretKeyRef,
    TRMStage,
)
from runbooks import Catalog

# Bound what a trace keeps of a stage's raw output and proposed values: traces are stored and emitted.
MAX_TRACE_TEXT = 4096
MAX_TRACE_VALUE = 256


class ModelOutput(Protocol):
    """What `TRMSelector.select` returns (`models.selector.ModelDecision`)."""

    lambda_function: str | None
    parameters: dict[str, Any]
    confidence: float
    steps: int
    text: str


class ModelSelector(Protocol):
    """The part of `models.selector.TRMSelector` the TRM stage uses."""

    def select(self, alert: dict[str, Any], *, max_steps: int | None = None) -> ModelOutput: ...


SecretResolver = Callable[[str, SecretKeyRef], str | None]


@dataclass
class StageClients:
    """The I/O the stages may use, injected so the decision core stays testable without a cluster.

    trm: the loaded model, usually behind a `ModelBatcher` (which adds `select_async`); None =
        disabled or unavailable (the TRM stage reports ERROR and hands over).
    chat: the transport for functionCalling stages; None = functionCalling stages report ERROR.
    secrets: resolves (policy namespace, secretRef) to a bearer token, or None if not found.
    """

    trm: ModelSelector | None = None
    chat: function_calling.ChatTransport | None = None
    secrets: SecretResolver | None = None


def _short(value: Any) -> Any:
    """A trace-sized copy of a proposed value: long strings cut, containers bounded."""
    if isinstance(value, str):
        return value if len(value) <= MAX_TRACE_VALUE else value[: MAX_TRACE_VALUE - 3] + "..."
    if isinstance(value, dict):
        return {_short(str(k)): _short(v) for k, v in list(value.items())[:32]}
    if isinstance(value, list):
        return [_short(v) for v in value[:32]]
    return value


def _clip(text: str | None) -> str | None:
    if text is None or len(text) <= MAX_TRACE_TEXT:
        return text
    return text[:MAX_TRACE_TEXT] + f"... [{len(text) - MAX_TRACE_TEXT} more characters]"


@dataclass(frozen=True)
class StageContext:
    """What every stage of one decision shares: its place in the chain, the alert, the policy, the catalog."""

    index: int
    kind: str
    event: AlertEvent
    policy: Policy
    catalog: Catalog

    def trace(self, outcome: StageOutcome, reason: str, **fields: Any) -> StageTrace:
        return StageTrace(index=self.index, stage=self.kind, outcome=outcome, reason=reason, **fields)  # type: ignore[arg-type]

    def judge(
        self,
        proposal: ParsedCall,
        *,
        confidence: float | None,
        raw_output: str | None,
        note: str = "",
        min_confidence: float | None = None,
        no_confidence_reason: str = "",
    ) -> StageTrace:
        """Abstention, threshold and validation, the same way for every stage."""
        fields: dict[str, Any] = {"raw_output": _clip(raw_output), "confidence": confidence}
        if proposal.abstained:
            why = proposal.reasoning or "no function proposed"
            return self.trace(StageOutcome.ABSTAINED, f"{note}abstained: {why}", **fields)
        fields["parsed"] = _short(proposal.as_dict())
        fields["function"] = _short(proposal.function)
        if min_confidence is not None:
            if confidence is None:
                return self.trace(StageOutcome.BELOW_THRESHOLD, f"{note}{no_confidence_reason}", **fields)
            if not confidence >= min_confidence:
                return self.trace(
                    StageOutcome.BELOW_THRESHOLD,
                    f"{note}confidence {confidence:.3f} is below minConfidence {min_confidence:.3f} for "
                    f"{fields['function']}",
                    **fields,
                )
        verdict = validate_proposal(proposal.function or "", proposal.parameters, self.policy, self.catalog)
        if verdict.accepted:
            fields["parameters"] = verdict.parameters
        return self.trace(verdict.outcome, note + verdict.reason, **fields)


# --- staticAnnotation ---------------------------------------------------------------------------


def _fill_from_labels(function: str, parameters: dict[str, Any], event: AlertEvent, catalog: Catalog) -> list[str]:
    """Fill parameters the annotation left out from the runbook's label `sources`; say which."""
    runbook = catalog.get(function)
    if runbook is None:
        return []
    labels, filled = event.alert.labels, []
    for param in runbook.parameters:
        if parameters.get(param.name) not in (None, ""):
            continue
        source = next((s for s in param.sources if labels.get(s)), None)
        if source is not None:
            parameters[param.name] = labels[source]
            filled.append(f"{param.name} from label {source}")
    return filled


async def run_static_annotation(ctx: StageContext) -> StageTrace:
    annotations = ctx.event.merged_annotations()
    function = annotations.get("lambda_function", "").strip()
    raw_parameters = annotations.get("lambda_parameters")
    raw = json.dumps({"lambda_function": function, "lambda_parameters": raw_parameters})
    if not function:
        return ctx.trace(StageOutcome.ABSTAINED, "the alert has no lambda_function annotation")
    if function.lower() in ("none", "null"):
        return ctx.trace(
            StageOutcome.ABSTAINED, f"the lambda_function annotation is {function!r}", raw_output=_clip(raw)
        )
    try:
        parameters = (
            load_json_object(raw_parameters, "lambda_parameters") if raw_parameters and raw_parameters.strip() else {}
        )
    except ParseError as exc:
        return ctx.trace(
            StageOutcome.INVALID,
            f"lambda_parameters annotation: {exc}",
            raw_output=_clip(raw),
            function=_short(function),
        )
    parameters = dict(parameters)
    filled = _fill_from_labels(function, parameters, ctx.event, ctx.catalog)
    note = f"filled {', '.join(filled)}; " if filled else ""
    return ctx.judge(ParsedCall(function, parameters), confidence=1.0, raw_output=raw, note=note)


# --- trm ----------------------------------------------------------------------------------------


async def run_trm(ctx: StageContext, stage: TRMStage, clients: StageClients) -> StageTrace:
    model = clients.trm
    if model is None:
        return ctx.trace(StageOutcome.ERROR, "model not loaded")
    alert = ctx.event.as_alert_dict()
    try:
        # The controller hands us a `ModelBatcher` (concurrent asks share one model call); anything
        # else is called directly in a thread. Either way a timed-out call's thread keeps running
        # (threads cannot be cancelled); it is small and bounded by max_steps, and its answer is dropped.
        select_async = getattr(model, "select_async", None)
        call = (
            select_async(alert, max_steps=stage.max_steps)
            if select_async is not None
            else asyncio.to_thread(model.select, alert, max_steps=stage.max_steps)
        )
        output = await asyncio.wait_for(call, timeout=stage.timeout_ms / 1000)
    except TimeoutError:
        return ctx.trace(StageOutcome.TIMEOUT, f"the model did not answer within {stage.timeout_ms} ms")
    except Exception as exc:  # noqa: BLE001 - any model failure hands over to the next stage; the trace says what it was
        return ctx.trace(StageOutcome.ERROR, f"the model failed: {type(exc).__name__}: {str(exc)[:200]}")
    reported = getattr(output, "confidence", None)
    # NaN or infinite is no confidence at all (and would not survive JSON serialisation of the trace).
    confidence = float(reported) if isinstance(reported, int | float) and math.isfinite(reported) else None
    steps = getattr(output, "steps", None)
    note = f"{steps} steps; " if isinstance(steps, int) else ""
    text = getattr(output, "text", None)
    if getattr(output, "lambda_function", None) is None:
        return ctx.trace(
            StageOutcome.ABSTAINED,
            f"{note}the model proposed no function",
            raw_output=_clip(text),
            confidence=confidence,
        )
    try:
        proposal = parse_call(text if isinstance(text, str) else "")
    except ParseError as exc:
        return ctx.trace(
            StageOutcome.INVALID, f"{note}unreadable model output: {exc}", raw_output=_clip(text), confidence=confidence
        )
    if proposal.function is not None and proposal.function != output.lambda_function:
        return ctx.trace(
            StageOutcome.INVALID,
            f"{note}the model's text names {_short(proposal.function)!r} but its decision names "
            f"{_short(output.lambda_function)!r}",
            raw_output=_clip(text),
            confidence=confidence,
        )
    return ctx.judge(
        proposal,
        confidence=confidence,
        raw_output=text,
        note=note,
        min_confidence=stage.min_confidence,
        no_confidence_reason="the model reported no confidence",
    )


# --- functionCalling ----------------------------------------------------------------------------


async def _resolve_token(
    ctx: StageContext, stage: FunctionCallingStage, clients: StageClients
) -> str | StageTrace | None:
    ref = stage.secret_ref
    if ref is None:
        return None
    where = f"secret {ctx.policy.namespace}/{ref.name} key {ref.key}"
    if clients.secrets is None:
        return ctx.trace(StageOutcome.ERROR, f"secretRef is set but no secret resolver is configured ({where})")
    try:
        token = await asyncio.to_thread(clients.secrets, ctx.policy.namespace, ref)
    except Exception as exc:  # noqa: BLE001 - a resolver failure must hand over, never break the decision
        return ctx.trace(StageOutcome.ERROR, f"could not read {where}: {type(exc).__name__}")
    if not token:
        return ctx.trace(StageOutcome.ERROR, f"{where} was not found or is empty")
    return token


async def _ask_server(ctx: StageContext, stage: FunctionCallingStage, clients: StageClients) -> StageTrace:
    if clients.chat is None:
        return ctx.trace(StageOutcome.ERROR, "no HTTP client is configured for functionCalling")
    token = await _resolve_token(ctx, stage, clients)
    if isinstance(token, StageTrace):
        return token
    tools = function_calling.build_tools(ctx.catalog, ctx.policy.spec.allowed_functions)
    url, body = function_calling.build_request(stage, ctx.event, tools)
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        raw = await clients.chat.post_json(url, body, headers)
    except function_calling.ReplyError as exc:
        outcome = StageOutcome.ERROR if exc.outcome == "error" else StageOutcome.INVALID
        return ctx.trace(outcome, str(exc))
    text = raw.decode("utf-8", "replace")
    try:
        proposal = function_calling.read_reply(stage.api, raw)
    except ParseError as exc:
        return ctx.trace(StageOutcome.INVALID, f"unusable reply from {stage.model}: {exc}", raw_output=_clip(text))
    return ctx.judge(
        proposal,
        confidence=None,
        raw_output=text,
        note=f"{stage.model}: ",
        min_confidence=stage.min_confidence,
        no_confidence_reason=(
            "minConfidence is set but function-calling servers report no calibrated confidence, "
            "so this stage never accepts; remove minConfidence to let it decide"
        ),
    )


async def run_function_calling(ctx: StageContext, stage: FunctionCallingStage, clients: StageClients) -> StageTrace:
    try:
        return await asyncio.wait_for(_ask_server(ctx, stage, clients), timeout=stage.timeout_ms / 1000)
    except TimeoutError:
        return ctx.trace(StageOutcome.TIMEOUT, f"{stage.model} did not answer within {stage.timeout_ms} ms")


# --- rules --------------------------------------------------------------------------------------


def _render_rule(rule: Rule, event: AlertEvent) -> dict[str, str]:
    """The rule's parameters rendered against the alert; empty values are left out (absent)."""
    labels, annotations = event.alert.labels, event.merged_annotations()
    rendered = {}
    for name, template in rule.parameters.items():
        try:
            value = render_template(template, labels, annotations)
        except TemplateError as exc:
            raise TemplateError(f"parameter {name}: {exc}") from None
        if value != "":
            rendered[name] = value
    return rendered


async def run_rules(ctx: StageContext, rules: tuple[Rule, ...]) -> StageTrace:
    labels: Mapping[str, str] = ctx.event.alert.labels
    for number, rule in enumerate(rules, start=1):
        if not compile_match(rule.match).matches(labels):
            continue
        note = f"rule {number} ({rule.function}) matched; "
        raw = json.dumps({"rule": number, "function": rule.function, "parameters": rule.parameters})
        try:
            parameters = _render_rule(rule, ctx.event)
        except TemplateError as exc:
            return ctx.trace(
                StageOutcome.INVALID, f"{note}template error: {exc}", raw_output=raw, function=rule.function
            )
        return ctx.judge(ParsedCall(rule.function, parameters), confidence=1.0, raw_output=raw, note=note)
    return ctx.trace(StageOutcome.ABSTAINED, f"none of the {len(rules)} rules matches the alert")
