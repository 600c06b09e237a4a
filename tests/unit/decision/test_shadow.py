"""Shadow policies and shadow stages in the decision core, and how a shadow decision is judged (pure)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from controller.decision import StageClients, annotated_call, decide, decide_shadows, select_policy
from controller.decision.policy_index import PolicyIndex
from controller.engine.shadow_compare import agreement, compare
from controller.engine.store.shadow_sql import Call, LiveFacts
from controller.schemas.decision import shadow_decision_id
from controller.schemas.policy import PolicySpec
from runbooks import default_catalog

from .helpers import FakeTRM, event, policy, static_annotation

CATALOG = default_catalog()
GOOD = {"name": "cart-7f9", "namespace": "shop"}
CHECK_RULE = {
    "rules": [
        {
            "function": "pod-check-status",
            "parameters": {"name": "{{ $labels.pod }}", "namespace": "{{ $labels.namespace }}"},
        }
    ]
}


def test_a_shadow_policy_is_never_selected_to_act_however_high_its_priority() -> None:
    index = PolicyIndex()
    index.upsert(policy(CHECK_RULE, name="shadow", mode="Shadow", priority=1000))
    assert select_policy(event(), index) is None
    index.upsert(policy(CHECK_RULE, name="live", priority=-5))
    chosen = select_policy(event(), index)
    assert chosen is not None and chosen.name == "live"


async def test_the_live_chain_skips_a_shadow_stage_which_is_decided_on_its_own() -> None:
    model = FakeTRM("pod-restart", GOOD, confidence=0.42)
    live = policy({"trm": {"minConfidence": 0.8}, "shadow": True}, CHECK_RULE)
    clients = StageClients(trm=model)
    decision = await decide(event(), live, CATALOG, clients)
    assert (decision.stage, decision.function, len(decision.trace)) == ("rules", "pod-check-status", 1)
    assert model.calls == []  # the live chain never asked the model
    (shadow,) = await decide_shadows(event(), live, [], CATALOG, clients)
    assert shadow.id == shadow_decision_id(event().incident_key, "ops/test", 0)
    # Below its own threshold: the shadow stage would have done nothing, and says how sure it was.
    assert (shadow.stage, shadow.function, shadow.confidence) == ("trm", None, pytest.approx(0.42))


async def test_a_shadow_policy_runs_its_whole_chain() -> None:
    shadow = policy({"staticAnnotation": {}}, CHECK_RULE, name="shadow", mode="Shadow")
    (decided,) = await decide_shadows(event(), None, [shadow], CATALOG, StageClients())
    assert (decided.stage_index, decided.stage, decided.function) == (None, "rules", "pod-check-status")
    assert decided.parameters == {"name": "cart-7f9", "namespace": "shop"}


def test_a_live_policy_needs_a_stage_that_is_not_shadow() -> None:
    body = {"allowedFunctions": ["pod-restart"], "chain": [{"staticAnnotation": {}, "shadow": True}]}
    with pytest.raises(ValidationError, match="at least one chain stage without shadow"):
        PolicySpec.model_validate(body)
    assert PolicySpec.model_validate({**body, "mode": "Shadow"}).status_mode == "shadow"


async def test_the_authors_annotation_is_read_as_the_static_stage_reads_it() -> None:
    p = policy({"staticAnnotation": {}})
    assert await annotated_call(event(annotations=static_annotation("pod-restart", GOOD)), p, CATALOG) == (
        "pod-restart",
        {**GOOD, "type": "pod"},  # the runbook's default filled in, as for the stage's own proposal
    )
    assert await annotated_call(event(annotations=static_annotation("none")), p, CATALOG) == (None, {})
    assert await annotated_call(event(), p, CATALOG) is None
    assert await annotated_call(event(annotations=static_annotation("pod-delete")), p, CATALOG) is None


RESTART = Call("pod-restart", {"name": "a", "namespace": "shop"})
CHECK = Call("pod-check-status", {"name": "a", "namespace": "shop"})
NOTHING = Call(None, {})


@pytest.mark.parametrize(
    ("shadow", "reference", "expected"),
    [
        (RESTART, RESTART, "agree"),
        (Call("pod-restart", {"name": "a", "namespace": "shop", "replicas": 1}), RESTART, "disagree_parameters"),
        (CHECK, RESTART, "disagree_function"),
        (RESTART, NOTHING, "shadow_only_action"),
        (NOTHING, RESTART, "live_only_action"),
        (NOTHING, NOTHING, "both_abstain"),
    ],
)
def test_agreement_classes(shadow: Call, reference: Call, expected: str) -> None:
    assert agreement(shadow, reference) == expected


def _live(outcome_state: str | None = None, approval_state: str | None = None, correction: Call | None = None) -> Any:
    return LiveFacts("trigger", "pod-restart", dict(RESTART.parameters), "x", approval_state, outcome_state, correction)


@pytest.mark.parametrize(
    ("annotation", "live", "expected"),
    [
        # The author's annotation beats everything else, even a verified outcome.
        (NOTHING, _live("verified"), ("shadow_only_action", "annotation", False, True)),
        (None, _live(approval_state="approved"), ("agree", "approval", True, True)),
        (None, _live(approval_state="rejected", correction=CHECK), ("disagree_function", "correction", False, True)),
        (None, _live(approval_state="rejected"), ("agree", "rejection", False, True)),
        (None, _live(approval_state="pending"), ("agree", "live", None, False)),
        (None, _live("verified"), ("agree", "outcome", True, True)),
        (None, _live("ineffective"), ("agree", "outcome", False, True)),
        (None, _live("resolved"), ("agree", "live", None, False)),
        (None, _live("unknown"), ("agree", "live", None, True)),
        (None, LiveFacts(None, None, {}, None, None, None, None), ("shadow_only_action", "live", None, True)),
    ],
)
def test_the_best_ground_truth_judges_a_shadow_restart(annotation: Call | None, live: Any, expected: tuple) -> None:
    result = compare(RESTART, annotation, live)
    assert (result.agreement, result.truth_source, result.shadow_correct, result.final) == expected


def test_a_different_call_than_a_failed_live_one_cannot_be_judged() -> None:
    result = compare(CHECK, None, _live("recurred"))
    assert (result.agreement, result.shadow_correct, result.final) == ("disagree_function", None, True)
