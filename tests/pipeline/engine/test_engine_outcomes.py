"""A half-open circuit (SQLite): its one try needs an approval, and a verified outcome closes it.

(The store-level behaviour on both backends: tests/pipeline/store/test_outcomes.py.)
"""

from __future__ import annotations

import pytest

from controller.engine.outcomes import circuit_view, next_circuit, workload_target
from controller.engine.store.outcomes_sql import CircuitRow
from controller.schemas.decision import decision_id
from controller.schemas.policy import CircuitBreaker
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


@pytest.mark.parametrize(
    ("function", "parameters", "labels", "target"),
    [
        (
            "pod-restart",
            {"name": "cart-7f9c6d5b8-x2k4q", "namespace": "shop", "type": "pod"},
            {},
            "shop/deployment/cart",
        ),
        ("pod-restart", {"name": "web-api-5d8f7b9c4d-abcde", "namespace": "a"}, {}, "a/deployment/web-api"),
        ("pod-restart", {"name": "redis-0", "namespace": "shop", "type": "pod"}, {}, "shop/pod/redis-0"),
        ("pod-restart", {"name": "cart", "namespace": "shop", "type": "deployment"}, {}, "shop/deployment/cart"),
        ("pod-check-status", {"name": "cart-7f9c6d5b8-x2k4q", "namespace": "shop"}, {}, "shop/deployment/cart"),
        ("scale-deployment", {"name": "cart", "namespace": "shop", "replicas": "3"}, {}, "shop/deployment/cart"),
        ("check-pvc-status", {"name": "data", "namespace": "db"}, {}, "db/pvc/data"),
        ("flux-reconcile-helmrelease", {"name": "grafana", "namespace": "flux"}, {}, "flux/helmrelease/grafana"),
        (None, {}, {"namespace": "shop", "pod": "cart-7f9c6d5b8-x2k4q"}, "shop/deployment/cart"),
        (None, {}, {"namespace": "shop", "deployment": "cart", "pod": "x"}, "shop/deployment/cart"),
        (None, {}, {"namespace": "db", "statefulset": "pg"}, "db/statefulset/pg"),
        (None, {}, {"namespace": "db"}, "db/-/-"),
    ],
)
def test_the_target_is_the_workload_the_function_acted_on(
    function: str | None, parameters: dict[str, str], labels: dict[str, str], target: str
) -> None:
    assert workload_target(function, parameters, labels) == target


BREAKER = CircuitBreaker(failures=2, window_seconds=100, cooldown_seconds=50)


def _after(outcomes: list[tuple[str, float]]) -> CircuitRow | None:
    row: CircuitRow | None = None
    for outcome, at in outcomes:
        new, _ = next_circuit(row, "ns/p", "pod-restart", outcome, BREAKER, at)
        row = new or row
    return row


def test_consecutive_bad_outcomes_within_the_window_open_the_circuit() -> None:
    opened = _after([("ineffective", 0), ("recurred", 10)])
    assert opened is not None and opened.state == "open" and opened.opened_at == 10
    assert circuit_view(opened, BREAKER, 59).state == "open"
    assert circuit_view(opened, BREAKER, 60).state == "half-open"
    # Spread wider than the window: the count starts over.
    spread = _after([("failed", 0), ("failed", 101)])
    assert spread is not None and (spread.state, spread.failures) == ("closed", 1)
    # A verified one in between resets the count; unknown and superseded change nothing.
    mixed = _after([("failed", 0), ("verified", 1), ("unknown", 2), ("superseded", 3), ("failed", 4)])
    assert mixed is not None and (mixed.state, mixed.failures) == ("closed", 1)
    still = _after([("failed", 0), ("unknown", 1), ("failed", 2)])
    assert still is not None and still.state == "open"


def test_a_bad_half_open_try_opens_again_and_a_verified_one_closes() -> None:
    opened = _after([("failed", 0), ("failed", 1)])
    again, change = next_circuit(opened, "ns/p", "pod-restart", "ineffective", BREAKER, 60)
    assert again is not None and (again.state, again.opened_at, change) == ("open", 60, "opened")
    closed, change = next_circuit(again, "ns/p", "pod-restart", "verified", BREAKER, 120)
    assert closed is not None and (closed.state, closed.failures, change) == ("closed", 0, "closed")
    assert circuit_view(closed, BREAKER, 120).state == "closed"
