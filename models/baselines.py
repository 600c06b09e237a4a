"""Baseline selectors for side-by-side tables. NOT the controller's rules.

`OriginalSubstringRules` re-implements, for comparison only, the rule-based fallback of the
ORIGINAL system (brunovlucena/homelab agent-sre, `trm_remediation_selector._rule_based_selection`,
as documented in shared/reference/original-system.md §2.D and §4): ordered substring rules on the
alert name, every match with confidence 0.6, parameters filled the way the original filled
missing ones (name from name/resource_name/pod/deployment/kustomization; namespace from
namespace/resource_namespace else flux-system; type=pod; replicas from expected/replicas).
Its calls are checked with the catalog like any selector's: an invalid call becomes an abstention.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from runbooks import Catalog, default_catalog


@dataclass(frozen=True)
class BaselineDecision:
    lambda_function: str | None
    parameters: dict[str, Any] = field(default_factory=dict)
    confidence: float = 0.0
    steps: int = 0


def _first(labels: Mapping[str, Any], keys: Sequence[str]) -> Any:
    for k in keys:
        v = labels.get(k)
        if v not in (None, ""):
            return v
    return None


class OriginalSubstringRules:
    """The original system's ordered substring rules (§2.D), confidence 0.6 on any match."""

    CONFIDENCE = 0.6

    def __init__(self, catalog: Catalog | None = None) -> None:
        self.catalog = catalog or default_catalog()

    def _rule(self, name: str, labels: Mapping[str, Any]) -> tuple[str | None, dict[str, Any]]:
        ns = labels.get("namespace") or ""
        if "FluxReconciliationFailure" in name or labels.get("kind") == "Kustomization":
            return "flux-reconcile-kustomization", {}
        if "GitRepository" in name:
            return "flux-reconcile-gitrepository", {}
        if "HelmRelease" in name:
            return "flux-reconcile-helmrelease", {}
        if "PodCrashLoop" in name or "CrashLoopBackOff" in name:
            return "pod-restart", {"type": "pod"}
        if "ServiceDown" in name or "ServiceUnavailable" in name:
            selector = {"prometheus": "app.kubernetes.io/name=prometheus", "postgres": "app=postgres"}.get(ns)
            return "pod-check-status", ({"selector": selector} if selector else {})
        if "PersistentVolume" in name or "PVC" in name or "pvc" in labels:
            return "check-pvc-status", {"name": _first(labels, ("pvc", "persistentvolumeclaim"))}
        if "Postgres" in name or "Database" in name:
            return "pod-check-status", {"selector": "app=postgres"}
        return None, {}

    def select_one(self, alert: Mapping[str, Any]) -> BaselineDecision:
        labels = alert.get("labels") if isinstance(alert, Mapping) else None
        labels = labels if isinstance(labels, Mapping) else {}
        name = labels.get("alertname")
        name = name if isinstance(name, str) else ""
        function, params = self._rule(name, labels)
        if function is None:
            return BaselineDecision(None, {}, 0.0)
        runbook = self.catalog.get(function)
        wanted = {p.name for p in runbook.parameters} if runbook else set()
        if "name" in wanted and "name" not in params:
            params["name"] = _first(labels, ("name", "resource_name", "pod", "deployment", "kustomization"))
        if "namespace" in wanted:
            params["namespace"] = _first(labels, ("namespace", "resource_namespace")) or "flux-system"
        if "replicas" in wanted:
            params["replicas"] = _first(labels, ("expected", "replicas"))
        params = {k: v for k, v in params.items() if v is not None}
        try:
            clean = self.catalog.validate_call(function, params)
        except Exception:  # noqa: BLE001 - any refusal is an abstention
            return BaselineDecision(None, {}, self.CONFIDENCE)
        return BaselineDecision(function, clean, self.CONFIDENCE)

    def select_batch(self, alerts: Sequence[Mapping[str, Any]], **_: Any) -> list[BaselineDecision]:
        return [self.select_one(a) for a in alerts]
