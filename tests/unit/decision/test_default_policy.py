"""The embedded default policy: its shape, its rules on the fixtures and the original system's cases, the selectors."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from controller.decision import StageClients, check_template, decide
from controller.defaults import (
    DEFAULT_POLICY_PATH,
    load_default_policy,
    policy_from_manifest,
)
from controller.tools.selectors import (
    ChainSelector,
    RulesSelector,
    Selection,
    event_from_alert,
)
from runbooks import default_catalog

from .helpers import FakeTRM, fixture_events

CATALOG = default_catalog()


def test_the_default_policy_is_a_complete_manifest_with_the_agreed_settings() -> None:
    manifest = yaml.safe_load(DEFAULT_POLICY_PATH.read_text())
    assert manifest["apiVersion"] == "remediation.homelab.io/v1alpha1" and manifest["kind"] == "RemediationPolicy"
    policy = load_default_policy()
    assert policy.key == "trm-sre/default"
    spec = policy.spec
    assert spec.match.specificity == 0  # every alert
    assert spec.priority == -1000  # any policy you write wins
    assert sorted(spec.allowed_functions) == sorted(CATALOG.names)
    assert spec.target_namespaces == ("*",)
    assert [stage.kind for stage in spec.chain] == ["staticAnnotation", "trm", "rules"]
    trm = spec.chain[1].trm
    assert trm is not None and (trm.min_confidence, trm.max_steps, trm.timeout_ms) == (0.8, 8, 250)
    assert spec.actions.mode == "active" and spec.actions.cooldown_seconds == 300


def test_every_default_rule_is_well_formed() -> None:
    rules = load_default_policy().spec.chain[2].rules or ()
    assert len(rules) >= 15
    for rule in rules:
        runbook = CATALOG.get(rule.function)
        assert runbook is not None, rule.function
        for name, template in rule.parameters.items():
            assert runbook.parameter(name) is not None, (rule.function, name)
            assert check_template(template) is None, template
        if rule.match.alert_name_regex:
            assert rule.match.alert_name_regex.startswith(".*") or rule.match.alert_name_regex[0].isalpha()


def test_manifests_must_be_remediation_policies() -> None:
    with pytest.raises(ValueError):
        policy_from_manifest({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "y"}})
    with pytest.raises(ValueError):
        policy_from_manifest(
            {"apiVersion": "remediation.homelab.io/v1alpha1", "kind": "RemediationPolicy", "metadata": {}}
        )
    with pytest.raises(ValueError):
        policy_from_manifest(["not", "a", "mapping"])


FIXTURE_EXPECTATIONS = [
    ("crashloop.json", "rules", "pod-restart", {"name": "cart-7f9c6d5b8-x2k4q", "namespace": "shop", "type": "pod"}),
    (
        "pvc-filling.json",
        "rules",
        "check-pvc-status",
        {"name": "prometheus-k8s-db-prometheus-k8s-0", "namespace": "monitoring"},
    ),
    (
        "flux-kustomization-not-ready.json",
        "rules",
        "flux-reconcile-kustomization",
        {"name": "podinfo", "namespace": "apps"},
    ),
    (
        "static-annotation.json",
        "staticAnnotation",
        "flux-reconcile-gitrepository",
        {"name": "homelab", "namespace": "flux-system"},
    ),
    ("watchdog.json", None, None, {}),
]


@pytest.mark.parametrize(("fixture", "stage", "function", "parameters"), FIXTURE_EXPECTATIONS)
async def test_the_default_policy_decides_the_fixtures(
    fixture: str, stage: str | None, function: str | None, parameters: dict
) -> None:
    [event] = fixture_events(fixture)
    decision = await decide(event, load_default_policy(), CATALOG, StageClients())
    assert decision.stage == stage
    assert decision.function == function
    assert decision.parameters == parameters
    assert decision.outcome == ("trigger" if function else "escalate")


async def test_each_alert_of_a_mixed_group_is_decided_on_its_own() -> None:
    events = fixture_events("group-mixed.json")
    assert [e.alert.status for e in events] == ["firing", "resolved", "firing"]
    decisions = [await decide(e, load_default_policy(), CATALOG, StageClients()) for e in events]
    assert [d.parameters["name"] for d in decisions] == [e.alert.labels["pod"] for e in events]
    assert {d.function for d in decisions} == {"pod-check-status"}
    assert len({d.id for d in decisions}) == 3


def alert(**labels: str) -> dict[str, Any]:
    return {"labels": labels, "annotations": {}}


RULE_CASES = [
    # The original system's runbook test set (original-system.md §2.A).
    (
        alert(alertname="FluxReconciliationFailure", name="homepage", namespace="flux-system", kind="Kustomization"),
        "flux-reconcile-kustomization",
        {"name": "homepage", "namespace": "flux-system"},
    ),
    (
        alert(alertname="FluxGitRepositoryOutOfSync", name="homelab", namespace="flux-system"),
        "flux-reconcile-gitrepository",
        {"name": "homelab", "namespace": "flux-system"},
    ),
    (
        alert(alertname="FluxHelmReleaseFailing", name="prometheus", namespace="prometheus"),
        "flux-reconcile-helmrelease",
        {"name": "prometheus", "namespace": "prometheus"},
    ),
    (
        alert(alertname="PodCrashLoopBackOff", pod="agent-sre-abc123", namespace="agent-sre"),
        "pod-restart",
        {"name": "agent-sre-abc123", "namespace": "agent-sre", "type": "pod"},
    ),
    (
        alert(alertname="PrometheusServiceDown", namespace="prometheus"),
        "pod-check-status",
        {"namespace": "prometheus", "selector": "app.kubernetes.io/name=prometheus"},
    ),
    (
        alert(alertname="PersistentVolumeFillingUpCritical", namespace="prometheus", pvc="prometheus-storage"),
        "check-pvc-status",
        {"name": "prometheus-storage", "namespace": "prometheus"},
    ),
    (
        alert(alertname="PostgresHighConnectionCount", namespace="postgres"),
        "pod-check-status",
        {"namespace": "postgres", "selector": "app=postgres"},
    ),
    # kube-prometheus names (the runbook policy).
    (
        alert(alertname="KubeDeploymentRolloutStuck", deployment="cart", namespace="shop"),
        "pod-restart",
        {"name": "cart", "namespace": "shop", "type": "deployment"},
    ),
    (
        alert(alertname="KubeDeploymentReplicasMismatch", deployment="cart", namespace="shop"),
        "pod-restart",
        {"name": "cart", "namespace": "shop", "type": "deployment"},
    ),
    (
        alert(alertname="KubeContainerWaiting", pod="cart-7f9", container="cart", namespace="shop"),
        "pod-check-status",
        {"name": "cart-7f9", "namespace": "shop"},
    ),
    (
        alert(alertname="KubePersistentVolumeInodesFillingUp", persistentvolumeclaim="data-pg-0", namespace="db"),
        "check-pvc-status",
        {"name": "data-pg-0", "namespace": "db"},
    ),
    # Flux, recognised by kind, namespace from exported_namespace | namespace | flux-system.
    (
        alert(
            alertname="ReconciliationFailure",
            kind="HelmRelease",
            name="kps",
            exported_namespace="monitoring",
            namespace="flux-system",
        ),
        "flux-reconcile-helmrelease",
        {"name": "kps", "namespace": "monitoring"},
    ),
    (
        alert(alertname="FluxResourceNotReady", customresource_kind="GitRepository", name="infra"),
        "flux-reconcile-gitrepository",
        {"name": "infra", "namespace": "flux-system"},
    ),
    (
        alert(alertname="FluxResourceNotReady", customresource_kind="HelmRelease", name="ingress", namespace="edge"),
        "flux-reconcile-helmrelease",
        {"name": "ingress", "namespace": "edge"},
    ),
    # Nothing applies.
    (alert(alertname="FluxKustomizationSuspended", kind="Kustomization", name="apps"), None, {}),
    (alert(alertname="FluxHelmReleaseSuspended", name="kps"), None, {}),
    (alert(alertname="KubeDeploymentReplicasMismatch", deployment="cart", namespace="shop", pod="ksm-0"), None, {}),
    (alert(alertname="Watchdog"), None, {}),
    (alert(alertname="NodeFilesystemSpaceFillingUp", instance="node-1"), None, {}),
]


def test_the_rules_pick_the_right_function_for_known_alerts() -> None:
    selections = RulesSelector().select_batch([case[0] for case in RULE_CASES])
    for (alert_, function, parameters), selection in zip(RULE_CASES, selections, strict=True):
        assert (selection.lambda_function, selection.parameters) == (function, parameters), alert_["labels"][
            "alertname"
        ]
        assert selection.confidence == (1.0 if function else 0.0)


def test_the_rules_selector_ignores_annotations_and_the_model() -> None:
    [event] = fixture_events("static-annotation.json")
    [selection] = RulesSelector().select_batch([event.as_alert_dict()])
    # the alert's kind=GitRepository label: the rules reach the same answer as the annotation, on their own
    assert selection.stage == "rules" and selection.lambda_function == "flux-reconcile-gitrepository"


def test_the_chain_selector_walks_the_whole_default_chain() -> None:
    crash = fixture_events("crashloop.json")[0].as_alert_dict()
    static = fixture_events("static-annotation.json")[0].as_alert_dict()
    confident = FakeTRM("pod-check-status", {"name": "cart-7f9c6d5b8-x2k4q", "namespace": "shop"}, confidence=0.97)
    results = ChainSelector(trm=confident).select_batch([crash, static])
    assert [(s.stage, s.lambda_function) for s in results] == [
        ("trm", "pod-check-status"),
        ("staticAnnotation", "flux-reconcile-gitrepository"),
    ]
    assert results[0].confidence == pytest.approx(0.97)
    [without_model] = ChainSelector(trm=None).select_batch([crash])
    assert (without_model.stage, without_model.lambda_function) == ("rules", "pod-restart")
    trace = ChainSelector(trm=None).decide_batch([crash])[0].trace
    assert [(t.stage, t.outcome.value, t.reason) for t in trace[:2]] == [
        ("staticAnnotation", "abstained", "the alert has no lambda_function annotation"),
        ("trm", "error", "model not loaded"),
    ]


def test_the_chain_selector_can_override_the_trm_time_limit() -> None:
    selector = ChainSelector(trm=None, trm_timeout_ms=5000)
    assert selector.policy.spec.chain[1].trm.timeout_ms == 5000
    assert load_default_policy().spec.chain[1].trm.timeout_ms == 250


async def test_selectors_also_work_from_inside_a_running_loop() -> None:
    [selection] = RulesSelector().select_batch([fixture_events("pvc-filling.json")[0].as_alert_dict()])
    assert selection == Selection(selection.lambda_function, selection.parameters, 1.0, "rules", selection.reasoning)
    assert selection.lambda_function == "check-pvc-status"


def test_evaluation_alerts_need_only_labels() -> None:
    event = event_from_alert({"labels": {"alertname": "KubePodCrashLooping"}})
    assert event.alert.status == "firing" and event.source == "cli"


def test_the_chain_selector_loads_the_model_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    # `eval --selector chain` builds it with no arguments: the model must come along when it loads.
    model = FakeTRM(None)
    monkeypatch.setattr("controller.tools.selectors.load_trm", lambda **_: model)
    assert ChainSelector().clients.trm is model
    assert ChainSelector(trm=None).clients.trm is None


def test_a_missing_checkpoint_leaves_the_chain_without_a_model(tmp_path: Any) -> None:
    selector = ChainSelector.load(checkpoint_dir=tmp_path / "nothing-here")
    assert selector.clients.trm is None
    assert (
        selector.select({"labels": {"alertname": "KubePodCrashLooping", "namespace": "a", "pod": "b"}}).stage == "rules"
    )


def test_max_steps_reaches_the_model() -> None:
    model = FakeTRM(None)
    ChainSelector(trm=model).select_batch([fixture_events("crashloop.json")[0].as_alert_dict()], max_steps=3)
    ChainSelector(trm=model).select_batch([fixture_events("crashloop.json")[0].as_alert_dict()])
    assert [steps for _, steps in model.calls] == [3, 8]
