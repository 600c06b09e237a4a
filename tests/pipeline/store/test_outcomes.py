"""Trigger outcomes and circuit breakers, on both store backends, through a running engine with a fake clock.

Each test drives the engine the way the edge does (webhook payloads, lambda
responses) and then runs one evaluation pass (`outcomes.evaluate()`); the
outcome is judged from timestamps the fake clock sets, so nothing here waits
for a window to pass.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from controller.engine.store import StoreBackend
from controller.schemas.decision import LAMBDA_TRIGGER, REMEDIATION_ESCALATED, decision_id
from tests.pipeline.engine.builders import Engine, FakeClock, alert_dict, build_engine, payload, policy
from tests.pipeline.sink import CaptureSink

WINDOW = {"windowSeconds": 60, "recurrenceSeconds": 120}
POD_A = "cart-7f9c6d5b8-x2k4q"
POD_B = "cart-7f9c6d5b8-zz9wd"


@pytest.fixture
def sink() -> Any:
    with CaptureSink() as capture:
        yield capture


@pytest.fixture
async def engines(open_store: Callable[..., StoreBackend], tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    built: list[Engine] = []

    async def make(policies: list[Any], clock: FakeClock, sink: CaptureSink) -> Engine:
        store = open_store()
        engine = build_engine(tmp_path / "state", policies, sink=sink.url, clock=clock, store=store)
        # One pass at a time, by the test: the loop's own passes would only repeat them.
        engine.pipeline.outcomes._interval_s = 3600.0
        built.append(engine)
        await engine.pipeline.start()
        return engine

    yield make
    for engine in reversed(built):
        await engine.pipeline.stop(drain_timeout_s=0)


def _policy(**actions: Any) -> Any:
    return policy(actions={"verify": WINDOW, "cooldownSeconds": 0, **actions})


def _fire(pod: str, starts_at: str) -> list[Any]:
    return payload(alert_dict(pod, starts_at=starts_at))


def _resolve(pod: str, starts_at: str) -> list[Any]:
    return payload(alert_dict(pod, starts_at=starts_at, status="resolved"))


def _verification(engine: Engine, event: Any) -> dict[str, Any]:
    doc = engine.pipeline.get_decision(decision_id(event.incident_key, "shop/restart"))
    assert doc is not None
    return doc["verification"]


async def _fire_and_settle(engine: Engine, events: list[Any]) -> None:
    await engine.ingest(events)
    await engine.settle()


async def test_resolved_and_quiet_is_verified_exactly_once(engines, sink: CaptureSink) -> None:
    clock = FakeClock()
    engine = await engines([_policy()], clock, sink)
    fire = _fire(POD_A, "2026-05-01T10:00:00Z")
    await _fire_and_settle(engine, fire)
    assert [r.ce_type for r in sink.requests] == [LAMBDA_TRIGGER]
    assert _verification(engine, fire[0])["state"] == "pending"
    assert _verification(engine, fire[0])["target"] == "shop/deployment/cart"

    clock.advance(10)
    await engine.ingest(_resolve(POD_A, "2026-05-01T10:00:00Z"))
    assert await engine.pipeline.outcomes.evaluate() == 0
    assert _verification(engine, fire[0])["state"] == "resolved"

    clock.advance(121)
    assert await engine.pipeline.outcomes.evaluate() == 1
    assert await engine.pipeline.outcomes.evaluate() == 0  # exactly one outcome
    v = _verification(engine, fire[0])
    assert v["state"] == "verified" and v["resolvedAt"] and v["finishedAt"]
    assert (
        engine.metric(
            "agent_sre_remediation_outcomes_total", policy="shop/restart", function="pod-restart", outcome="verified"
        )
        == 1
    )
    status = engine.recorder.snapshot("shop/restart")["outcomes"]["pod-restart"]
    assert (status["verified"], status["successRate"], status["circuit"]) == (1, "1.00", "closed")
    reasons = [e.reason for e in engine.recorder.drain_events("shop/restart")]
    assert "Triggered" in reasons
    assert not [r for r in reasons if r.startswith("Remediation")]  # no outcome Event for a verified one


async def test_never_resolved_is_ineffective_after_the_window(engines, sink: CaptureSink) -> None:
    clock = FakeClock()
    engine = await engines([_policy()], clock, sink)
    fire = _fire(POD_A, "2026-05-01T10:00:00Z")
    await _fire_and_settle(engine, fire)
    clock.advance(59)
    assert await engine.pipeline.outcomes.evaluate() == 0
    clock.advance(2)
    assert await engine.pipeline.outcomes.evaluate() == 1
    assert _verification(engine, fire[0])["state"] == "ineffective"
    reasons = [e.reason for e in engine.recorder.drain_events("shop/restart")]
    assert "RemediationIneffective" in reasons


async def test_refire_on_a_new_pod_of_the_same_deployment_recurred(engines, sink: CaptureSink) -> None:
    clock = FakeClock()
    engine = await engines([_policy()], clock, sink)
    first = _fire(POD_A, "2026-05-01T10:00:00Z")
    await _fire_and_settle(engine, first)
    clock.advance(10)
    await engine.ingest(_resolve(POD_A, "2026-05-01T10:00:00Z"))
    clock.advance(30)
    await _fire_and_settle(engine, _fire(POD_B, "2026-05-01T10:05:00Z"))
    assert await engine.pipeline.outcomes.evaluate() == 1
    v = _verification(engine, first[0])
    assert v["state"] == "recurred"
    assert v["evidence"]["recurredIncident"].endswith("2026-05-01T10:05:00.000000Z")


async def test_a_lambda_error_response_is_failed(engines, sink: CaptureSink) -> None:
    clock = FakeClock()
    engine = await engines([_policy()], clock, sink)
    fire = _fire(POD_A, "2026-05-01T10:00:00Z")
    await _fire_and_settle(engine, fire)
    did = decision_id(fire[0].incident_key, "shop/restart")
    assert await engine.pipeline.record_lambda_response(did, False, {"error": "forbidden"})
    assert await engine.pipeline.outcomes.evaluate() == 1
    assert _verification(engine, fire[0])["state"] == "failed"


async def test_two_bad_outcomes_open_the_circuit_which_survives_a_restart(
    engines, sink: CaptureSink, open_store: Callable[..., StoreBackend]
) -> None:
    clock = FakeClock()
    restart = _policy(circuitBreaker={"failures": 2, "windowSeconds": 3600, "cooldownSeconds": 600})
    engine = await engines([restart], clock, sink)
    for n, pod in enumerate(("api-1", "api-2")):
        await _fire_and_settle(engine, _fire(pod, f"2026-05-01T1{n}:00:00Z"))
        clock.advance(61)
        assert await engine.pipeline.outcomes.evaluate() == 1
    circuit = engine.recorder.snapshot("shop/restart")["outcomes"]["pod-restart"]
    assert (circuit["ineffective"], circuit["circuit"], circuit.get("successRate")) == (2, "open", "0.00")
    assert [c["type"] for c in engine.recorder.conditions("shop/restart")] == ["FunctionPaused"]
    assert engine.recorder.conditions("shop/restart")[0]["status"] == "True"
    assert "CircuitOpened" in [e.reason for e in engine.recorder.drain_events("shop/restart")]
    await engine.pipeline.stop(drain_timeout_s=0)

    # A new process on the same store: the circuit is still open; the third alert escalates, no trigger.
    again = await engines([restart], clock, sink)
    before = len(sink.requests)
    third = _fire("api-3", "2026-05-01T12:00:00Z")
    await _fire_and_settle(again, third)
    sent = [r.ce_type for r in sink.requests[before:]]
    assert sent == [REMEDIATION_ESCALATED]
    doc = again.pipeline.get_decision(decision_id(third[0].incident_key, "shop/restart"))
    assert doc is not None and doc["state"] == "escalated"
    assert "circuit breaker open for pod-restart under policy shop/restart" in doc["reason"]
    assert doc["verification"] is None

    # After the cooldown: half-open, the next proposal needs an approval.
    clock.advance(601)
    fourth = _fire("api-4", "2026-05-01T13:00:00Z")
    await _fire_and_settle(again, fourth)
    doc = again.pipeline.get_decision(decision_id(fourth[0].incident_key, "shop/restart"))
    assert doc is not None and doc["state"] == "approval_pending"

    # A reset by hand closes it, once per annotation value.
    assert again.pipeline.outcomes.reset_circuit("shop/restart", "pod-restart", "pod-restart")
    assert not again.pipeline.outcomes.reset_circuit("shop/restart", "pod-restart", "pod-restart")
    fifth = _fire("api-5", "2026-05-01T14:00:00Z")
    await _fire_and_settle(again, fifth)
    doc = again.pipeline.get_decision(decision_id(fifth[0].incident_key, "shop/restart"))
    assert doc is not None and doc["state"] == "triggered"


async def test_verified_resets_the_count_and_superseded_changes_nothing(engines, sink: CaptureSink) -> None:
    clock = FakeClock()
    restart = _policy(circuitBreaker={"failures": 2, "windowSeconds": 3600, "cooldownSeconds": 600})
    engine = await engines([restart], clock, sink)

    async def ineffective(pod: str, starts: str) -> None:
        await _fire_and_settle(engine, _fire(pod, starts))
        clock.advance(61)
        assert await engine.pipeline.outcomes.evaluate() == 1

    await ineffective("api-1", "2026-05-01T10:00:00Z")
    await _fire_and_settle(engine, _fire("web-1", "2026-05-01T11:00:00Z"))
    clock.advance(5)
    await engine.ingest(_resolve("web-1", "2026-05-01T11:00:00Z"))
    clock.advance(121)
    assert await engine.pipeline.outcomes.evaluate() == 1  # verified: the count starts over
    await ineffective("api-2", "2026-05-01T12:00:00Z")
    status = engine.recorder.snapshot("shop/restart")["outcomes"]["pod-restart"]
    assert (status["verified"], status["ineffective"], status["circuit"]) == (1, 2, "closed")

    # A policy change before the outcome is known: superseded, not a failure; the circuit stays closed.
    await _fire_and_settle(engine, _fire("api-3", "2026-05-01T13:00:00Z"))
    engine.index.upsert(restart.model_copy(update={"generation": 2}))
    clock.advance(61)
    assert await engine.pipeline.outcomes.evaluate() == 1
    status = engine.recorder.snapshot("shop/restart")["outcomes"]["pod-restart"]
    assert (status["superseded"], status["ineffective"], status["circuit"]) == (1, 2, "closed")
    assert status["successRate"] == "0.33"


async def test_a_dead_lettered_trigger_is_failed(engines, sink: CaptureSink) -> None:
    clock = FakeClock()
    engine = await engines([_policy()], clock, sink)
    sink.answer(400)  # the sink refuses it: not retryable, dead-lettered at once
    fire = _fire(POD_A, "2026-05-01T10:00:00Z")
    await _fire_and_settle(engine, fire)
    assert await engine.pipeline.outcomes.evaluate() == 1
    v = _verification(engine, fire[0])
    assert (v["state"], v["evidence"]["signal"]) == ("failed", "the trigger was dead-lettered")


async def test_two_processes_on_one_store_judge_each_trigger_once(engines, sink: CaptureSink) -> None:
    clock = FakeClock()
    first = await engines([_policy()], clock, sink)
    second = await engines([_policy()], clock, sink)  # a second replica (PostgreSQL) or process (SQLite file)
    fire = _fire(POD_A, "2026-05-01T10:00:00Z")
    await _fire_and_settle(first, fire)
    clock.advance(61)
    judged = [await second.pipeline.outcomes.evaluate(), await first.pipeline.outcomes.evaluate()]
    assert judged == [1, 0]
    assert _verification(first, fire[0])["state"] == "ineffective"
    total = sum(
        e.metric("agent_sre_remediation_outcomes_total", policy="shop/restart", function="pod-restart", outcome=o)
        for e in (first, second)
        for o in ("verified", "recurred", "ineffective", "failed", "unknown", "superseded")
    )
    assert total == 1
