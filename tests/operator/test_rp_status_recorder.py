"""PolicyStatusRecorder: what the pipeline records is what the operator writes, safely across threads."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from controller.engine.policy_stats import COUNTER_NAMES, PolicyStatusRecorder
from controller.schemas.decision import Decision

KEY = "shop/pods"


def decision(n: int = 1, **fields: object) -> Decision:
    base: dict[str, object] = {
        "id": f"d{n}",
        "incident_key": f"fp{n}@t",
        "fingerprint": f"fp{n}",
        "alertname": "KubePodCrashLooping",
        "policy": KEY,
        "outcome": "trigger",
        "function": "pod-restart",
        "parameters": {"name": "cart-1", "namespace": "shop"},
        "stage": "trm",
        "confidence": 0.91,
        "created_at": datetime(2026, 3, 1, 12, 0, n, tzinfo=UTC),
    }
    base.update(fields)
    return Decision(**base)  # type: ignore[arg-type]


def test_unknown_policy_has_zero_counters_and_no_last_decision() -> None:
    assert PolicyStatusRecorder().snapshot(KEY) == {"counters": dict.fromkeys(COUNTER_NAMES, 0)}


def test_each_kind_bumps_its_counter_and_becomes_the_last_decision() -> None:
    recorder = PolicyStatusRecorder()
    for kind in ("matched", "trigger", "escalation", "dry_run", "dead_letter", "approval_requested"):
        recorder.record(KEY, decision(), kind)  # type: ignore[arg-type]
    snap = recorder.snapshot(KEY)
    assert set(snap["counters"].values()) == {1}
    assert snap["lastDecision"] == {
        "time": "2026-03-01T12:00:01Z",
        "alertname": "KubePodCrashLooping",
        "function": "pod-restart",
        "stage": "trm",
        "confidence": 0.91,
        "outcome": "approval_requested",
        "decisionId": "d1",
    }


def test_an_escalation_has_no_function_in_its_last_decision() -> None:
    recorder = PolicyStatusRecorder()
    recorder.record(KEY, decision(2, outcome="escalate", function=None, stage=None, confidence=None), "escalation")
    assert recorder.snapshot(KEY)["lastDecision"] == {
        "time": "2026-03-01T12:00:02Z",
        "alertname": "KubePodCrashLooping",
        "outcome": "escalation",
        "decisionId": "d2",
    }


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown record kind"):
        PolicyStatusRecorder().record(KEY, decision(), "launched")  # type: ignore[arg-type]


def test_events_are_drained_once_oldest_first_and_matched_is_not_an_event() -> None:
    recorder = PolicyStatusRecorder()
    recorder.record(KEY, decision(1), "matched")
    recorder.record(KEY, decision(1), "trigger")
    recorder.record(KEY, decision(2), "dead_letter", "sink answered 500 five times")
    events = recorder.drain_events(KEY)
    assert [(e.type, e.reason) for e in events] == [("Normal", "Triggered"), ("Warning", "DeadLettered")]
    assert "pod-restart(name=cart-1, namespace=shop) by trm at confidence 0.91" in events[0].message
    assert events[1].message == "sink answered 500 five times"
    assert recorder.drain_events(KEY) == []


def test_a_storm_keeps_the_newest_events_and_says_how_many_were_dropped() -> None:
    recorder = PolicyStatusRecorder(max_pending_events=3)
    for n in range(10):
        recorder.record(KEY, decision(n), "trigger")
    events = recorder.drain_events(KEY)
    assert events[0].reason == "EventsDropped" and events[0].message.startswith("7 ")
    assert [e.message.rsplit(" ", 1)[-1] for e in events[1:]] == ["d7", "d8", "d9"]
    assert recorder.snapshot(KEY)["counters"]["triggers"] == 10  # counters are never dropped


def test_seed_adds_the_counters_already_in_status_once() -> None:
    recorder = PolicyStatusRecorder()
    recorder.record(KEY, decision(), "trigger")  # recorded before the operator saw the policy
    recorder.seed(KEY, {"triggers": 41, "escalations": 2, "bogus": 5, "deadLetters": -3}, {"decisionId": "old"})
    recorder.seed(KEY, {"triggers": 1000}, None)
    counters = recorder.snapshot(KEY)["counters"]
    assert (counters["triggers"], counters["escalations"], counters["deadLetters"]) == (42, 2, 0)
    assert recorder.snapshot(KEY)["lastDecision"]["decisionId"] == "d1"  # newer than what status held
    assert recorder.is_seeded(KEY)


def test_forget_starts_a_recreated_policy_from_zero() -> None:
    recorder = PolicyStatusRecorder()
    recorder.seed(KEY, {"triggers": 3}, None)
    recorder.forget(KEY)
    assert recorder.snapshot(KEY)["counters"]["triggers"] == 0 and not recorder.is_seeded(KEY)


def test_concurrent_records_from_many_threads_are_all_counted() -> None:
    recorder = PolicyStatusRecorder()
    start = threading.Barrier(8)

    def work() -> None:
        start.wait()
        for n in range(500):
            recorder.record(KEY, decision(n % 50), "matched")
            recorder.snapshot(KEY)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert recorder.snapshot(KEY)["counters"]["alertsMatched"] == 4000
