"""The one validator: catalog, allow-list, parameters, namespace scope."""

from __future__ import annotations

import pytest

from controller.decision.validation import validate_proposal
from controller.schemas.decision import StageOutcome
from runbooks import default_catalog

from .helpers import policy

CATALOG = default_catalog()
RULES_ONLY = {"staticAnnotation": {}}  # the chain is irrelevant to the validator


def test_a_valid_allowed_call_is_accepted_with_clean_parameters() -> None:
    verdict = validate_proposal("pod-restart", {"name": "cart-7f9", "namespace": "shop"}, policy(RULES_ONLY), CATALOG)
    assert verdict.accepted
    assert verdict.parameters == {"name": "cart-7f9", "namespace": "shop", "type": "pod"}  # default filled


def test_integers_are_coerced_from_strings() -> None:
    verdict = validate_proposal(
        "scale-deployment", {"name": "api", "namespace": "shop", "replicas": "3"}, policy(RULES_ONLY), CATALOG
    )
    assert verdict.accepted and verdict.parameters["replicas"] == 3


def test_an_invented_function_is_invalid() -> None:
    verdict = validate_proposal("delete-namespace", {"namespace": "shop"}, policy(RULES_ONLY), CATALOG)
    assert verdict.outcome is StageOutcome.INVALID
    assert "not a function in the runbook catalog" in verdict.reason


def test_a_catalog_function_outside_allowed_functions_is_disallowed() -> None:
    verdict = validate_proposal(
        "scale-deployment",
        {"name": "api", "namespace": "shop", "replicas": 3},
        policy(RULES_ONLY, allowed=("pod-restart",)),
        CATALOG,
    )
    assert verdict.outcome is StageOutcome.DISALLOWED
    assert verdict.parameters == {}


@pytest.mark.parametrize(
    ("scope", "policy_namespace", "target", "accepted"),
    [
        (("*",), "ops", "anything", True),
        (("shop", "web"), "ops", "shop", True),
        (("shop", "web"), "ops", "kube-system", False),
        ((), "shop", "shop", True),  # empty scope = the policy's own namespace
        ((), "shop", "web", False),
    ],
)
def test_the_target_namespace_must_be_in_the_policy_scope(
    scope: tuple, policy_namespace: str, target: str, accepted: bool
) -> None:
    p = policy(RULES_ONLY, scope=scope, namespace=policy_namespace)
    verdict = validate_proposal("pod-restart", {"name": "cart", "namespace": target}, p, CATALOG)
    assert verdict.accepted is accepted
    if not accepted:
        assert verdict.outcome is StageOutcome.INVALID and "outside the policy's scope" in verdict.reason


def test_scope_is_checked_on_defaulted_namespaces_too() -> None:
    # flux-reconcile-* default their namespace to flux-system: the default must be in scope as well.
    p = policy(RULES_ONLY, scope=("apps",))
    verdict = validate_proposal("flux-reconcile-kustomization", {"name": "podinfo"}, p, CATALOG)
    assert verdict.outcome is StageOutcome.INVALID and "flux-system" in verdict.reason
    assert validate_proposal(
        "flux-reconcile-kustomization", {"name": "podinfo", "namespace": "apps"}, p, CATALOG
    ).accepted


def test_every_problem_is_named() -> None:
    verdict = validate_proposal(
        "pod-restart", {"name": "Bad Name", "type": "node", "command": "sh"}, policy(RULES_ONLY), CATALOG
    )
    assert verdict.outcome is StageOutcome.INVALID
    for fragment in (
        "unknown parameter 'command'",
        "missing required parameter namespace",
        "type must be one of",
        "not a valid",
    ):
        assert fragment in verdict.reason


def test_non_mapping_parameters_are_invalid_not_a_crash() -> None:
    verdict = validate_proposal("pod-restart", ["cart"], policy(RULES_ONLY), CATALOG)  # type: ignore[arg-type]
    assert verdict.outcome is StageOutcome.INVALID
