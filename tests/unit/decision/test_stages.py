"""Each stage alone: what it proposes, and every way it passes over to the next stage."""

from __future__ import annotations

import json
import threading

import pytest

from controller.decision import StageClients, decide
from controller.schemas.decision import StageOutcome, StageTrace
from runbooks import default_catalog

from .helpers import FakeTRM, event, policy, static_annotation

CATALOG = default_catalog()
STATIC = {"staticAnnotation": {}}


def trm_stage(**options: object) -> dict:
    return {"trm": {"minConfidence": 0.8, "maxSteps": 8, "timeoutMs": 2000, **options}}


async def only_trace(p, e, clients: StageClients | None = None) -> StageTrace:
    decision = await decide(e, p, CATALOG, clients or StageClients())
    assert len(decision.trace) == len(p.spec.chain)
    return decision.trace[0]


# --- staticAnnotation -------------------------------------------------------------------------


async def test_static_annotation_accepts_a_valid_annotation_with_confidence_one() -> None:
    e = event(annotations=static_annotation("pod-restart", {"name": "cart-7f9", "namespace": "shop", "type": "pod"}))
    trace = await only_trace(policy(STATIC), e)
    assert trace.outcome is StageOutcome.ACCEPTED
    assert trace.function == "pod-restart"
    assert trace.parameters == {"name": "cart-7f9", "namespace": "shop", "type": "pod"}
    assert trace.confidence == 1.0
    assert "filled" not in trace.reason


async def test_static_annotation_abstains_without_lambda_function() -> None:
    trace = await only_trace(policy(STATIC), event(annotations={"lambda_parameters": '{"name": "x"}', "summary": "s"}))
    assert trace.outcome is StageOutcome.ABSTAINED
    assert "no lambda_function annotation" in trace.reason


async def test_static_annotation_none_means_abstain() -> None:
    trace = await only_trace(policy(STATIC), event(annotations={"lambda_function": "none"}))
    assert trace.outcome is StageOutcome.ABSTAINED


async def test_static_annotation_fills_missing_parameters_from_labels_and_says_so() -> None:
    labels = {"alertname": "TestPodCrashLoopBackOff", "namespace": "shop", "pod": "cart-7f9"}
    trace = await only_trace(policy(STATIC), event(labels, static_annotation("pod-restart")))
    assert trace.outcome is StageOutcome.ACCEPTED
    assert trace.parameters == {"name": "cart-7f9", "namespace": "shop", "type": "pod"}
    assert "filled name from label pod, namespace from label namespace" in trace.reason


async def test_static_annotation_keeps_given_parameters_and_fills_only_the_rest() -> None:
    labels = {
        "alertname": "FluxReconciliationFailure",
        "name": "homepage",
        "exported_namespace": "web",
        "namespace": "flux-system",
    }
    trace = await only_trace(
        policy(STATIC), event(labels, static_annotation("flux-reconcile-kustomization", {"name": "apps"}))
    )
    assert trace.parameters == {"name": "apps", "namespace": "web"}
    assert "namespace from label exported_namespace" in trace.reason and "name from" not in trace.reason


async def test_static_annotation_reads_group_common_annotations_under_the_alerts_own() -> None:
    common = static_annotation("pod-check-status", {"namespace": "shop", "name": "from-group"})
    own = {"lambda_parameters": json.dumps({"namespace": "shop", "name": "from-alert"})}
    trace = await only_trace(policy(STATIC), event(annotations=own, common_annotations=common))
    assert trace.outcome is StageOutcome.ACCEPTED
    assert trace.function == "pod-check-status" and trace.parameters["name"] == "from-alert"


@pytest.mark.parametrize("raw", ["{not json", "[1, 2]", '"name"', "{'name': 'x'}", '{"a": ' * 30 + "1" + "}" * 30])
async def test_static_annotation_with_unreadable_parameters_is_invalid(raw: str) -> None:
    trace = await only_trace(policy(STATIC), event(annotations=static_annotation("pod-restart", raw)))
    assert trace.outcome is StageOutcome.INVALID
    assert "lambda_parameters" in trace.reason


async def test_static_annotation_is_validated_like_any_stage() -> None:
    p = policy(STATIC, allowed=("pod-check-status",))
    trace = await only_trace(p, event(annotations=static_annotation("pod-restart", {"name": "x", "namespace": "shop"})))
    assert trace.outcome is StageOutcome.DISALLOWED
    trace = await only_trace(p, event(annotations=static_annotation("reboot-node", {"node": "n1"})))
    assert trace.outcome is StageOutcome.INVALID


# --- trm --------------------------------------------------------------------------------------


async def test_trm_accepts_a_confident_valid_decision_and_passes_the_alert_and_max_steps() -> None:
    model = FakeTRM("pod-restart", {"name": "cart-7f9", "namespace": "shop", "type": "pod"}, confidence=0.93)
    e = event()
    trace = await only_trace(policy(trm_stage(maxSteps=5)), e, StageClients(trm=model))
    assert trace.outcome is StageOutcome.ACCEPTED
    assert trace.confidence == pytest.approx(0.93)
    assert trace.parameters == {"name": "cart-7f9", "namespace": "shop", "type": "pod"}
    assert model.calls == [(e.as_alert_dict(), 5)]
    assert "3 steps" in trace.reason


async def test_trm_without_a_model_is_an_error() -> None:
    trace = await only_trace(policy(trm_stage()), event(), StageClients(trm=None))
    assert trace.outcome is StageOutcome.ERROR and trace.reason == "model not loaded"


async def test_trm_that_proposes_nothing_abstains() -> None:
    trace = await only_trace(policy(trm_stage()), event(), StageClients(trm=FakeTRM(None, confidence=0.99)))
    assert trace.outcome is StageOutcome.ABSTAINED


async def test_trm_below_min_confidence_is_passed_over() -> None:
    model = FakeTRM("pod-restart", {"name": "cart-7f9", "namespace": "shop"}, confidence=0.42)
    trace = await only_trace(policy(trm_stage(minConfidence=0.8)), event(), StageClients(trm=model))
    assert trace.outcome is StageOutcome.BELOW_THRESHOLD
    assert "0.420 is below minConfidence 0.800" in trace.reason
    assert trace.function == "pod-restart" and trace.parameters == {}


async def test_trm_nan_confidence_is_below_any_threshold() -> None:
    model = FakeTRM(
        "pod-restart",
        {"name": "cart-7f9", "namespace": "shop"},
        confidence=float("nan"),
        text='{"lambda_function": "pod-restart", "parameters": {"name": "cart-7f9", "namespace": "shop"}}',
    )
    trace = await only_trace(policy(trm_stage(minConfidence=0.0)), event(), StageClients(trm=model))
    assert trace.outcome is StageOutcome.BELOW_THRESHOLD
    assert trace.confidence is None and "no confidence" in trace.reason


async def test_trm_that_is_too_slow_times_out() -> None:
    release = threading.Event()
    model = FakeTRM("pod-restart", {"name": "cart-7f9", "namespace": "shop"}, block=release)
    try:
        trace = await only_trace(policy(trm_stage(timeoutMs=50)), event(), StageClients(trm=model))
    finally:
        release.set()
    assert trace.outcome is StageOutcome.TIMEOUT
    assert "50 ms" in trace.reason


async def test_trm_that_raises_is_an_error() -> None:
    model = FakeTRM(error=RuntimeError("CUDA out of memory"))
    trace = await only_trace(policy(trm_stage()), event(), StageClients(trm=model))
    assert trace.outcome is StageOutcome.ERROR
    assert "RuntimeError: CUDA out of memory" in trace.reason


async def test_trm_text_goes_through_the_parser() -> None:
    model = FakeTRM(
        "pod-restart",
        text='the answer is ```json\n{"lambda_function": "pod-restart", "parameters": '
        '{"name": "cart-7f9", "namespace": "shop"}}\n```',
    )
    trace = await only_trace(policy(trm_stage()), event(), StageClients(trm=model))
    assert trace.outcome is StageOutcome.ACCEPTED
    model = FakeTRM("pod-restart", text="pod-restart cart-7f9 please")
    trace = await only_trace(policy(trm_stage()), event(), StageClients(trm=model))
    assert trace.outcome is StageOutcome.INVALID and "unreadable model output" in trace.reason


async def test_trm_text_that_disagrees_with_its_decision_is_invalid() -> None:
    model = FakeTRM(
        "pod-check-status",
        {"namespace": "shop", "name": "x"},
        text='{"lambda_function": "pod-restart", "parameters": {"name": "x", "namespace": "shop"}}',
    )
    trace = await only_trace(policy(trm_stage()), event(), StageClients(trm=model))
    assert trace.outcome is StageOutcome.INVALID


async def test_trm_proposals_are_validated() -> None:
    model = FakeTRM("scale-deployment", {"name": "api", "namespace": "shop", "replicas": 3})
    trace = await only_trace(policy(trm_stage(), allowed=("pod-restart",)), event(), StageClients(trm=model))
    assert trace.outcome is StageOutcome.DISALLOWED
    model = FakeTRM("pod-restart", {"name": "cart", "namespace": "kube-system"})
    trace = await only_trace(policy(trm_stage(), scope=("shop",)), event(), StageClients(trm=model))
    assert trace.outcome is StageOutcome.INVALID and "outside the policy's scope" in trace.reason


# --- rules ------------------------------------------------------------------------------------


def rules(*entries: dict) -> dict:
    return {"rules": list(entries)}


CRASH_RULE = {
    "match": {"alertNames": ["KubePodCrashLooping"]},
    "function": "pod-restart",
    "parameters": {"name": "{{ $labels.pod }}", "namespace": "{{ $labels.namespace }}", "type": "pod"},
}


async def test_rules_first_matching_rule_wins_with_confidence_one() -> None:
    catch_all = {
        "match": {},
        "function": "pod-check-status",
        "parameters": {"namespace": "{{ $labels.namespace }}", "name": "{{ $labels.pod }}"},
    }
    trace = await only_trace(policy(rules(CRASH_RULE, catch_all)), event())
    assert trace.outcome is StageOutcome.ACCEPTED and trace.function == "pod-restart"
    assert trace.confidence == 1.0 and "rule 1 (pod-restart) matched" in trace.reason
    trace = await only_trace(policy(rules(catch_all, CRASH_RULE)), event())
    assert trace.function == "pod-check-status" and "rule 1" in trace.reason


async def test_rules_without_a_match_abstain() -> None:
    trace = await only_trace(policy(rules(CRASH_RULE)), event({"alertname": "Watchdog"}))
    assert trace.outcome is StageOutcome.ABSTAINED
    assert "none of the 1 rules" in trace.reason


async def test_a_rule_with_a_template_error_is_invalid_not_a_crash() -> None:
    broken = {**CRASH_RULE, "parameters": {"name": "{{ .Labels.pod }}", "namespace": "{{ $labels.namespace }}"}}
    later = {**CRASH_RULE}
    trace = await only_trace(policy(rules(broken, later)), event())
    assert trace.outcome is StageOutcome.INVALID
    assert "template error" in trace.reason and "parameter name" in trace.reason


async def test_a_rule_whose_labels_are_missing_is_invalid_and_later_rules_are_not_tried() -> None:
    later = {"match": {}, "function": "pod-check-status", "parameters": {"namespace": "shop", "selector": "app=cart"}}
    trace = await only_trace(
        policy(rules(CRASH_RULE, later)), event({"alertname": "KubePodCrashLooping", "namespace": "shop"})
    )
    assert trace.outcome is StageOutcome.INVALID
    assert "missing required parameter name" in trace.reason


async def test_rule_templates_fall_back_and_read_annotations() -> None:
    rule = {
        "match": {"alertNameRegex": "Flux.*"},
        "function": "flux-reconcile-helmrelease",
        "parameters": {
            "name": "{{ $annotations.release | $labels.name }}",
            "namespace": '{{ $labels.exported_namespace | "flux-system" }}',
        },
    }
    trace = await only_trace(
        policy(rules(rule)), event({"alertname": "FluxHelmReleaseFailing", "name": "prometheus"}, {"release": "kps"})
    )
    assert trace.outcome is StageOutcome.ACCEPTED
    assert trace.parameters == {"name": "kps", "namespace": "flux-system"}


async def test_rules_are_validated_against_the_policy() -> None:
    trace = await only_trace(policy(rules(CRASH_RULE), allowed=("pod-check-status",)), event())
    assert trace.outcome is StageOutcome.DISALLOWED
