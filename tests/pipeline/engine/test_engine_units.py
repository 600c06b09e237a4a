"""The pure parts: the order of the policy's guards, event building, overrides, metrics registries."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import generate_latest

from controller.engine.delivery import event_ids, is_extension_name, to_cloudevent, trigger_entry
from controller.engine.guards import GuardState, plan_actions
from controller.observability.metrics import Metrics
from controller.schemas.decision import LAMBDA_TRIGGER, Decision
from controller.schemas.policy import Actions
from tests.pipeline.engine.builders import alert_dict, payload

NOW = 1_800_000_000.0


def _decision(outcome: str = "trigger") -> Decision:
    fields: dict[str, Any] = {"function": "pod-restart", "parameters": {"name": "cart-1", "namespace": "shop"}}
    return Decision(
        id="d1",
        incident_key="f@t",
        fingerprint="f",
        alertname="KubePodCrashLooping",
        policy="shop/restart",
        outcome=outcome,
        stage="rules" if outcome == "trigger" else None,
        **(fields if outcome == "trigger" else {}),
    )


def _guard(cooldown_until: float | None = None, budget_used: int = 0, resolved: bool = False) -> GuardState:
    return GuardState(now=NOW, cooldown_until=cooldown_until, budget_used=budget_used, incident_resolved=resolved)


def _actions(**fields: Any) -> Actions:
    return Actions.model_validate(fields)


def test_an_active_policy_triggers_and_starts_the_cooldown() -> None:
    plan = plan_actions(_decision(), _actions(cooldownSeconds=300), _guard())
    assert (plan.state, plan.emit, plan.budgeted, plan.record) == ("triggered", ("trigger",), True, "trigger")
    assert plan.cooldown_until == NOW + 300


def test_a_zero_cooldown_sets_none() -> None:
    assert plan_actions(_decision(), _actions(cooldownSeconds=0), _guard()).cooldown_until is None


def test_a_cooled_down_target_is_held_back_before_the_storm_breaker_counts() -> None:
    plan = plan_actions(_decision(), _actions(maxTriggersPerWindow=1), _guard(cooldown_until=NOW + 1, budget_used=5))
    assert (plan.state, plan.emit, plan.budgeted) == ("cooldown", (), False)


def test_an_expired_cooldown_does_not_hold_back() -> None:
    assert plan_actions(_decision(), _actions(), _guard(cooldown_until=NOW)).state == "triggered"


def test_the_storm_breaker_escalates_with_its_reason() -> None:
    plan = plan_actions(_decision(), _actions(maxTriggersPerWindow=3, windowSeconds=60), _guard(budget_used=3))
    assert (plan.state, plan.emit, plan.action) == ("escalated", ("escalation",), "storm_breaker")
    assert plan.escalation_reasons[0].startswith("storm breaker: 3 triggers of policy shop/restart within 60s")


def test_approval_holds_the_trigger_and_counts_toward_the_budget() -> None:
    plan = plan_actions(_decision(), _actions(requireApproval=True, approvalTimeoutSeconds=120), _guard())
    assert (plan.state, plan.emit, plan.budgeted) == ("approval_pending", ("approval",), True)
    assert plan.approval_expires_at == NOW + 120
    assert plan.cooldown_until is None


def test_an_escalation_ignores_cooldown_and_budget() -> None:
    plan = plan_actions(_decision("escalate"), _actions(maxTriggersPerWindow=1), _guard(budget_used=9))
    assert (plan.state, plan.emit, plan.budgeted) == ("escalated", ("escalation",), False)


@pytest.mark.parametrize("outcome", ["trigger", "escalate"])
def test_dry_run_emits_and_consumes_nothing(outcome: str) -> None:
    plan = plan_actions(
        _decision(outcome), _actions(dryRun=True, requireApproval=True, approvalTimeoutSeconds=5), _guard()
    )
    assert (plan.state, plan.emit, plan.budgeted, plan.cooldown_until, plan.record) == (
        "dry_run",
        (),
        False,
        None,
        "dry_run",
    )


def test_a_resolved_incident_is_not_acted_on_unless_the_policy_says_record() -> None:
    assert plan_actions(_decision(), _actions(), _guard(resolved=True)).state == "cancelled_resolved"
    assert plan_actions(_decision(), _actions(onResolved="record"), _guard(resolved=True)).state == "triggered"


def test_event_ids_are_derived_from_the_decision_id() -> None:
    ids = event_ids("abc")
    assert ids[LAMBDA_TRIGGER] == "abc-trigger"
    assert len(set(ids.values())) == 3


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("cluster", True),
        ("a1", True),
        ("x" * 20, True),
        ("x" * 21, False),
        ("bad-name", False),
        ("Upper", False),
        ("type", False),
        ("data", False),
    ],
)
def test_extension_names_follow_the_cloudevents_rules(name: str, valid: bool) -> None:
    assert is_extension_name(name) is valid


def test_overrides_add_extensions_at_send_time_only() -> None:
    event = payload(alert_dict())[0]
    entry = trigger_entry(_decision(), event, "/trm-sre", None)
    sent = to_cloudevent(entry, {"cluster": "homelab", "source": "/evil"})
    assert sent.get_extension("cluster") == "homelab"
    assert sent.get_source() == "/trm-sre"
    assert sent.get_id() == "d1-trigger"
    assert "cluster" not in entry.attributes  # the stored event is unchanged


def test_two_metrics_objects_do_not_share_a_registry() -> None:
    one, two = Metrics(), Metrics()
    one.triggers.labels(result="sent").inc()
    assert one.registry.get_sample_value("agent_sre_triggers_total", {"result": "sent"}) == 1
    assert two.registry.get_sample_value("agent_sre_triggers_total", {"result": "sent"}) is None
    text = generate_latest(one.registry).decode()
    for name in (
        "agent_sre_alerts_received_total",
        "agent_sre_decisions_total",
        "agent_sre_stage_duration_seconds",
        "agent_sre_trm_confidence_score",
        "agent_sre_outbox_depth",
        "agent_sre_dedup_hits_total",
        "agent_sre_approvals_pending",
        "agent_sre_trm_model_loaded",
        "agent_sre_http_requests_total",
        "agent_reasoning_requests_total",
        "agent_reasoning_duration_seconds",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in text
