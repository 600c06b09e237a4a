"""The sink misbehaves: every event is retried as specified under its one id, and dead letters are recorded.

tests/pipeline/engine/test_engine_delivery.py covers a sink that is down,
answers 500/502, a retryable 4xx, 400, resets before answering, or answers
after the timeout. This covers what it does not:

- a sink that takes the event in full and then resets the connection (the
  consumer has it; we cannot know): retried under the *same* CloudEvent id,
  so the consumer can de-duplicate, and never under a second id;
- a sink that is slow but within the timeout: one request, delivered;
- a sink that never answers (accepts the connection and stays silent), and
  one that sends its status and then drips its body forever: bounded by the
  sink timeout, retried, and delivered once the sink behaves;
- every non-retryable 4xx (not just 400): dead-lettered at once, recorded on
  the decision, counted, and never replayed;
- 5xx for longer than one delivery sequence: left pending (not dead), and
  replayed under the same id once the sink recovers;
- a batch of incidents through a sink that mixes all of the above: each
  incident's requests all carry one id, and distinct incidents never share one.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from controller.schemas.decision import decision_id
from tests.hardening.support import RawSink
from tests.pipeline.engine.builders import (
    Engine,
    Engines,
    alert_dict,
    eventually,
    payload,
    policy,
    trigger_id,
)
from tests.pipeline.sink import Answer, CaptureSink

MakeEngine = Callable[..., Awaitable[Engine]]


@pytest.fixture
async def make_engine(tmp_path: Path) -> AsyncIterator[MakeEngine]:
    engines = Engines()

    async def make(sink_url: str, **settings: Any) -> Engine:
        settings.setdefault("sink_timeout_s", 0.5)
        return await engines.make(
            tmp_path / f"state{len(engines.built)}",
            [policy(actions={"maxTriggersPerWindow": 1000})],
            sink=sink_url,
            **settings,
        )

    yield make
    await engines.close()


def _state(engine: Engine, event: Any) -> str | None:
    """The delivery state of the incident's trigger; None while it is not decided yet."""
    doc = engine.pipeline.get_decision(decision_id(event.incident_key, "shop/restart"))
    return doc["deliveries"][0]["state"] if doc and doc["deliveries"] else None


def _delivery(engine: Engine, event: Any) -> dict[str, Any]:
    doc = engine.pipeline.get_decision(decision_id(event.incident_key, "shop/restart"))
    assert doc is not None
    (delivery,) = doc["deliveries"]
    return dict(delivery)


async def test_a_sink_that_accepts_then_resets_gets_the_same_id_again(make_engine: MakeEngine) -> None:
    with RawSink("reset") as sink:
        engine = await make_engine(sink.url)
        events = payload(*(alert_dict(f"cart-{i}") for i in range(3)))
        await engine.ingest(events)
        assert await eventually(lambda: len(sink.ids("reset")) >= 6)  # each taken, then lost, at least twice
        sink.mode = "ok"
        assert await eventually(lambda: {_state(engine, e) for e in events} == {"delivered"}, 60)
        await engine.settle()
    expected = {trigger_id(e) for e in events}
    assert set(sink.ids()) == expected  # every copy the consumer took carries its incident's one id
    assert sorted(sink.ids("ok")) == sorted(expected)  # and exactly one was acknowledged per incident
    assert engine.metric("agent_sre_triggers_total", result="sent") == 3
    assert engine.metric("agent_sre_triggers_total", result="dead_lettered") == 0


async def test_a_slow_sink_within_the_timeout_gets_one_request(make_engine: MakeEngine, sink: CaptureSink) -> None:
    sink.answer(202, delay_s=0.3)
    engine = await make_engine(sink.url, sink_timeout_s=5.0)
    events = payload(alert_dict("cart-1"), alert_dict("cart-2"))
    await engine.ingest(events)
    await engine.settle()
    assert sorted(r.ce_id for r in sink.requests) == sorted(trigger_id(e) for e in events)
    assert [_delivery(engine, e)["attempts"] for e in events] == [1, 1]
    assert engine.metric("agent_sre_triggers_total", result="retried") == 0


async def test_a_sink_that_never_answers_is_timed_out_and_retried(make_engine: MakeEngine) -> None:
    with RawSink("hang") as sink:
        engine = await make_engine(sink.url, sink_timeout_s=0.3)
        events = payload(alert_dict())
        await engine.ingest(events)
        # The delivery does not hang with the sink: it gives up after the timeout and tries again.
        assert await eventually(lambda: len(sink.ids("hang")) >= 2, 60), sink.taken
        sink.mode = "ok"
        assert await eventually(lambda: _state(engine, events[0]) == "delivered", 60)
    assert set(sink.ids()) == {trigger_id(events[0])}
    assert sink.ids("ok") == [trigger_id(events[0])]


async def test_a_sink_that_drips_its_answer_body_cannot_hold_a_delivery(make_engine: MakeEngine) -> None:
    """The status line says 202; the body that trickles after it is never waited for."""
    with RawSink("drip") as sink:
        engine = await make_engine(sink.url, sink_timeout_s=0.3)
        events = payload(*(alert_dict(f"cart-{i}") for i in range(3)))
        await engine.ingest(events)
        assert await eventually(lambda: {_state(engine, e) for e in events} == {"delivered"}, 60), sink.taken
        await engine.settle()
    assert sorted(sink.ids("drip")) == sorted(trigger_id(e) for e in events)  # one request each


@pytest.mark.parametrize("status", [401, 403, 405, 410, 413, 415, 422, 451])
async def test_every_non_retryable_4xx_is_dead_lettered_at_once_and_recorded(
    make_engine: MakeEngine, sink: CaptureSink, status: int
) -> None:
    sink.answer(status)
    engine = await make_engine(sink.url)
    events = payload(alert_dict())
    await engine.ingest(events)
    await engine.settle()
    assert [r.status for r in sink.requests] == [status]
    delivery = _delivery(engine, events[0])
    assert delivery["state"] == "dead" and delivery["last_status"] == status
    assert engine.metric("agent_sre_triggers_total", result="dead_lettered") == 1
    assert engine.counters()["deadLetters"] == 1
    sink.answer(202)
    await engine.pipeline._outbox.replay_due()
    await engine.settle()
    assert len(sink.requests) == 1


async def test_5xx_beyond_one_delivery_sequence_stays_pending_then_replays_under_the_same_id(
    make_engine: MakeEngine, sink: CaptureSink
) -> None:
    sink.answer(503)
    engine = await make_engine(sink.url)
    events = payload(alert_dict())
    await engine.ingest(events)
    await engine.settle()  # the first sequence (3 attempts in these settings) ran out
    assert _delivery(engine, events[0])["state"] == "pending"
    assert engine.metric("agent_sre_triggers_total", result="dead_lettered") == 0
    assert await eventually(lambda: len(sink.requests) >= 5, 30)  # the replay loop keeps trying
    sink.answer(202)
    assert await eventually(lambda: _state(engine, events[0]) == "delivered", 30)
    await engine.settle()
    assert {r.ce_id for r in sink.requests} == {trigger_id(events[0])}
    assert sink.accepted_ids() == [trigger_id(events[0])]


async def test_a_mixed_misbehaving_sink_never_sees_an_incident_under_two_ids(
    make_engine: MakeEngine, sink: CaptureSink
) -> None:
    misbehaviour = [500, Answer(reset=True), 429, Answer(202, delay_s=1.0), 502, Answer(reset=True), 404, 503] * 4
    sink.script(*misbehaviour)
    engine = await make_engine(sink.url, sink_timeout_s=0.5)
    events = payload(*(alert_dict(f"cart-{i}") for i in range(12)))
    await engine.ingest(events)
    assert await eventually(lambda: {_state(engine, e) for e in events} == {"delivered"}, 90)
    await engine.settle()
    expected = {trigger_id(e) for e in events}
    assert await sink.wait_for_async(lambda s: len(s.requests) >= len(misbehaviour), 30)
    assert {r.ce_id for r in sink.requests} == expected  # every request carries one of the 12 ids
    bodies: dict[str, set[bytes]] = {}
    for request in sink.requests:
        bodies.setdefault(request.ce_id or "", set()).add(request.body)
    assert all(len(b) == 1 for b in bodies.values())  # a retry is the same event, byte for byte
    assert set(sink.accepted_ids()) == expected


@pytest.mark.parametrize(
    "retry_after",
    [
        "Wed, 21 Oct 2015 07:28:00",
        "Wed, 21 Oct 2015 07:28:00 GMT",
        "soon",
        "-5",
        "99999999999999999999999",
        "1e9",
        "",
        "\u00e9",
    ],
)
async def test_any_retry_after_from_the_sink_is_survived(
    make_engine: MakeEngine, sink: CaptureSink, retry_after: str, caplog: pytest.LogCaptureFixture
) -> None:
    sink.script(Answer(503, headers={"Retry-After": retry_after}))
    engine = await make_engine(sink.url, backoff_max_s=0.05)
    events = payload(alert_dict())
    await engine.ingest(events)
    assert await eventually(lambda: _state(engine, events[0]) == "delivered", 30)
    await engine.settle()
    assert [r.status for r in sink.requests] == [503, 202]
    assert {r.ce_id for r in sink.requests} == {trigger_id(events[0])}
    assert _delivery(engine, events[0])["attempts"] == 2  # retried within the sequence, not by the replay loop
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
