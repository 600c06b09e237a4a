"""The one validator: is a proposed call something this policy may trigger, with clean parameters?

Every stage's proposal passes through `validate_proposal`, the static
annotation included (an annotation is written by whoever can edit a
PrometheusRule, which is not necessarily who may restart pods in a namespace).
Three checks, in order:

1. the function exists in the runbook catalog (else INVALID: an invented name);
2. the policy's ``allowedFunctions`` lists it (else DISALLOWED);
3. the catalog validates and cleans the parameters (types, DNS-1123 names,
   label selectors, enums, bounds, defaults filled), and the target namespace,
   taken from the *cleaned* parameters so defaults count, is in the policy's
   scope (``targetNamespaces``, or the policy's own namespace when empty)
   (else INVALID).

Only values that survive all three reach a `Decision`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from controller.schemas.decision import StageOutcome
from controller.schemas.policy import Policy
from runbooks import Catalog, InvalidCall


@dataclass(frozen=True)
class Verdict:
    """The validator's answer: ACCEPTED with clean parameters, or DISALLOWED / INVALID with the reason."""

    outcome: StageOutcome
    reason: str
    parameters: dict[str, str | int] = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        return self.outcome is StageOutcome.ACCEPTED


def _shown(value: str) -> str:
    return repr(value if len(value) <= 64 else value[:61] + "...")


def validate_proposal(function: str, parameters: Mapping[str, Any], policy: Policy, catalog: Catalog) -> Verdict:
    """Check a proposed call against the catalog and the policy; never raises for bad input."""
    if not isinstance(function, str) or catalog.get(function) is None:
        return Verdict(StageOutcome.INVALID, f"{_shown(str(function))} is not a function in the runbook catalog")
    allowed = policy.spec.allowed_functions
    if function not in allowed:
        return Verdict(StageOutcome.DISALLOWED, f"{function} is not in the policy's allowedFunctions")
    if not isinstance(parameters, Mapping):
        return Verdict(StageOutcome.INVALID, f"{function}: parameters are not an object")
    try:
        clean = catalog.validate_call(function, parameters, allowed=allowed)
    except InvalidCall as exc:
        return Verdict(StageOutcome.INVALID, f"{function}: " + "; ".join(exc.reasons))
    namespace = clean.get("namespace")
    if namespace is None:
        if "*" not in policy.spec.target_namespaces:
            return Verdict(StageOutcome.INVALID, f"{function}: no target namespace, and the policy's scope is not '*'")
    elif not policy.allows_namespace(str(namespace)):
        scope = ", ".join(policy.spec.target_namespaces or (policy.namespace,))
        return Verdict(
            StageOutcome.INVALID, f"{function}: namespace {namespace} is outside the policy's scope ({scope})"
        )
    return Verdict(StageOutcome.ACCEPTED, f"{function} is allowed and its parameters are valid", clean)
