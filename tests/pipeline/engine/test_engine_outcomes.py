"""A half-open circuit (SQLite): its one try needs an approval, and a verified outcome closes it.

(The store-level behaviour on both backends: tests/pipeline/store/test_outcomes.py.)
"""

from __future__ import annotations

from controller.schemas.decision import decision_id
from tests.pipeline.engine.builders import FakeClock, alert_dict, payload, policy
from tests.pipeline.sink import CaptureSink


async def test_a_half_open_circuit_asks_for_approval_and_a_verified_try_closes_it(
    make_engine, sink: CaptureSink
) -> None:
    clock = FakeClock()
    restart = policy(
        actions={
            "cooldownSeconds": 0,
            "verify": {"windowSeconds": 60, "recurrenceSeconds": 120},
            "circuitBreaker": {"failures": 1, "windowSeconds": 3600, "cooldownSeconds": 10},
        }
    )
    engine = await make_engine([restart], sink=sink.url, clock=clock)
    engine.pipeline.outcomes._interval_s = 3600.0
    await engine.ingest(payload(alert_dict("api-1", starts_at="2026-05-01T10:00:00Z")))
    await engine.settle()
    clock.advance(61)
    assert await engine.pipeline.outcomes.evaluate() == 1
    assert engine.recorder.snapshot("shop/restart")["outcomes"]["pod-restart"]["circuit"] == "open"

    clock.advance(11)  # half-open
    second = payload(alert_dict("web-1", starts_at="2026-05-01T11:00:00Z"))
    await engine.ingest(second)
    await engine.settle()
    with engine.store.reading() as tx:
        pending = tx.pending_approvals_for_incident(second[0].incident_key)
    assert len(pending) == 1
    assert await engine.pipeline.resolve_approval(pending[0].id, True, "alice") == "approved"
    await engine.settle()
    clock.advance(5)
    await engine.ingest(payload(alert_dict("web-1", starts_at="2026-05-01T11:00:00Z", status="resolved")))
    clock.advance(121)
    assert await engine.pipeline.outcomes.evaluate() == 1
    doc = engine.pipeline.get_decision(decision_id(second[0].incident_key, "shop/restart"))
    assert doc is not None and doc["verification"]["state"] == "verified"
    status = engine.recorder.snapshot("shop/restart")["outcomes"]["pod-restart"]
    assert (status["circuit"], status["verified"], status["ineffective"]) == ("closed", 1, 1)
    assert engine.recorder.conditions("shop/restart")[0]["status"] == "False"
    assert "CircuitClosed" in [e.reason for e in engine.recorder.drain_events("shop/restart")]
