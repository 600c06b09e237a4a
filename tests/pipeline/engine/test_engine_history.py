"""What the engine tells about a decision afterwards: trace, deliveries, approvals, lambda responses."""

from __future__ import annotations

import json

from controller.schemas.decision import decision_id
from tests.pipeline.engine.builders import alert_dict, payload, policy
from tests.pipeline.sink import CaptureSink


async def test_a_lambda_response_is_stored_on_its_decision(make_engine, sink: CaptureSink) -> None:
    engine = await make_engine([policy()], sink=sink.url)
    events = payload(alert_dict())
    await engine.ingest(events)
    await engine.settle()
    did = decision_id(events[0].incident_key, "shop/restart")
    response = {"functionName": "pod-restart", "result": {"statusCode": 200, "body": {"status": "success"}}}

    assert await engine.pipeline.record_lambda_response(did, True, response) is True
    assert await engine.pipeline.record_lambda_response("no-such-decision", False, {}) is False

    doc = engine.pipeline.get_decision(did)
    assert doc is not None
    assert doc["result"] == "success"
    assert [(r["success"], r["data"]) for r in doc["responses"]] == [(True, response)]
    assert engine.metric("agent_sre_remediation_results_total", function="pod-restart", result="success") == 1


async def test_get_decision_returns_the_whole_trace_and_history(make_engine, sink: CaptureSink) -> None:
    chain = [
        {"staticAnnotation": {}},
        {
            "rules": [
                {
                    "function": "pod-restart",
                    "parameters": {"name": "{{ $labels.pod }}", "namespace": "{{ $labels.namespace }}"},
                }
            ]
        },
    ]
    engine = await make_engine([policy(chain=chain)], sink=sink.url)
    events = payload(alert_dict("cart-1"))
    await engine.ingest(events)
    await engine.settle()
    await engine.ingest(payload(alert_dict("cart-1", status="resolved")))
    did = decision_id(events[0].incident_key, "shop/restart")

    doc = engine.pipeline.get_decision(did)
    assert doc is not None
    json.dumps(doc)  # JSON-able as it is
    assert (doc["id"], doc["policy"], doc["outcome"], doc["state"]) == (did, "shop/restart", "trigger", "triggered")
    assert (doc["function"], doc["stage"], doc["confidence"]) == ("pod-restart", "rules", 1.0)
    assert doc["parameters"] == {"name": "cart-1", "namespace": "shop", "type": "pod"}
    assert [(t["stage"], t["outcome"]) for t in doc["trace"]] == [
        ("staticAnnotation", "abstained"),
        ("rules", "accepted"),
    ]
    assert doc["incident"]["resolved"] is True
    assert [a["status"] for a in doc["alerts"]] == ["firing", "resolved"]
    (delivery,) = doc["deliveries"]
    assert (delivery["event_id"], delivery["state"], delivery["attempts"]) == (f"{did}-trigger", "delivered", 1)
    assert delivery["delivered_at"] is not None
    assert doc["approval"] is None
    assert engine.pipeline.get_decision("unknown") is None


async def test_decide_only_has_no_side_effects(make_engine, sink: CaptureSink) -> None:
    engine = await make_engine([policy()], sink=sink.url)
    event = payload(alert_dict())[0]

    decision = await engine.pipeline.decide_only(event)
    await engine.settle()

    assert decision is not None
    assert (decision.outcome, decision.function) == ("trigger", "pod-restart")
    assert engine.pipeline.get_decision(decision.id) is None
    assert engine.sql("SELECT COUNT(*) FROM alerts") == [(0,)]
    assert sink.requests == []
    assert engine.counters()["alertsMatched"] == 0
    assert await engine.pipeline.decide_only(payload(alert_dict(alertname="SomethingElse"))[0]) is None


async def test_readiness_follows_the_lifecycle(make_engine, sink: CaptureSink) -> None:
    engine = await make_engine([policy()], sink=sink.url, start=False)
    assert engine.pipeline.readiness() == (False, ["the pipeline is not running"])
    await engine.pipeline.start()
    assert engine.pipeline.readiness() == (True, [])
    await engine.pipeline.stop(drain_timeout_s=1)
    assert engine.pipeline.readiness()[0] is False
