"""The fallback chain: hand-overs between stages, the trigger, the escalation."""

from __future__ import annotations

import threading

import pytest

from controller.decision import StageClients, decide
from controller.decision import stages as stages_module
from controller.schemas.decision import StageOutcome, decision_id
from runbooks import default_catalog

from .helpers import FakeTRM, event, policy, static_annotation

CATALOG = default_catalog()
RULE = {
    "match": {"alertNames": ["KubePodCrashLooping"]},
    "function": "pod-check-status",
    "parameters": {"name": "{{ $labels.pod }}", "namespace": "{{ $labels.namespace }}"},
}
CHAIN = ({"staticAnnotation": {}}, {"trm": {"minConfidence": 0.8, "timeoutMs": 100}}, {"rules": [RULE]})
GOOD = {"name": "cart-7f9", "namespace": "shop"}


def _model(case: str) -> tuple[FakeTRM, threading.Event | None]:
    release = threading.Event()
    models = {
        "error": FakeTRM(error=ValueError("bad tensor")),
        "timeout": FakeTRM("pod-restart", GOOD, block=release),
        "abstain": FakeTRM(None),
        "low confidence": FakeTRM("pod-restart", GOOD, confidence=0.5),
        "disallowed function": FakeTRM("scale-deployment", {**GOOD, "replicas": 2}),
        "invalid params": FakeTRM("pod-restart", {"name": "cart; reboot", "namespace": "shop"}),
        "invented function": FakeTRM("exec-shell", {"cmd": "id"}),
        "garbage text": FakeTRM("pod-restart", text="<|im_start|>pod-restart"),
    }
    return models[case], release


HANDOVERS = {
    "error": StageOutcome.ERROR,
    "timeout": StageOutcome.TIMEOUT,
    "abstain": StageOutcome.ABSTAINED,
    "low confidence": StageOutcome.BELOW_THRESHOLD,
    "disallowed function": StageOutcome.DISALLOWED,
    "invalid params": StageOutcome.INVALID,
    "invented function": StageOutcome.INVALID,
    "garbage text": StageOutcome.INVALID,
}


@pytest.mark.parametrize("case", list(HANDOVERS))
async def test_the_trm_stage_hands_over_to_the_rules_stage(case: str) -> None:
    model, release = _model(case)
    p = policy(*CHAIN, allowed=("pod-restart", "pod-check-status"))
    try:
        decision = await decide(event(), p, CATALOG, StageClients(trm=model))
    finally:
        release.set()
    assert [t.outcome for t in decision.trace] == [StageOutcome.ABSTAINED, HANDOVERS[case], StageOutcome.ACCEPTED]
    assert decision.outcome == "trigger"
    assert decision.stage == "rules" and decision.function == "pod-check-status"
    assert decision.parameters == GOOD
    assert "cart; reboot" not in str(decision.parameters)


STATIC_HANDOVERS = {
    "absent": ({}, StageOutcome.ABSTAINED),
    "unreadable": (static_annotation("pod-restart", "{oops"), StageOutcome.INVALID),
    "disallowed": (static_annotation("scale-deployment", {**GOOD, "replicas": 2}), StageOutcome.DISALLOWED),
    "hostile": (static_annotation("pod-restart", {"name": "../../etc", "namespace": "shop"}), StageOutcome.INVALID),
    "out of scope": (static_annotation("pod-restart", {"name": "x", "namespace": "kube-system"}), StageOutcome.INVALID),
}


@pytest.mark.parametrize("case", list(STATIC_HANDOVERS))
async def test_the_static_annotation_stage_hands_over_to_the_trm(case: str) -> None:
    annotations, outcome = STATIC_HANDOVERS[case]
    model = FakeTRM("pod-restart", GOOD, confidence=0.9)
    p = policy(*CHAIN, allowed=("pod-restart", "pod-check-status"), scope=("shop",))
    decision = await decide(event(annotations=annotations), p, CATALOG, StageClients(trm=model))
    assert [t.outcome for t in decision.trace] == [outcome, StageOutcome.ACCEPTED]
    assert decision.stage == "trm" and decision.function == "pod-restart"
    assert decision.parameters == {**GOOD, "type": "pod"}
    assert decision.confidence == pytest.approx(0.9)


async def test_the_first_accepted_stage_wins_and_later_stages_do_not_run() -> None:
    model = FakeTRM("pod-restart", GOOD)
    e = event(annotations=static_annotation("pod-check-status", GOOD))
    decision = await decide(e, policy(*CHAIN), CATALOG, StageClients(trm=model))
    assert decision.stage == "staticAnnotation" and decision.confidence == 1.0
    assert len(decision.trace) == 1
    assert model.calls == []


async def test_when_no_stage_accepts_the_decision_is_to_escalate_with_every_reason() -> None:
    p = policy(*CHAIN)
    decision = await decide(event({"alertname": "Watchdog"}), p, CATALOG, StageClients(trm=FakeTRM(None)))
    assert decision.outcome == "escalate"
    assert decision.function is None and decision.parameters == {} and decision.stage is None
    assert [t.stage for t in decision.trace] == ["staticAnnotation", "trm", "rules"]
    for fragment in ("staticAnnotation: abstained", "trm: abstained", "rules: abstained: none of the 1 rules"):
        assert fragment in decision.reasoning


async def test_the_decision_carries_identity_and_per_stage_latency() -> None:
    e = event()
    p = policy(*CHAIN, name="shop-pods", namespace="shop")
    first = await decide(e, p, CATALOG, StageClients())
    again = await decide(e, p, CATALOG, StageClients())
    assert first.id == again.id == decision_id(e.incident_key, "shop/shop-pods")
    assert first.incident_key == e.incident_key and first.fingerprint == e.fingerprint
    assert first.alertname == "KubePodCrashLooping" and first.policy == "shop/shop-pods"
    assert all(t.latency_ms >= 0 for t in first.trace)
    assert [t.index for t in first.trace] == [0, 1, 2]


async def test_a_resolved_alert_is_decided_without_crashing() -> None:
    decision = await decide(event(status="resolved"), policy(*CHAIN), CATALOG, StageClients())
    assert decision.outcome in ("trigger", "escalate")


async def test_a_stage_that_breaks_is_recorded_as_an_error_and_handed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(ctx):  # type: ignore[no-untyped-def]
        raise KeyError("surprise")

    monkeypatch.setattr("controller.decision.chain.run_static_annotation", broken)
    decision = await decide(event(), policy(*CHAIN), CATALOG, StageClients())
    assert decision.trace[0].outcome is StageOutcome.ERROR
    assert "internal error in the staticAnnotation stage: KeyError" in decision.trace[0].reason
    assert decision.outcome == "trigger" and decision.stage == "rules"
    assert stages_module.run_static_annotation is not broken


async def test_the_same_stage_kind_may_appear_twice() -> None:
    strict = {"rules": [{**RULE, "match": {"alertNames": ["KubePodCrashLooping"], "severities": ["critical"]}}]}
    p = policy(strict, {"rules": [RULE]})
    decision = await decide(event(), p, CATALOG, StageClients())
    assert [t.outcome for t in decision.trace] == [StageOutcome.ABSTAINED, StageOutcome.ACCEPTED]
    assert decision.trace[1].index == 1
