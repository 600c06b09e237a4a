"""Once per incident: Alertmanager's re-sends and retries never yield a second trigger."""

from __future__ import annotations

import json

from controller.schemas.decision import LAMBDA_TRIGGER, decision_id
from tests.pipeline.engine.builders import alert_dict, payload, policy, trigger_id
from tests.pipeline.sink import CaptureSink


async def test_the_same_payload_six_times_yields_exactly_one_trigger(make_engine, sink: CaptureSink) -> None:
    engine = await make_engine([policy()], sink=sink.url)
    events = payload(alert_dict("cart-7f9c6d5b8-x2k4q"))

    results = [await engine.ingest(events) for _ in range(3)]
    await engine.settle()
    results += [await engine.ingest(events) for _ in range(3)]
    await engine.settle()

    assert [r.new_incidents for r in results] == [1, 0, 0, 0, 0, 0]
    assert [r.duplicates for r in results] == [0, 1, 1, 1, 1, 1]
    triggers = sink.accepted_of(LAMBDA_TRIGGER)
    assert len(triggers) == 1
    assert len(sink.requests) == 1
    request = triggers[0]
    did = decision_id(events[0].incident_key, "shop/restart")
    assert request.ce_id == f"{did}-trigger" == trigger_id(events[0])
    data = request.data()
    assert data["lambda_function"] == "pod-restart"
    assert data["parameters"] == {"name": "cart-7f9c6d5b8-x2k4q", "namespace": "shop", "type": "pod"}
    assert data["correlation_id"] == did
    assert data["policy"] == "shop/restart"
    assert data["alert"]["labels"]["pod"] == "cart-7f9c6d5b8-x2k4q"
    assert engine.metric("agent_sre_dedup_hits_total", kind="incident") == 5
    assert engine.metric("agent_sre_triggers_total", result="sent") == 1
    assert engine.metric("agent_sre_alerts_received_total", source="alertmanager", status="firing") == 6
    assert engine.counters()["triggers"] == 1
    assert engine.counters()["alertsMatched"] == 1


async def test_the_trigger_is_a_binary_mode_cloudevent_with_correlation_id(make_engine, sink: CaptureSink) -> None:
    engine = await make_engine([policy()], sink=sink.url)
    events = payload(alert_dict())
    await engine.ingest(events)
    await engine.settle()

    (request,) = sink.accepted
    did = decision_id(events[0].incident_key, "shop/restart")
    assert request.headers["content-type"] == "application/json"
    assert request.headers["ce-specversion"] == "1.0"
    assert request.headers["ce-type"] == LAMBDA_TRIGGER
    assert request.headers["ce-source"] == "/trm-sre"
    assert request.headers["ce-correlationid"] == did
    assert request.headers["ce-lambdafunction"] == "pod-restart"
    assert request.headers["ce-subject"] == "KubePodCrashLooping"
    assert "ce-time" in request.headers
    assert json.loads(request.body)["lambda_function"] == "pod-restart"  # data is the body itself


async def test_the_resolved_alert_adds_no_trigger_and_is_recorded_on_its_incident(
    make_engine, sink: CaptureSink
) -> None:
    engine = await make_engine([policy()], sink=sink.url)
    firing = payload(alert_dict())
    resolved = payload(alert_dict(status="resolved"))
    await engine.ingest(firing)
    await engine.settle()

    first = await engine.ingest(resolved)
    again = await engine.ingest(resolved)
    await engine.settle()

    assert (first.resolved, first.duplicates) == (1, 0)
    assert (again.resolved, again.duplicates) == (0, 1)
    assert len(sink.requests) == 1
    doc = engine.pipeline.get_decision(decision_id(firing[0].incident_key, "shop/restart"))
    assert doc is not None
    assert doc["incident"]["resolved"] is True
    assert [a["status"] for a in doc["alerts"]] == ["firing", "resolved"]
    assert doc["state"] == "triggered"


async def test_each_alert_of_a_group_is_its_own_incident(make_engine, sink: CaptureSink) -> None:
    engine = await make_engine([policy()], sink=sink.url)
    events = payload(alert_dict("cart-1"), alert_dict("cart-2"), alert_dict("cart-3", status="resolved"))

    result = await engine.ingest(events)
    await engine.settle()

    assert (result.accepted, result.new_incidents, result.resolved) == (3, 2, 1)
    assert sorted(sink.accepted_ids()) == sorted([trigger_id(events[0]), trigger_id(events[1])])


async def test_a_new_firing_of_the_same_alert_is_a_new_incident(make_engine, sink: CaptureSink) -> None:
    engine = await make_engine([policy(actions={"cooldownSeconds": 0})], sink=sink.url)
    first = payload(alert_dict(starts_at="2026-05-01T10:00:00Z"))
    second = payload(alert_dict(starts_at="2026-05-01T12:00:00Z"))
    await engine.ingest(first)
    await engine.ingest(second)
    await engine.settle()

    assert sorted(sink.accepted_ids()) == sorted([trigger_id(first[0]), trigger_id(second[0])])


async def test_k_ce_overrides_add_extensions_but_never_change_spec_attributes(make_engine, sink: CaptureSink) -> None:
    overrides = {"cluster": "homelab", "type": "io.evil", "bad-name": "x", "id": "same-for-all"}
    engine = await make_engine([policy()], sink=sink.url, ce_overrides=overrides, ce_source="/trm-sre/prod")
    events = payload(alert_dict())
    await engine.ingest(events)
    await engine.settle()

    (request,) = sink.accepted
    assert request.headers["ce-cluster"] == "homelab"
    assert request.headers["ce-type"] == LAMBDA_TRIGGER
    assert request.headers["ce-id"] == trigger_id(events[0])
    assert request.headers["ce-source"] == "/trm-sre/prod"
    assert "ce-bad-name" not in request.headers


async def test_the_policy_sink_wins_over_the_default_sink(make_engine, sink: CaptureSink) -> None:
    with CaptureSink() as own:
        engine = await make_engine([policy(actions={"sink": own.url})], sink=sink.url)
        await engine.ingest(payload(alert_dict()))
        await engine.settle()
        assert len(own.accepted_of(LAMBDA_TRIGGER)) == 1
    assert sink.requests == []


async def test_without_any_sink_url_triggers_are_appended_to_the_jsonl_file(make_engine) -> None:
    engine = await make_engine([policy()], sink=None)
    events = payload(alert_dict("cart-1"), alert_dict("cart-2"))
    await engine.ingest(events)
    await engine.settle()

    lines = (engine.state_dir / "triggers.jsonl").read_text().splitlines()
    written = [json.loads(line) for line in lines]
    assert sorted(e["id"] for e in written) == sorted(trigger_id(e) for e in events)
    assert {e["type"] for e in written} == {LAMBDA_TRIGGER}
    assert {e["data"]["parameters"]["name"] for e in written} == {"cart-1", "cart-2"}


async def test_an_alert_no_policy_matched_is_decided_when_re_sent_after_a_policy_appears(
    make_engine, sink: CaptureSink
) -> None:
    engine = await make_engine([], sink=sink.url)
    events = payload(alert_dict())
    first = await engine.ingest(events)
    await engine.settle()
    assert first.new_incidents == 1
    assert sink.requests == []

    engine.index.upsert(policy())
    await engine.ingest(events)
    await engine.settle()

    assert sink.accepted_ids() == [trigger_id(events[0])]
    await engine.ingest(events)
    await engine.settle()
    assert len(sink.requests) == 1
