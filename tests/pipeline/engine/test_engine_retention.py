"""Retention: finished incidents idle past `retention_days` are swept; nothing unfinished, nothing still re-sent."""

from __future__ import annotations

import logging

import pytest

from controller.schemas.decision import LAMBDA_TRIGGER, decision_id
from tests.pipeline.engine.builders import FakeClock, alert_dict, eventually, payload, policy
from tests.pipeline.sink import CaptureSink

DAY = 86_400.0
TABLES = ("incidents", "alerts", "decisions", "outbox", "approvals", "responses", "cooldowns")
APPROVAL = {"requireApproval": True, "approvalTimeoutSeconds": 600}


def rows(engine) -> dict[str, int]:
    return {table: engine.sql(f"SELECT COUNT(*) FROM {table}")[0][0] for table in TABLES}


def swept_metric(engine) -> dict[str, float]:
    counts = {t: engine.metric("agent_sre_store_rows_swept_total", table=t) for t in TABLES}
    return {t: n for t, n in counts.items() if n}


async def fire_and_resolve(engine, pod: str) -> None:
    """One incident through its whole life: fired, decided, triggered (delivered), resolved."""
    await engine.ingest(payload(alert_dict(pod)))
    await engine.settle()
    await engine.ingest(payload(alert_dict(pod, status="resolved")))
    await engine.settle()


async def test_an_old_finished_incident_and_everything_hanging_off_it_is_swept(make_engine, sink: CaptureSink) -> None:
    clock = FakeClock()
    engine = await make_engine([policy()], sink=sink.url, clock=clock)
    events = payload(alert_dict("cart-1"))
    await fire_and_resolve(engine, "cart-1")
    did = decision_id(events[0].incident_key, "shop/restart")
    assert await engine.pipeline.record_lambda_response(did, True, {"restarted": True})
    assert rows(engine) == {
        "incidents": 1,
        "alerts": 2,
        "decisions": 1,
        "outbox": 1,
        "approvals": 0,
        "responses": 1,
        "cooldowns": 1,
    }

    clock.advance(29 * DAY)
    assert await engine.pipeline.sweep_retention() == {}  # within the retention: kept
    assert engine.pipeline.get_decision(did) is not None

    clock.advance(2 * DAY)
    swept = await engine.pipeline.sweep_retention()

    expected = {"incidents": 1, "alerts": 2, "decisions": 1, "outbox": 1, "responses": 1, "cooldowns": 1}
    assert swept == expected
    assert set(rows(engine).values()) == {0}
    assert engine.pipeline.get_decision(did) is None
    assert swept_metric(engine) == expected
    assert await engine.pipeline.sweep_retention() == {}  # nothing left; the metric does not move
    assert swept_metric(engine) == expected


async def test_a_recent_incident_is_kept_next_to_an_old_one(make_engine, sink: CaptureSink) -> None:
    clock = FakeClock()
    engine = await make_engine([policy()], sink=sink.url, clock=clock)
    await fire_and_resolve(engine, "old")
    clock.advance(20 * DAY)
    await fire_and_resolve(engine, "recent")

    clock.advance(11 * DAY)  # the first is 31 days idle, the second 11
    swept = await engine.pipeline.sweep_retention()

    assert swept == {"incidents": 1, "alerts": 2, "decisions": 1, "outbox": 1, "cooldowns": 1}
    (firing,) = engine.sql("SELECT payload FROM alerts WHERE status = 'firing'")
    assert '"pod":"recent"' in firing[0]
    assert rows(engine) == {
        "incidents": 1,
        "alerts": 2,
        "decisions": 1,
        "outbox": 1,
        "approvals": 0,
        "responses": 0,
        "cooldowns": 1,
    }


async def test_an_old_incident_still_being_resent_is_kept_and_never_triggers_again(
    make_engine, sink: CaptureSink
) -> None:
    """The once-per-incident guarantee across the retention: the decision stays while Alertmanager re-sends."""
    clock = FakeClock()
    engine = await make_engine([policy()], sink=sink.url, clock=clock, retention_days=2)
    events = payload(alert_dict("stuck"))
    await engine.ingest(events)
    await engine.settle()
    assert len(sink.accepted_of(LAMBDA_TRIGGER)) == 1

    # Still firing: Alertmanager re-sends it every repeat_interval (a day here, under the 2-day retention);
    # the sweep runs in between, for ten days, long after the incident started.
    for _ in range(10):
        clock.advance(DAY)
        result = await engine.ingest(events)
        assert (result.new_incidents, result.duplicates) == (0, 1)
        await engine.settle()
        swept = await engine.pipeline.sweep_retention()
        assert "incidents" not in swept and "decisions" not in swept

    clock.advance(1.9 * DAY)  # a late re-send, still within the retention of the last one
    assert (await engine.pipeline.sweep_retention()).get("incidents") is None
    result = await engine.ingest(events)
    await engine.settle()

    assert (result.new_incidents, result.duplicates) == (0, 1)
    assert len(sink.accepted_of(LAMBDA_TRIGGER)) == 1
    assert len(sink.requests) == 1
    (first_seen, last_seen, duplicates) = engine.sql("SELECT first_seen, last_seen, duplicates FROM incidents")[0]
    assert last_seen - first_seen > 11 * DAY and duplicates == 11
    assert engine.metric("agent_sre_dedup_hits_total", kind="incident") == 11


async def test_pending_outbox_entries_survive_any_age(make_engine, sink: CaptureSink) -> None:
    clock = FakeClock()
    sink.answer(503)  # the sink is down: the trigger stays pending
    engine = await make_engine(
        [policy()], sink=sink.url, clock=clock, redeliver_interval_s=3600, outbox_max_age_s=1000 * DAY
    )
    events = payload(alert_dict("waiting"))
    await engine.ingest(events)
    await engine.settle()
    assert engine.sql("SELECT state FROM outbox") == [("pending",)]

    clock.advance(365 * DAY)  # every timestamp of the incident is a year old; only the entry's state keeps it
    swept = await engine.pipeline.sweep_retention()

    assert swept == {"cooldowns": 1}  # the target's cooldown ended a year ago; nothing of the incident goes
    assert rows(engine) == {
        "incidents": 1,
        "alerts": 1,
        "decisions": 1,
        "outbox": 1,
        "approvals": 0,
        "responses": 0,
        "cooldowns": 0,
    }
    sink.answer(202)
    await engine.pipeline.stop(drain_timeout_s=10)  # the drain replays what is due: still deliverable
    assert engine.sql("SELECT state FROM outbox") == [("delivered",)]
    assert len(sink.accepted_of(LAMBDA_TRIGGER)) == 1


async def test_pending_approvals_survive_any_age(make_engine, sink: CaptureSink) -> None:
    clock = FakeClock()
    # The expiry timer never runs here: the approval stays pending however late it is.
    engine = await make_engine([policy(actions=APPROVAL)], sink=sink.url, clock=clock, approval_check_interval_s=3600)
    await engine.ingest(payload(alert_dict("careful")))
    await engine.settle()
    approval_id = engine.sql("SELECT id FROM approvals")[0][0]

    clock.advance(365 * DAY)
    assert await engine.pipeline.sweep_retention() == {}
    assert engine.sql("SELECT state FROM approvals") == [("pending",)]

    # Answered at last (it expired): finished now, but its answer is recent activity.
    assert await engine.pipeline.resolve_approval(approval_id, True, "late") == "expired"
    assert await engine.pipeline.sweep_retention() == {}
    clock.advance(31 * DAY)
    swept = await engine.pipeline.sweep_retention()
    assert swept == {"incidents": 1, "alerts": 1, "decisions": 1, "outbox": 1, "approvals": 1}
    assert set(rows(engine).values()) == {0}


async def test_undecided_alerts_survive_any_age(make_engine, sink: CaptureSink) -> None:
    """The crash-recovery work list: recorded, never decided (no worker ran), a year later still decided."""
    clock = FakeClock()
    engine = await make_engine([policy()], sink=sink.url, clock=clock, start=False)
    state_dir = engine.state_dir
    await engine.ingest(payload(alert_dict("queued")))
    assert engine.sql("SELECT decided FROM alerts") == [(0,)]
    engine.store.close()

    # The controller was down for a year; it comes back and sweeps before it decides.
    clock.advance(365 * DAY)
    engine = await make_engine([policy()], sink=sink.url, clock=clock, start=False, state_dir=state_dir)
    assert await engine.pipeline.sweep_retention() == {}
    assert rows(engine)["alerts"] == 1
    await engine.pipeline.start()
    await engine.settle()
    assert await sink.wait_for_async(lambda s: len(s.accepted_of(LAMBDA_TRIGGER)) == 1)


async def test_retention_zero_keeps_everything(make_engine, sink: CaptureSink) -> None:
    clock = FakeClock()
    engine = await make_engine([policy()], sink=sink.url, clock=clock, retention_days=0, retention_first_sweep_s=0)
    await fire_and_resolve(engine, "cart-1")
    before = rows(engine)

    clock.advance(10_000 * DAY)
    assert await engine.pipeline.sweep_retention() == {}
    assert rows(engine) == before
    assert not [t for t in engine.pipeline._tasks if t.get_name() == "trm-sre-retention"]  # no loop at all
    assert swept_metric(engine) == {}


async def test_a_sweep_deletes_in_chunks(make_engine, sink: CaptureSink, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    engine = await make_engine([policy()], sink=sink.url, clock=clock, retention_chunk=2)
    pods = [f"pod-{i}" for i in range(5)]
    await engine.ingest(payload(*(alert_dict(p) for p in pods)))
    await engine.settle()
    await engine.ingest(payload(*(alert_dict(p, status="resolved") for p in pods)))
    await engine.settle()
    assert rows(engine)["incidents"] == 5 and rows(engine)["cooldowns"] == 5

    chunks: list[dict[str, int]] = []
    cooldown_chunks: list[int] = []
    sweep_incidents = engine.store.sweep_finished_incidents
    sweep_cooldowns = engine.store.sweep_expired_cooldowns

    def spy_incidents(cutoff: float, limit: int) -> dict[str, int]:
        chunks.append(sweep_incidents(cutoff, limit))
        return chunks[-1]

    def spy_cooldowns(cutoff: float, limit: int) -> int:
        cooldown_chunks.append(sweep_cooldowns(cutoff, limit))
        return cooldown_chunks[-1]

    monkeypatch.setattr(engine.store, "sweep_finished_incidents", spy_incidents)
    monkeypatch.setattr(engine.store, "sweep_expired_cooldowns", spy_cooldowns)
    clock.advance(31 * DAY)
    swept = await engine.pipeline.sweep_retention()

    # One transaction per chunk of 2 incidents (each with its 2 alerts, decision and trigger): 2 + 2 + 1.
    assert [c.get("incidents", 0) for c in chunks] == [2, 2, 1]
    assert chunks[0] == {"incidents": 2, "alerts": 4, "decisions": 2, "outbox": 2}
    assert cooldown_chunks == [2, 2, 1]
    assert swept == {"incidents": 5, "alerts": 10, "decisions": 5, "outbox": 5, "cooldowns": 5}
    assert swept_metric(engine) == swept
    assert set(rows(engine).values()) == {0}


async def test_the_store_deletes_at_most_one_chunk_per_call(make_engine, sink: CaptureSink) -> None:
    clock = FakeClock()
    engine = await make_engine([], sink=sink.url, clock=clock)  # no policy: unmatched incidents
    await engine.ingest(payload(*(alert_dict(f"pod-{i}") for i in range(7))))
    await engine.settle()
    assert engine.sql("SELECT DISTINCT state FROM incidents") == [("unmatched",)]

    cutoff = clock.now + 1
    assert engine.store.sweep_finished_incidents(cutoff, 3) == {"incidents": 3, "alerts": 3}
    assert engine.store.sweep_finished_incidents(cutoff, 3) == {"incidents": 3, "alerts": 3}
    assert engine.store.sweep_finished_incidents(cutoff, 3) == {"incidents": 1, "alerts": 1}
    assert engine.store.sweep_finished_incidents(cutoff, 3) == {}


async def test_cooldowns_are_kept_until_they_ended_longer_ago_than_the_retention(
    make_engine, sink: CaptureSink
) -> None:
    clock = FakeClock()
    week = {"cooldownSeconds": 7 * 86_400}
    engine = await make_engine(
        [policy("short", alert_names=("Short",)), policy("long", alert_names=("Long",), actions=week)],
        sink=sink.url,
        clock=clock,
    )
    await engine.ingest(payload(alert_dict("a", alertname="Short"), alert_dict("b", alertname="Long")))
    await engine.settle()
    assert rows(engine)["cooldowns"] == 2

    clock.advance(32 * DAY)  # the short one ended 32 days ago, the week-long one 25 days ago
    swept = await engine.pipeline.sweep_retention()

    assert swept["cooldowns"] == 1
    assert swept["incidents"] == 2  # decided, never resolved, silent for 32 days: finished too
    assert engine.sql("SELECT policy FROM cooldowns") == [("shop/long",)]


async def test_a_resolved_resend_of_a_swept_incident_triggers_nothing(make_engine, sink: CaptureSink) -> None:
    clock = FakeClock()
    engine = await make_engine([policy()], sink=sink.url, clock=clock)
    await fire_and_resolve(engine, "cart-1")
    clock.advance(31 * DAY)
    assert (await engine.pipeline.sweep_retention())["incidents"] == 1

    result = await engine.ingest(payload(alert_dict("cart-1", status="resolved")))
    await engine.settle()

    assert result.resolved == 1
    assert engine.sql("SELECT state, resolved_at IS NOT NULL FROM incidents") == [("unmatched", 1)]
    assert len(sink.accepted_of(LAMBDA_TRIGGER)) == 1  # the one from a month ago


async def test_the_loop_sweeps_shortly_after_start_and_logs_one_line(
    make_engine, sink: CaptureSink, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    engine = await make_engine(
        [policy()], sink=sink.url, clock=clock, retention_first_sweep_s=0.05, retention_interval_s=0.05
    )
    await fire_and_resolve(engine, "cart-1")
    clock.advance(31 * DAY)
    with caplog.at_level(logging.INFO, logger="controller.engine.retention"):
        assert await eventually(lambda: rows(engine)["incidents"] == 0)
        assert await eventually(
            lambda: any(r.message == "retention sweep deleted finished rows" for r in caplog.records)
        )
    lines = [r for r in caplog.records if r.message == "retention sweep deleted finished rows"]
    assert len(lines) == 1  # later sweeps found nothing and said nothing
    assert lines[0].rows == {"incidents": 1, "alerts": 2, "decisions": 1, "outbox": 1, "cooldowns": 1}
    assert lines[0].retention_days == 30


async def test_an_unmatched_alert_resent_for_ever_keeps_one_row_and_old_superseded_rows_are_swept(
    make_engine, sink: CaptureSink
) -> None:
    # Issue #13.7: a Watchdog no policy matches, re-sent every few minutes for months.
    clock = FakeClock()
    engine = await make_engine([policy()], sink=sink.url, clock=clock)
    watchdog = payload(alert_dict("prometheus-0", alertname="Watchdog"))
    for _ in range(20):
        await engine.ingest(watchdog)
        await engine.settle()
        clock.advance(300)
    assert rows(engine)["incidents"] == 1 and rows(engine)["alerts"] == 1  # refreshed in place
    # A store written before that fix holds a row per re-send; the sweep removes the superseded old ones.
    with engine.store.transaction() as tx:
        for _ in range(5):
            tx.insert_alert(watchdog[0], clock() - 40 * DAY, decided=True)
        tx.insert_alert(watchdog[0], clock(), decided=True)  # the newest: kept
    assert rows(engine)["alerts"] == 7
    swept = await engine.pipeline.sweep_retention()
    assert swept == {"alerts": 5}  # the old superseded rows; the recent ones wait for their own retention
    assert rows(engine)["alerts"] == 2 and rows(engine)["incidents"] == 1
    assert sink.requests == []


async def test_a_judged_outcome_goes_with_the_retention_and_an_open_one_stays(make_engine, sink: CaptureSink) -> None:
    clock = FakeClock()
    engine = await make_engine([policy()], sink=sink.url, clock=clock)
    await fire_and_resolve(engine, "cart-1")  # resolved: verified once the recurrence window has passed
    await engine.ingest(payload(alert_dict("cart-2")))  # still firing: ineffective once its window ends
    await engine.settle()
    clock.advance(3_600)
    assert await engine.pipeline.outcomes.evaluate() == 2
    await engine.ingest(payload(alert_dict("cart-3")))  # triggered late: its outcome is still open
    await engine.settle()
    states = dict(engine.sql("SELECT target, state FROM outcomes"))
    assert sorted(states.values()) == ["ineffective", "pending", "verified"], states

    clock.advance(31 * DAY)
    swept = await engine.pipeline.sweep_retention()

    assert swept.get("outcomes") == 2
    assert [r[0] for r in engine.sql("SELECT state FROM outcomes")] == ["pending"]
    assert engine.metric("agent_sre_store_rows_swept_total", table="outcomes") == 2
