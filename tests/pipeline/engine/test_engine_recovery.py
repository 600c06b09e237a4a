"""Crash recovery: what was acknowledged is decided and triggered exactly once after a restart."""

from __future__ import annotations

from controller.engine.store import Store
from controller.schemas.decision import LAMBDA_TRIGGER
from tests.pipeline.engine.builders import alert_dict, payload, policy, trigger_id
from tests.pipeline.sink import CaptureSink


async def test_alerts_recorded_but_never_decided_are_decided_once_after_a_restart(
    make_engine, sink: CaptureSink, tmp_path
) -> None:
    state = tmp_path / "state"
    # The first process records and acknowledges, then dies before any worker ran.
    crashed = await make_engine([policy()], sink=sink.url, state_dir=state, start=False)
    events = payload(*(alert_dict(f"cart-{i}") for i in range(4)))
    result = await crashed.ingest(events)
    assert result.new_incidents == 4

    # The next process opens the same state directory (the dead one's connection is simply abandoned).
    restarted = await make_engine([policy()], sink=sink.url, state_dir=state, store=Store.open(state))
    await restarted.settle()

    expected = sorted(trigger_id(e) for e in events)
    assert sorted(sink.accepted_ids()) == expected
    assert restarted.sql("SELECT COUNT(*), COUNT(DISTINCT incident_key) FROM decisions") == [(4, 4)]
    assert restarted.sql("SELECT COUNT(*) FROM alerts WHERE decided = 0") == [(0,)]

    # Alertmanager re-sends what it never saw acknowledged: nothing new happens.
    again = await restarted.ingest(events)
    await restarted.settle()
    assert (again.new_incidents, again.duplicates) == (0, 4)
    assert sorted(sink.accepted_ids()) == expected


async def test_a_decision_committed_but_never_delivered_is_sent_after_a_restart_under_the_same_id(
    make_engine, sink: CaptureSink, tmp_path
) -> None:
    state = tmp_path / "state"
    sink.go_down()
    first = await make_engine([policy()], sink=sink.url, state_dir=state)
    events = payload(alert_dict("cart-1"), alert_dict("cart-2"))
    await first.ingest(events)
    await first.settle()
    await first.pipeline.stop(drain_timeout_s=0)
    assert sink.requests == []

    sink.come_up()
    second = await make_engine([policy()], sink=sink.url, state_dir=state, store=Store.open(state))
    expected = sorted(trigger_id(e) for e in events)
    assert await sink.wait_for_async(lambda s: sorted(set(s.accepted_ids())) == expected)
    await second.settle()
    assert sorted(sink.accepted_ids()) == expected
    assert second.sql("SELECT COUNT(*) FROM decisions") == [(2,)]


async def test_workers_cancelled_mid_flight_leave_no_incident_under_two_ids(
    make_engine, sink: CaptureSink, tmp_path
) -> None:
    state = tmp_path / "state"
    sink.go_down()  # nothing reaches the sink from the process that dies, so every id must arrive exactly once
    first = await make_engine([policy(actions={"cooldownSeconds": 0})], sink=sink.url, state_dir=state, workers=1)
    events = payload(*(alert_dict(f"cart-{i}") for i in range(20)))
    await first.ingest(events)
    await first.pipeline.stop(drain_timeout_s=0)  # abrupt: queued work is dropped, in-flight work cancelled

    sink.come_up()
    second = await make_engine(
        [policy(actions={"cooldownSeconds": 0})], sink=sink.url, state_dir=state, store=Store.open(state)
    )
    expected = sorted(trigger_id(e) for e in events)
    assert await sink.wait_for_async(lambda s: sorted(set(s.accepted_ids())) == expected, timeout=30)
    await second.settle()

    assert sorted(sink.accepted_ids(LAMBDA_TRIGGER)) == expected
    assert second.sql("SELECT COUNT(*), COUNT(DISTINCT incident_key) FROM decisions") == [(20, 20)]
    assert second.sql("SELECT COUNT(*) FROM outbox") == [(20,)]


async def test_a_graceful_stop_finishes_queued_work(make_engine, sink: CaptureSink) -> None:
    engine = await make_engine([policy()], sink=sink.url)
    events = payload(*(alert_dict(f"cart-{i}") for i in range(5)))
    await engine.ingest(events)
    await engine.pipeline.stop(drain_timeout_s=20)

    assert sorted(sink.accepted_ids()) == sorted(trigger_id(e) for e in events)
    assert engine.pipeline.readiness()[0] is False
