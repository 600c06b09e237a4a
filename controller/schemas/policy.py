"""The RemediationPolicy spec (remediation.homelab.io/v1alpha1), as the decision path reads it.

This mirrors `crds/remediationpolicy.yaml` field for field (camelCase on the
wire, snake_case in Python); a test keeps the two in step. The apiserver
already enforces shapes, enums, bounds and cross-field CEL rules; these models
enforce them again so standalone mode (policies from YAML files, no
apiserver) rejects exactly what the cluster would.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel


class _Spec(BaseModel):
    # Typos in field names must fail, never be silently dropped.
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True)


class LabelMatcher(_Spec):
    """Like an Alertmanager matcher: `label op value`."""

    label: str = Field(min_length=1, max_length=128)
    op: Literal["=", "!=", "=~", "!~"] = "="
    value: str = Field(default="", max_length=1024)

    @model_validator(mode="after")
    def _regex_compiles(self) -> LabelMatcher:
        if self.op in ("=~", "!~"):
            try:
                re.compile(self.value)
            except re.error as exc:
                raise ValueError(f"matcher on {self.label}: invalid regex: {exc}") from exc
        return self

    def matches(self, labels: dict[str, str]) -> bool:
        actual = labels.get(self.label, "")  # a missing label matches like the empty string, as in Alertmanager
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        hit = re.fullmatch(self.value, actual) is not None  # anchored, as in Alertmanager
        return hit if self.op == "=~" else not hit


class AlertMatch(_Spec):
    """Which alerts a policy (or a rule) covers. Every given criterion must hold; none given = every alert."""

    alert_names: tuple[str, ...] = ()
    alert_name_regex: str | None = None
    matchers: tuple[LabelMatcher, ...] = ()
    severities: tuple[str, ...] = ()

    @field_validator("alert_name_regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"alertNameRegex is not a valid regex: {exc}") from exc
        return value

    @property
    def specificity(self) -> int:
        """How many criteria are set: a tie-breaker when several policies match."""
        return len(self.alert_names) + (self.alert_name_regex is not None) + len(self.matchers) + len(self.severities)


class StaticAnnotationStage(_Spec):
    """Use the alert's `lambda_function` / `lambda_parameters` annotations (no options yet)."""


class TRMStage(_Spec):
    min_confidence: float = Field(default=0.8, ge=0.0, le=1.0)
    max_steps: int = Field(default=8, ge=1, le=32)
    timeout_ms: int = Field(default=200, ge=1, le=60_000)


class SecretKeyRef(_Spec):
    name: str = Field(min_length=1, max_length=253)
    key: str = Field(default="token", min_length=1, max_length=253)


class FunctionCallingStage(_Spec):
    endpoint: str = Field(min_length=1, max_length=2048, pattern=r"^https?://")
    api: Literal["ollama", "openai"] = "ollama"
    model: str = Field(default="functiongemma", min_length=1, max_length=256)
    min_confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    timeout_ms: int = Field(default=5000, ge=1, le=120_000)
    secret_ref: SecretKeyRef | None = None


class Rule(_Spec):
    """match → function + parameter templates.

    A template is literal text with `{{ $labels.NAME }}` / `{{ $annotations.NAME }}`
    references; `{{ $labels.a | $labels.b | "default" }}` takes the first non-empty.
    """

    match: AlertMatch = AlertMatch()
    function: str = Field(min_length=1, max_length=63)
    parameters: dict[str, str] = Field(default_factory=dict)


class Stage(_Spec):
    """Exactly one stage type per chain entry."""

    static_annotation: StaticAnnotationStage | None = None
    trm: TRMStage | None = None
    function_calling: FunctionCallingStage | None = None
    rules: tuple[Rule, ...] | None = Field(default=None, min_length=1, max_length=64)
    # Evaluated on its own beside the live chain, recorded and compared, never acted on (`controller.engine.shadows`).
    shadow: bool = False

    @model_validator(mode="after")
    def _exactly_one(self) -> Stage:
        set_ = [n for n in ("static_annotation", "trm", "function_calling", "rules") if getattr(self, n) is not None]
        if len(set_) != 1:
            raise ValueError(
                "each chain stage must set exactly one of staticAnnotation, trm, functionCalling, rules (got "
                f"{len(set_)})"
            )
        return self

    @property
    def kind(self) -> Literal["staticAnnotation", "trm", "functionCalling", "rules"]:
        if self.static_annotation is not None:
            return "staticAnnotation"
        if self.trm is not None:
            return "trm"
        if self.function_calling is not None:
            return "functionCalling"
        return "rules"


class Verify(_Spec):
    """How a delivered trigger's outcome is judged (`controller.engine.outcomes`)."""

    window_seconds: int = Field(default=900, ge=1, le=604_800)
    recurrence_seconds: int = Field(default=1800, ge=1, le=604_800)


class CircuitBreaker(_Spec):
    """Per (policy, function): consecutive bad outcomes pause the function (`controller.engine.outcomes`)."""

    failures: int = Field(default=3, ge=1, le=1000)
    window_seconds: int = Field(default=3600, ge=1, le=604_800)
    cooldown_seconds: int = Field(default=1800, ge=1, le=604_800)


class Silence(_Spec):
    """An Alertmanager silence while a delivered trigger is judged (`controller.engine.silences`)."""

    enabled: bool = False
    max_seconds: int = Field(default=3600, ge=1, le=86_400)
    severities: list[str] = Field(default=["warning", "critical"], max_length=20)


class Actions(_Spec):
    sink: str | None = Field(default=None, max_length=2048, pattern=r"^https?://")
    dry_run: bool = False
    cooldown_seconds: int = Field(default=300, ge=0, le=604_800)
    max_triggers_per_window: int = Field(default=20, ge=1, le=100_000)
    window_seconds: int = Field(default=600, ge=1, le=86_400)
    require_approval: bool = False
    approval_timeout_seconds: int | None = Field(default=None, ge=1, le=604_800)
    on_resolved: Literal["record", "cancelPending"] = "cancelPending"
    verify: Verify = Verify()
    circuit_breaker: CircuitBreaker = CircuitBreaker()
    silence: Silence = Silence()

    @model_validator(mode="after")
    def _approval_needs_timeout(self) -> Actions:
        if self.require_approval and self.approval_timeout_seconds is None:
            raise ValueError("requireApproval needs approvalTimeoutSeconds")
        return self

    @property
    def mode(self) -> Literal["active", "dry-run", "approval"]:
        if self.dry_run:
            return "dry-run"
        return "approval" if self.require_approval else "active"


class PolicySpec(_Spec):
    """`spec` of a RemediationPolicy."""

    # Shadow: never selected to act; its chain is evaluated beside the live policy's and only measured.
    mode: Literal["Live", "Shadow"] = "Live"
    priority: int = Field(default=0, ge=-1000, le=1000)
    match: AlertMatch = AlertMatch()
    # Namespaces remediation parameters may target; "*" = any. Empty = the policy's own namespace.
    target_namespaces: tuple[
        Annotated[str, Field(max_length=63, pattern=r"^(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?)$")], ...
    ] = ()
    allowed_functions: tuple[str, ...] = Field(min_length=1, max_length=256)
    chain: tuple[Stage, ...] = Field(min_length=1, max_length=8)
    actions: Actions = Actions()

    @model_validator(mode="after")
    def _rules_use_allowed_functions(self) -> PolicySpec:
        # The same cross-field rule as the CRD's CEL validation, so standalone mode refuses it too.
        for stage in self.chain:
            for rule in stage.rules or ():
                if rule.function not in self.allowed_functions:
                    raise ValueError(f"rule function {rule.function} must also be listed in allowedFunctions")
        return self

    @model_validator(mode="after")
    def _live_policy_has_a_live_stage(self) -> PolicySpec:
        # The same cross-field rule as the CRD's CEL validation: a live chain of shadow stages only never acts.
        if self.mode == "Live" and all(stage.shadow for stage in self.chain):
            raise ValueError("a Live policy needs at least one chain stage without shadow: true")
        return self

    @property
    def shadow(self) -> bool:
        return self.mode == "Shadow"

    @property
    def live_chain(self) -> tuple[Stage, ...]:
        """The stages that decide (the whole chain of a Shadow policy, whose decision is itself a shadow one)."""
        return self.chain if self.shadow else tuple(s for s in self.chain if not s.shadow)

    @property
    def status_mode(self) -> Literal["shadow", "active", "dry-run", "approval"]:
        """`.status.mode`: shadow for a Shadow policy, else what `actions` make of a decision."""
        return "shadow" if self.shadow else self.actions.mode


class Policy(BaseModel):
    """A policy as indexed: its identity plus its spec."""

    model_config = ConfigDict(frozen=True)

    namespace: str
    name: str
    generation: int = 0
    spec: PolicySpec

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def allows_namespace(self, namespace: str) -> bool:
        scope = self.spec.target_namespaces or (self.namespace,)
        return "*" in scope or namespace in scope
