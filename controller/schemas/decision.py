"""Decisions and what they emit: the trace of every chain stage, the trigger, the escalation.

A decision is made once per (incident, policy). Its id is derived from the
incident key and the policy, never random, so a crash and a replay arrive at
the same id and the CloudEvents it emits carry the same ids (consumers can
de-duplicate on source + id, as the CloudEvents spec allows).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

LAMBDA_TRIGGER = "io.homelab.agent-sre.lambda.trigger"
REMEDIATION_ESCALATED = "io.homelab.agent-sre.remediation.escalated"
APPROVAL_REQUESTED = "io.homelab.agent-sre.approval.requested"
REASONING_REQUESTED = "io.homelab.reasoning.requested"
REASONING_COMPLETED = "io.homelab.reasoning.completed"
REASONING_FAILED = "io.homelab.reasoning.failed"
LAMBDA_RESPONSE_SUCCESS = "io.knative.lambda.response.success"
LAMBDA_RESPONSE_ERROR = "io.knative.lambda.response.error"


class StageOutcome(StrEnum):
    ACCEPTED = "accepted"
    ABSTAINED = "abstained"  # the stage had nothing to propose (no annotation, model said "none", no rule matched)
    BELOW_THRESHOLD = "below_threshold"
    DISALLOWED = "disallowed"  # a function the policy does not allow
    INVALID = "invalid"  # unparsable output, or parameters that fail the runbook's validation or scope
    ERROR = "error"
    TIMEOUT = "timeout"


class StageTrace(BaseModel):
    """What one chain stage did, and why it was accepted or passed over."""

    model_config = ConfigDict(frozen=True)

    index: int
    stage: Literal["staticAnnotation", "trm", "functionCalling", "rules"]
    outcome: StageOutcome
    reason: str
    raw_output: str | None = None
    parsed: dict[str, Any] | None = None
    function: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    confidence: float | None = None
    latency_ms: float = 0.0


def decision_id(incident_key: str, policy_key: str) -> str:
    """Deterministic: the same incident under the same policy always yields the same id."""
    return hashlib.sha256(f"{incident_key}|{policy_key}".encode()).hexdigest()[:32]


class Decision(BaseModel):
    """The pure decision core's output for one alert under one policy."""

    model_config = ConfigDict(frozen=True)

    id: str
    incident_key: str
    fingerprint: str
    alertname: str
    policy: str  # namespace/name
    outcome: Literal["trigger", "escalate"]
    function: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    stage: str | None = None
    confidence: float | None = None
    reasoning: str = ""
    trace: tuple[StageTrace, ...] = ()
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    # W3C traceparent of the span that decided it (set by the engine when tracing is on): what it emits carries
    # it, `/decisions/{id}` shows its trace id, and a re-send of the incident links to it.
    traceparent: str | None = None

    @property
    def target(self) -> str:
        """What the function acts on, for cooldowns: function plus its namespace and name."""
        name = self.parameters.get("name", self.parameters.get("selector", ""))
        return f"{self.function}:{self.parameters.get('namespace', '')}/{name}"


def shadow_decision_id(incident_key: str, policy_key: str, stage_index: int | None) -> str:
    """Deterministic, like `decision_id`: one shadow decision per (incident, shadow policy or shadow stage)."""
    scope = "policy" if stage_index is None else f"stage-{stage_index}"
    return hashlib.sha256(f"{incident_key}|{policy_key}|shadow|{scope}".encode()).hexdigest()[:32]


class ShadowDecision(BaseModel):
    """What a Shadow policy's chain, or one `shadow: true` stage, would have done: recorded, never acted on."""

    model_config = ConfigDict(frozen=True)

    id: str
    incident_key: str
    alertname: str
    policy: str  # the shadow policy, or the live policy that holds the shadow stage
    stage_index: int | None  # the shadow stage's index in its chain; None: a Shadow policy's whole chain
    stage: str  # the stage that decided, or the shadow stage's kind; "none" when a Shadow policy's chain escalated
    function: str | None = None  # None: it would have done nothing (abstained, or escalated)
    parameters: dict[str, Any] = Field(default_factory=dict)
    confidence: float | None = None
    reasoning: str = ""
    trace: tuple[StageTrace, ...] = ()


class TriggerData(BaseModel):
    """`data` of io.homelab.agent-sre.lambda.trigger (the shape the homelab's lambdas already read)."""

    lambda_function: str
    parameters: dict[str, Any]
    alert: dict[str, Any]
    correlation_id: str
    policy: str
    triggered_by: str
    confidence: float | None
    reasoning: str


class EscalationData(BaseModel):
    """`data` of io.homelab.agent-sre.remediation.escalated: no stage yielded a valid, allowed decision."""

    alert: dict[str, Any]
    correlation_id: str
    policy: str
    reasons: list[str]
    trace: list[StageTrace]
