"""The original system's substring rules (a comparison baseline) behave as §2.D documents."""

from __future__ import annotations

from models.baselines import OriginalSubstringRules


def _sel(labels):
    return OriginalSubstringRules().select_one({"labels": labels})


def test_original_rules_on_the_original_test_set():
    d = _sel({"alertname": "FluxReconciliationFailure", "name": "homepage", "namespace": "flux-system", "kind": "Kustomization"})
    assert (d.lambda_function, d.parameters, d.confidence) == ("flux-reconcile-kustomization", {"name": "homepage", "namespace": "flux-system"}, 0.6)
    d = _sel({"alertname": "PodCrashLoopBackOff", "pod": "agent-sre-abc123", "namespace": "agent-sre"})
    assert d.parameters == {"name": "agent-sre-abc123", "namespace": "agent-sre", "type": "pod"}
    d = _sel({"alertname": "PostgresHighConnectionCount", "namespace": "postgres"})
    assert d.lambda_function == "pod-check-status" and d.parameters["selector"] == "app=postgres"
    assert _sel({"alertname": "KubePodCrashLooping", "pod": "x", "namespace": "y"}).lambda_function == "pod-restart"
    assert _sel({"alertname": "KubeContainerWaiting", "pod": "x", "namespace": "y"}).lambda_function is None  # no rule matches
    assert _sel({"alertname": "Watchdog"}).lambda_function is None
