"""Builders shared by the decision tests: alerts, policies, a fake TRM, the fixture payloads."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controller.decision.parsing import ParsedCall, ParseError
from controller.schemas.alerts import (
    Alert,
    AlertEvent,
    AlertmanagerPayload,
    split_payload,
)
from controller.schemas.policy import Policy, PolicySpec

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "alerts"
ALL_FUNCTIONS = (
    "check-pvc-status",
    "flux-reconcile-gitrepository",
    "flux-reconcile-helmrelease",
    "flux-reconcile-kustomization",
    "pod-check-status",
    "pod-restart",
    "scale-deployment",
)


def event(
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    *,
    status: str = "firing",
    common_annotations: dict[str, str] | None = None,
    starts_at: str = "2026-05-01T10:00:00Z",
) -> AlertEvent:
    """One alert event; `labels` default to a crash-looping pod in shop."""
    alert = Alert.model_validate(
        {
            "status": status,
            "labels": labels
            if labels is not None
            else {"alertname": "KubePodCrashLooping", "namespace": "shop", "pod": "cart-7f9"},
            "annotations": annotations or {},
            "startsAt": starts_at,
        }
    )
    return AlertEvent(alert=alert, common_annotations=common_annotations or {})


def policy(
    *chain: dict[str, Any],
    allowed: tuple[str, ...] = ALL_FUNCTIONS,
    scope: tuple[str, ...] = ("*",),
    namespace: str = "ops",
    name: str = "test",
    **spec: Any,
) -> Policy:
    """A policy from camelCase chain entries, e.g. policy({"staticAnnotation": {}}, {"rules": [...]})."""
    # Validated with every rule's function allowed, then narrowed without re-validation: the apiserver
    # (CEL) and PolicySpec refuse a rule whose function is not allowed, but the decision core must
    # refuse it again on its own (defence in depth), so tests build such policies on purpose.
    rule_functions = [r.get("function") for stage in chain for r in stage.get("rules") or () if isinstance(r, dict)]
    widened = list(dict.fromkeys([*allowed, *(f for f in rule_functions if isinstance(f, str))]))
    body = {"allowedFunctions": widened, "targetNamespaces": list(scope), "chain": list(chain), **spec}
    validated = PolicySpec.model_validate(body).model_copy(update={"allowed_functions": tuple(allowed)})
    return Policy.model_construct(namespace=namespace, name=name, generation=1, spec=validated)


def static_annotation(function: str, parameters: Any = None) -> dict[str, str]:
    annotations = {"lambda_function": function}
    if parameters is not None:
        annotations["lambda_parameters"] = parameters if isinstance(parameters, str) else json.dumps(parameters)
    return annotations


@dataclass
class FakeDecision:
    """Shaped like `models.selector.ModelDecision`."""

    lambda_function: str | None
    parameters: dict[str, Any]
    confidence: float
    steps: int
    text: str


@dataclass
class FakeTRM:
    """Answers with a fixed decision (or raises, or blocks) and records what it was asked."""

    function: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    confidence: float = 0.95
    text: str | None = None  # default: the JSON of function + parameters
    error: Exception | None = None
    block: threading.Event | None = None  # wait on it (bounded) before answering: a slow model
    calls: list[tuple[dict[str, Any], int | None]] = field(default_factory=list)

    def select(self, alert: dict[str, Any], *, max_steps: int | None = None) -> FakeDecision:
        self.calls.append((alert, max_steps))
        if self.block is not None:
            self.block.wait(timeout=5)
        if self.error is not None:
            raise self.error
        text = self.text
        if text is None:
            text = json.dumps(
                {"lambda_function": self.function, "parameters": self.parameters, "confidence": self.confidence}
            )
        return FakeDecision(self.function, dict(self.parameters), self.confidence, 3, text)


def fixture_events(name: str) -> list[AlertEvent]:
    payload = AlertmanagerPayload.model_validate_json((FIXTURES / name).read_text())
    return split_payload(payload)


def assert_call_or_parse_error(parse: Callable[[Any], ParsedCall], value: Any) -> None:
    """`parse(value)` gives a well-typed ParsedCall or raises ParseError, and nothing else."""
    try:
        parsed = parse(value)
    except ParseError:
        return
    assert isinstance(parsed, ParsedCall)
    assert parsed.function is None or isinstance(parsed.function, str)
    assert isinstance(parsed.parameters, dict)
