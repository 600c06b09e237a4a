"""Delivery: retries on what Knative retries, dead letters on the rest, replay after an outage."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from controller.schemas.decision import LAMBDA_TRIGGER, decision_id
from tests.pipeline.engine.builders import FakeClock, alert_dict, eventually, payload, policy, trigger_id
from tests.pipeline.sink import Answer, CaptureSink


def _delivery_state(engine, event) -> dict:
    doc = engine.pipeline.get_decision(decision_id(event.incident_key, "shop/restart"))
    assert doc is not None
    (delivery,) = doc["deliveries"]
    return delivery


async def test_a_sink_outage_then_recovery_delivers_every_trigger_exactly_once(make_engine, sink: CaptureSink) -> None:
    engine = await make_engine([policy()], sink=sink.url)
    sink.go_down()
    events = payload(*(alert_dict(f"cart-{i}") for i in range(5)))
    await engine.ingest(events)
    await engine.settle()  # decided; the first delivery sequences ran out against a refused connection

    assert sink.requests == []
    assert engine.metric("agent_sre_outbox_depth") == 5
    assert engine.metric("agent_sre_triggers_total", result="failed") >= 5
    assert {_delivery_state(engine, e)["state"] for e in events} == {"pending"}

    sink.come_up()
    expected = sorted(trigger_id(e) for e in events)
    assert await sink.wait_for_async(lambda s: sorted(set(s.accepted_ids())) == expected, timeout=20)
    await engine.settle()
    assert engine.store.outbox_depth() == 0  # nothing is left that could be sent again
    assert sorted(sink.accepted_ids()) == expected  # once each, under the same ids
    assert {_delivery_state(engine, e)["state"] for e in events} == {"delivered"}


async def test_alerts_arriving_during_the_outage_are_delivered_too(make_engine, sink: CaptureSink) -> None:
    engine = await make_engine([policy()], sink=sink.url)
    before = payload(alert_dict("cart-1"))
    await engine.ingest(before)
    await engine.settle()
    sink.go_down()
    during = payload(alert_dict("cart-2"), alert_dict("cart-3"))
    await engine.ingest(during)
    await engine.settle()
    sink.come_up()

    expected = sorted(trigger_id(e) for e in before + during)
    assert await sink.wait_for_async(lambda s: sorted(set(s.accepted_ids())) == expected, timeout=20)
    await engine.settle()
    assert sorted(sink.accepted_ids()) == expected


async def test_500_then_200_is_retried_under_the_same_id(make_engine, sink: CaptureSink) -> None:
    engine = await make_engine([policy()], sink=sink.url)
    sink.script(500, 502)
    events = payload(alert_dict())
    await engine.ingest(events)
    await engine.settle()

    assert [r.status for r in sink.requests] == [500, 502, 202]
    assert {r.ce_id for r in sink.requests} == {trigger_id(events[0])}
    assert engine.metric("agent_sre_triggers_total", result="retried") == 2
    assert engine.metric("agent_sre_triggers_total", result="sent") == 1
    assert _delivery_state(engine, events[0])["attempts"] == 3


@pytest.mark.parametrize("status", [404, 408, 409, 429, 503])
async def test_knative_retryable_answers_are_retried(make_engine, sink: CaptureSink, status: int) -> None:
    engine = await make_engine([policy()], sink=sink.url)
    sink.script(status)
    events = payload(alert_dict())
    await engine.ingest(events)
    await engine.settle()

    assert [r.status for r in sink.requests] == [status, 202]
    assert _delivery_state(engine, events[0])["state"] == "delivered"


async def test_a_reset_connection_is_retried(make_engine, sink: CaptureSink) -> None:
    engine = await make_engine([policy()], sink=sink.url)
    sink.script(Answer(reset=True))
    events = payload(alert_dict())
    await engine.ingest(events)
    await engine.settle()

    assert [r.status for r in sink.requests] == [None, 202]
    assert sink.accepted_ids() == [trigger_id(events[0])]


async def test_a_sink_slower_than_the_timeout_gets_the_same_event_again(make_engine, sink: CaptureSink) -> None:
    engine = await make_engine([policy()], sink=sink.url, sink_timeout_s=0.2)
    sink.script(Answer(202, delay_s=1.0))
    events = payload(alert_dict())
    await engine.ingest(events)
    await engine.settle()

    assert _delivery_state(engine, events[0])["state"] == "delivered"
    # The slow answer may still land after the retry: the sink sees one id, never a second one.
    assert await sink.wait_for_async(lambda s: len(s.requests) == 2)
    assert {r.ce_id for r in sink.requests} == {trigger_id(events[0])}


async def test_400_is_dead_lettered_at_once(make_engine, sink: CaptureSink) -> None:
    engine = await make_engine([policy()], sink=sink.url)
    sink.answer(400)
    events = payload(alert_dict())
    await engine.ingest(events)
    await engine.settle()

    assert [r.status for r in sink.requests] == [400]
    delivery = _delivery_state(engine, events[0])
    assert delivery["state"] == "dead"
    assert delivery["last_status"] == 400
    assert engine.metric("agent_sre_triggers_total", result="dead_lettered") == 1
    assert engine.metric("agent_sre_outbox_depth") == 0
    assert engine.counters()["deadLetters"] == 1
    # A dead letter is never replayed: the replay loop only reads pending entries.
    assert engine.store.due_outbox(now=float("inf")) == []


async def test_an_event_undeliverable_past_its_max_age_is_dead_lettered(make_engine, sink: CaptureSink) -> None:
    clock = FakeClock()
    engine = await make_engine([policy()], sink=sink.url, clock=clock, outbox_max_age_s=600)
    sink.go_down()
    events = payload(alert_dict())
    await engine.ingest(events)
    await engine.settle()
    assert _delivery_state(engine, events[0])["state"] == "pending"

    clock.advance(601)  # due again for the replay loop, and now too old

    assert await eventually(lambda: _delivery_state(engine, events[0])["state"] == "dead")
    await engine.settle()
    assert "undelivered after 600s" in _delivery_state(engine, events[0])["last_error"]
    assert engine.counters()["deadLetters"] == 1
    assert engine.store.due_outbox(now=float("inf")) == []
    sink.come_up()
    await engine.settle()
    assert sink.requests == []


async def test_retried_and_sent_are_counted_for_every_event_type(make_engine, sink: CaptureSink) -> None:
    escalate = policy(chain=[{"staticAnnotation": {}}])  # no annotation on the alert: nothing yields
    engine = await make_engine([escalate], sink=sink.url)
    sink.script(503)
    await engine.ingest(payload(alert_dict()))
    await engine.settle()

    escalated = "io.homelab.agent-sre.remediation.escalated"
    assert engine.metric("agent_sre_outbox_deliveries_total", type=escalated, result="retried") == 1
    assert engine.metric("agent_sre_outbox_deliveries_total", type=escalated, result="sent") == 1
    assert engine.metric("agent_sre_triggers_total", result="sent") == 0
    assert sink.accepted_of(LAMBDA_TRIGGER) == []


async def test_the_outbox_gauge_follows_deliveries_without_a_store_read_per_alert(
    make_engine, sink: CaptureSink
) -> None:
    # The hot path (a commit, a delivery) asks for a trailing re-read, not one per alert: the gauge shows
    # the triggers in flight while a slow sink holds them, and falls to 0 once they are delivered.
    engine = await make_engine([policy()], sink=sink.url)
    sink.answer(202, delay_s=3.0)
    events = payload(*(alert_dict(f"cart-{i}") for i in range(3)))
    await engine.ingest(events)
    assert await eventually(lambda: engine.metric("agent_sre_outbox_depth") == 3)
    sink.answer(202)
    assert await sink.wait_for_async(lambda s: len(s.accepted_ids()) == 3, timeout=20)
    assert await eventually(lambda: engine.metric("agent_sre_outbox_depth") == 0)
    assert engine.store.outbox_depth() == 0


async def test_a_fresh_entry_the_replay_loop_settled_first_is_not_sent_again(make_engine, sink: CaptureSink) -> None:
    # On SQLite a committed entry is due at once: the replay loop may find and deliver it in the moment
    # between the decision's commit and the worker's send-as-committed (`deliver_new`). Seen in `make bench`
    # as a few duplicate triggers per 5,000 at 500 alerts/s; the send-as-committed must not repeat it.
    engine = await make_engine([policy()], sink=sink.url)
    events = payload(alert_dict("cart-1"))
    await engine.ingest(events)
    await engine.settle()
    delivered = engine.store.outbox_entry(trigger_id(events[0]))
    assert delivered is not None and delivered.state == "delivered"
    fresh = replace(delivered, event_id="fresh-1", state="pending", attempts=0, delivered_at=None)
    with engine.store.transaction() as tx:
        assert tx.insert_outbox(fresh, time.time())

    await engine.pipeline._outbox.replay_due()  # the replay loop gets there first
    engine.pipeline._outbox.deliver_new([fresh])  # then the worker's send of the entry as it committed it
    await engine.settle()

    # The CloudEvent id comes from the decision: the first trigger, then the copy once (not twice).
    assert len(sink.requests) == 2, [r.ce_id for r in sink.requests]
    stored = engine.store.outbox_entry("fresh-1")
    assert stored is not None and stored.state == "delivered"
