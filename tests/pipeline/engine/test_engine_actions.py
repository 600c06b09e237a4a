"""The policy's actions: dry run, approval, cooldown, storm breaker, escalation, onResolved."""

from __future__ import annotations

import asyncio

from controller.schemas.decision import APPROVAL_REQUESTED, LAMBDA_TRIGGER, REMEDIATION_ESCALATED, decision_id
from tests.pipeline.engine.builders import FakeClock, alert_dict, eventually, payload, policy, trigger_id
from tests.pipeline.sink import CaptureSink

APPROVAL = {"requireApproval": True, "approvalTimeoutSeconds": 600}


def _decision(engine, event, policy_key: str = "shop/restart") -> dict:
    doc = engine.pipeline.get_decision(decision_id(event.incident_key, policy_key))
    assert doc is not None
    return doc


async def _approval_request(engine, sink: CaptureSink, events) -> str:
    await engine.ingest(events)
    await engine.settle()
    (request,) = sink.accepted_of(APPROVAL_REQUESTED)
    assert request.ce_id == f"{decision_id(events[0].incident_key, 'shop/restart')}-approval"
    return request.data()["approval_id"]


# dry run


async def test_dry_run_decides_and_records_but_emits_nothing(make_engine, sink: CaptureSink) -> None:
    engine = await make_engine([policy(actions={"dryRun": True})], sink=sink.url)
    events = payload(alert_dict())
    await engine.ingest(events)
    await engine.settle()

    assert sink.requests == []
    doc = _decision(engine, events[0])
    assert (doc["state"], doc["mode"], doc["function"]) == ("dry_run", "dry-run", "pod-restart")
    assert doc["reason"].startswith("dry run: would trigger pod-restart")
    assert doc["deliveries"] == []
    assert engine.counters()["dryRunDecisions"] == 1
    assert engine.counters()["triggers"] == 0
    assert engine.metric("agent_sre_policy_actions_total", action="dry_run") == 1


async def test_dry_run_consumes_no_cooldown(make_engine, sink: CaptureSink) -> None:
    dry = await make_engine([policy(actions={"dryRun": True})], sink=sink.url)
    await dry.ingest(payload(alert_dict(starts_at="2026-05-01T10:00:00Z")))
    await dry.settle()
    dry.index.upsert(policy(actions={"dryRun": False}))

    later = payload(alert_dict(starts_at="2026-05-01T10:05:00Z"))
    await dry.ingest(later)
    await dry.settle()
    assert sink.accepted_ids() == [trigger_id(later[0])]


# approval


async def test_an_approved_request_triggers_once(make_engine, sink: CaptureSink) -> None:
    engine = await make_engine([policy(actions=APPROVAL)], sink=sink.url)
    events = payload(alert_dict())
    approval_id = await _approval_request(engine, sink, events)

    assert sink.accepted_of(LAMBDA_TRIGGER) == []
    assert _decision(engine, events[0])["approval"]["state"] == "pending"
    assert engine.metric("agent_sre_approvals_pending") == 1
    assert engine.counters()["approvalsRequested"] == 1

    assert await engine.pipeline.resolve_approval(approval_id, True, "alice") == "approved"
    await engine.settle()
    assert await engine.pipeline.resolve_approval(approval_id, True, "bob") == "approved"  # a double click
    await engine.settle()

    assert sink.accepted_ids(LAMBDA_TRIGGER) == [trigger_id(events[0])]
    doc = _decision(engine, events[0])
    assert (doc["state"], doc["approval"]["state"], doc["approval"]["actor"]) == ("approved", "approved", "alice")
    assert engine.metric("agent_sre_approvals_pending") == 0
    assert engine.counters()["triggers"] == 1


async def test_a_rejected_request_never_triggers(make_engine, sink: CaptureSink) -> None:
    engine = await make_engine([policy(actions=APPROVAL)], sink=sink.url)
    events = payload(alert_dict())
    approval_id = await _approval_request(engine, sink, events)

    assert await engine.pipeline.resolve_approval(approval_id, False, "alice") == "rejected"
    assert await engine.pipeline.resolve_approval(approval_id, True, "mallory") == "rejected"
    await engine.settle()

    assert sink.accepted_of(LAMBDA_TRIGGER) == []
    assert _decision(engine, events[0])["state"] == "rejected"


async def test_an_unanswered_request_expires_and_never_triggers(make_engine, sink: CaptureSink) -> None:
    clock = FakeClock()
    engine = await make_engine([policy(actions=APPROVAL)], sink=sink.url, clock=clock)
    events = payload(alert_dict())
    approval_id = await _approval_request(engine, sink, events)

    clock.advance(601)
    assert await eventually(lambda: _decision(engine, events[0])["state"] == "approval_expired")
    assert await engine.pipeline.resolve_approval(approval_id, True, "late") == "expired"
    await engine.settle()

    assert sink.accepted_of(LAMBDA_TRIGGER) == []
    assert _decision(engine, events[0])["approval"]["state"] == "expired"
    assert engine.metric("agent_sre_approvals_pending") == 0


async def test_an_approval_answered_after_its_deadline_is_expired(make_engine, sink: CaptureSink) -> None:
    clock = FakeClock()
    engine = await make_engine([policy(actions=APPROVAL)], sink=sink.url, clock=clock, approval_check_interval_s=3600)
    events = payload(alert_dict())
    approval_id = await _approval_request(engine, sink, events)

    clock.advance(601)  # the timer loop has not run yet
    assert await engine.pipeline.resolve_approval(approval_id, True, "late") == "expired"
    await engine.settle()
    assert sink.accepted_of(LAMBDA_TRIGGER) == []


async def test_the_resolved_alert_cancels_a_pending_approval(make_engine, sink: CaptureSink) -> None:
    engine = await make_engine([policy(actions=APPROVAL)], sink=sink.url)
    events = payload(alert_dict())
    approval_id = await _approval_request(engine, sink, events)

    await engine.ingest(payload(alert_dict(status="resolved")))
    assert await engine.pipeline.resolve_approval(approval_id, True, "alice") == "cancelled"
    await engine.settle()

    assert sink.accepted_of(LAMBDA_TRIGGER) == []
    doc = _decision(engine, events[0])
    assert (doc["state"], doc["approval"]["state"]) == ("approval_cancelled", "cancelled")
    assert engine.metric("agent_sre_approvals_pending") == 0


async def test_on_resolved_record_keeps_the_approval_open(make_engine, sink: CaptureSink) -> None:
    engine = await make_engine([policy(actions={**APPROVAL, "onResolved": "record"})], sink=sink.url)
    events = payload(alert_dict())
    approval_id = await _approval_request(engine, sink, events)

    await engine.ingest(payload(alert_dict(status="resolved")))
    assert await engine.pipeline.resolve_approval(approval_id, True, "alice") == "approved"
    await engine.settle()
    assert sink.accepted_ids(LAMBDA_TRIGGER) == [trigger_id(events[0])]


async def test_an_unknown_approval_is_unknown(make_engine, sink: CaptureSink) -> None:
    engine = await make_engine([policy(actions=APPROVAL)], sink=sink.url)
    assert await engine.pipeline.resolve_approval("nope", True, "alice") == "unknown"


# cooldown


async def test_a_new_incident_on_the_same_target_within_the_cooldown_is_held_back(
    make_engine, sink: CaptureSink
) -> None:
    clock = FakeClock()
    engine = await make_engine([policy(actions={"cooldownSeconds": 300})], sink=sink.url, clock=clock)
    first = payload(alert_dict("cart-1", starts_at="2026-05-01T10:00:00Z"))
    again = payload(alert_dict("cart-1", starts_at="2026-05-01T10:02:00Z"))
    other = payload(alert_dict("cart-2", starts_at="2026-05-01T10:02:00Z"))
    await engine.ingest(first)
    await engine.settle()
    clock.advance(120)
    await engine.ingest(again + other)
    await engine.settle()

    assert sorted(sink.accepted_ids()) == sorted([trigger_id(first[0]), trigger_id(other[0])])
    doc = _decision(engine, again[0])
    assert doc["state"] == "cooldown"
    assert "pod-restart:shop/cart-1 is cooling down" in doc["reason"]
    assert engine.metric("agent_sre_dedup_hits_total", kind="cooldown") == 1

    clock.advance(181)  # past the 300 s of the first trigger
    after = payload(alert_dict("cart-1", starts_at="2026-05-01T10:05:01Z"))
    await engine.ingest(after)
    await engine.settle()
    assert sink.accepted_ids()[-1] == trigger_id(after[0])
    assert len(sink.accepted_ids()) == 3


# storm breaker


async def test_the_storm_breaker_escalates_triggers_beyond_the_window_budget(make_engine, sink: CaptureSink) -> None:
    clock = FakeClock()
    actions = {"maxTriggersPerWindow": 2, "windowSeconds": 600, "cooldownSeconds": 0}
    engine = await make_engine([policy(actions=actions)], sink=sink.url, clock=clock, workers=1)
    events = payload(*(alert_dict(f"cart-{i}") for i in range(3)))
    await engine.ingest(events)
    await engine.settle()

    assert len(sink.accepted_of(LAMBDA_TRIGGER)) == 2
    (escalation,) = sink.accepted_of(REMEDIATION_ESCALATED)
    data = escalation.data()
    assert data["reasons"][0].startswith("storm breaker: 2 triggers of policy shop/restart within 600s")
    stormed = next(e for e in events if escalation.ce_id == f"{decision_id(e.incident_key, 'shop/restart')}-escalated")
    doc = _decision(engine, stormed)
    assert (doc["state"], doc["outcome"]) == ("escalated", "trigger")
    assert doc["reason"].startswith("storm breaker")
    assert engine.counters()["escalations"] == 1
    assert engine.metric("agent_sre_policy_actions_total", action="storm_breaker") == 1

    clock.advance(601)  # a fresh window
    later = payload(alert_dict("cart-9"))
    await engine.ingest(later)
    await engine.settle()
    assert sink.accepted_ids(LAMBDA_TRIGGER)[-1] == trigger_id(later[0])


# escalation


async def test_an_escalation_is_emitted_when_no_stage_yields(make_engine, sink: CaptureSink) -> None:
    engine = await make_engine([policy(chain=[{"staticAnnotation": {}}])], sink=sink.url)
    events = payload(alert_dict())
    await engine.ingest(events)
    await engine.settle()

    (request,) = sink.accepted
    did = decision_id(events[0].incident_key, "shop/restart")
    assert (request.ce_type, request.ce_id) == (REMEDIATION_ESCALATED, f"{did}-escalated")
    data = request.data()
    assert data["correlation_id"] == did
    assert any(r.startswith("staticAnnotation: abstained") for r in data["reasons"])
    assert data["trace"][0]["outcome"] == "abstained"
    assert _decision(engine, events[0])["state"] == "escalated"
    assert engine.counters()["escalations"] == 1


async def test_the_first_stage_that_yields_decides(make_engine, sink: CaptureSink) -> None:
    chain = [{"staticAnnotation": {}}, *RESTART_CHAIN]
    engine = await make_engine([policy(chain=chain)], sink=sink.url)
    annotated = payload(
        alert_dict(
            "cart-1", annotations={"lambda_function": "pod-check-status", "lambda_parameters": '{"name": "cart-1"}'}
        )
    )
    plain = payload(alert_dict("cart-2"))
    await engine.ingest(annotated + plain)
    await engine.settle()

    by_pod = {r.data()["parameters"]["name"]: r.data() for r in sink.accepted_of(LAMBDA_TRIGGER)}
    assert by_pod["cart-1"]["lambda_function"] == "pod-check-status"
    assert by_pod["cart-1"]["triggered_by"] == "trm-sre/staticAnnotation"
    assert by_pod["cart-2"]["lambda_function"] == "pod-restart"
    assert by_pod["cart-2"]["triggered_by"] == "trm-sre/rules"


# resolved before decided


async def test_an_incident_resolved_before_it_was_decided_is_not_acted_on(make_engine, sink: CaptureSink) -> None:
    engine = await make_engine([policy()], sink=sink.url, start=False)
    events = payload(alert_dict())
    await engine.ingest(events)
    await engine.ingest(payload(alert_dict(status="resolved")))
    await engine.pipeline.start()
    await engine.settle()

    assert sink.requests == []
    assert _decision(engine, events[0])["state"] == "cancelled_resolved"


async def test_the_resolved_alert_cancels_a_trigger_still_waiting_for_the_sink(make_engine, sink: CaptureSink) -> None:
    engine = await make_engine([policy()], sink=sink.url)
    sink.go_down()
    events = payload(alert_dict())
    await engine.ingest(events)
    await engine.settle()
    await engine.ingest(payload(alert_dict(status="resolved")))
    sink.come_up()
    await engine.settle()

    assert _decision(engine, events[0])["deliveries"][0]["state"] == "cancelled"
    assert engine.store.outbox_depth() == 0
    assert sink.requests == []


RESTART_CHAIN = [
    {
        "rules": [
            {
                "function": "pod-restart",
                "parameters": {"name": "{{ $labels.pod }}", "namespace": "{{ $labels.namespace }}"},
            }
        ]
    }
]


# approval re-checks every guard (issue #13.2)


async def _approval_then(engine, sink: CaptureSink) -> tuple[str, list]:
    events = payload(alert_dict())
    approval_id = await _approval_request(engine, sink, events)
    return approval_id, events


async def test_approving_after_the_policy_switched_to_dry_run_sends_nothing(make_engine, sink: CaptureSink) -> None:
    engine = await make_engine([policy(actions=APPROVAL)], sink=sink.url, approval_check_interval_s=3600)
    approval_id, events = await _approval_then(engine, sink)
    engine.index.upsert(policy(actions={**APPROVAL, "dryRun": True}))

    state, why = await engine.pipeline.answer_approval(approval_id, True, "alice")
    await engine.settle()
    assert state == "cancelled"
    assert why is not None and "dry run" in why
    assert sink.accepted_of(LAMBDA_TRIGGER) == []
    doc = _decision(engine, events[0])
    assert (doc["state"], doc["approval"]["state"]) == ("approval_cancelled", "cancelled")
    assert "dry run" in doc["reason"]


async def test_approving_after_the_policy_was_deleted_sends_nothing(make_engine, sink: CaptureSink) -> None:
    engine = await make_engine([policy(actions=APPROVAL)], sink=sink.url, approval_check_interval_s=3600)
    approval_id, _ = await _approval_then(engine, sink)
    engine.index.remove("shop/restart")
    assert await engine.pipeline.resolve_approval(approval_id, True, "alice") == "cancelled"
    await engine.settle()
    assert sink.accepted_of(LAMBDA_TRIGGER) == []


async def test_approving_after_the_policy_stopped_allowing_the_function_sends_nothing(
    make_engine, sink: CaptureSink
) -> None:
    engine = await make_engine([policy(actions=APPROVAL)], sink=sink.url, approval_check_interval_s=3600)
    approval_id, _ = await _approval_then(engine, sink)
    narrowed = policy(actions=APPROVAL)
    narrowed = narrowed.model_copy(
        update={"spec": narrowed.spec.model_copy(update={"allowed_functions": ("pod-check-status",)})}
    )
    engine.index.upsert(narrowed)
    state, why = await engine.pipeline.answer_approval(approval_id, True, "alice")
    assert state == "cancelled" and "allowedFunctions" in (why or ""), why
    await engine.settle()
    assert sink.accepted_of(LAMBDA_TRIGGER) == []


async def test_approving_while_the_target_cools_down_sends_nothing(make_engine, sink: CaptureSink) -> None:
    engine = await make_engine(
        [policy(actions={**APPROVAL, "cooldownSeconds": 600})], sink=sink.url, approval_check_interval_s=3600
    )
    first = await _approval_request(engine, sink, payload(alert_dict(starts_at="2026-05-01T10:00:00Z")))
    await engine.ingest(payload(alert_dict(starts_at="2026-05-01T10:01:00Z")))
    await engine.settle()
    second = sink.accepted_of(APPROVAL_REQUESTED)[1].data()["approval_id"]
    assert await engine.pipeline.resolve_approval(first, True, "alice") == "approved"
    state, why = await engine.pipeline.answer_approval(second, True, "alice")
    assert state == "cancelled" and "cooling down" in (why or ""), why
    await engine.settle()
    assert len(sink.accepted_of(LAMBDA_TRIGGER)) == 1


async def test_approving_past_the_storm_breaker_sends_nothing(make_engine, sink: CaptureSink) -> None:
    clock = FakeClock()
    actions = {**APPROVAL, "approvalTimeoutSeconds": 3600, "maxTriggersPerWindow": 1, "windowSeconds": 600}
    engine = await make_engine([policy(actions=actions)], sink=sink.url, clock=clock, approval_check_interval_s=3600)
    approval_id, _ = await _approval_then(engine, sink)
    # The request left the window; since then another alert used the policy's whole budget.
    clock.advance(700)
    engine.index.upsert(policy(actions={"maxTriggersPerWindow": 1, "windowSeconds": 600}))
    await engine.ingest(payload(alert_dict(pod="cart-2")))
    await engine.settle()
    assert len(sink.accepted_of(LAMBDA_TRIGGER)) == 1
    state, why = await engine.pipeline.answer_approval(approval_id, True, "alice")
    assert state == "cancelled" and "storm breaker" in (why or ""), why
    await engine.settle()
    assert len(sink.accepted_of(LAMBDA_TRIGGER)) == 1


async def test_deleting_the_policy_cancels_its_pending_approvals(make_engine, sink: CaptureSink) -> None:
    engine = await make_engine([policy(actions=APPROVAL)], sink=sink.url)
    approval_id, events = await _approval_then(engine, sink)
    engine.index.remove("shop/restart")
    assert await eventually(lambda: _decision(engine, events[0])["approval"]["state"] == "cancelled")
    assert "no longer exists" in _decision(engine, events[0])["reason"]
    assert await engine.pipeline.resolve_approval(approval_id, True, "alice") == "cancelled"
    assert sink.accepted_of(LAMBDA_TRIGGER) == []


async def test_a_policy_not_loaded_yet_does_not_cancel_its_pending_approvals(make_engine, sink: CaptureSink) -> None:
    # Cluster mode just after a restart: the index fills as the operator lists policies. A policy missing
    # until then is not a deleted one: its approvals stay pending, and an answer is refused without cancelling.
    loaded = [True]
    engine = await make_engine([policy(actions=APPROVAL)], sink=sink.url, index_complete=lambda: loaded[0])
    approval_id, events = await _approval_then(engine, sink)
    loaded[0] = False
    engine.index.remove("shop/restart")
    state, why = await engine.pipeline.answer_approval(approval_id, True, "alice")
    assert state == "pending" and "still being loaded" in (why or "")
    await asyncio.sleep(0.3)  # several rounds of the expiry loop (every 0.05 s here), which must not cancel it
    await engine.settle()
    assert _decision(engine, events[0])["approval"]["state"] == "pending"
    loaded[0] = True
    engine.index.upsert(policy(actions=APPROVAL))
    assert await engine.pipeline.resolve_approval(approval_id, True, "alice") == "approved"
    await engine.settle()
    assert len(sink.accepted_of(LAMBDA_TRIGGER)) == 1
