"""The store conformance suite: every test runs on SQLite and on PostgreSQL (`backend`), through the one interface.

What the engine relies on: once per incident, idempotent outbox inserts, claims handed out
once their lease ends, guards (cooldown, budget), approvals, responses, history, retention,
rollback of a failed transaction, and the engine end to end on each backend.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from controller.engine.delivery import escalation_entry, trigger_entry
from controller.engine.store import (
    ApprovalRow,
    DecisionRecord,
    OutboxEntry,
    StoreBackend,
    StoreError,
    as_inserted,
)
from controller.schemas.alerts import AlertEvent
from controller.schemas.decision import APPROVAL_REQUESTED, LAMBDA_TRIGGER, Decision, decision_id
from tests.pipeline.engine.builders import FakeClock, alert_dict, build_engine, eventually, payload, policy, trigger_id
from tests.pipeline.sink import CaptureSink
from tests.pipeline.store.conftest import LEASE_S

NOW = 1_800_000_000.0


def decision_for(event: AlertEvent, pod: str = "cart-1", policy_key: str = "shop/restart") -> Decision:
    return Decision(
        id=decision_id(event.incident_key, policy_key),
        incident_key=event.incident_key,
        fingerprint=event.fingerprint,
        alertname=event.alert.alertname,
        policy=policy_key,
        outcome="trigger",
        stage="rules",
        function="pod-restart",
        parameters={"name": pod, "namespace": "shop", "type": "pod"},
    )


def commit(
    store: StoreBackend,
    event: AlertEvent,
    alert_id: int,
    now: float = NOW,
    *,
    on_resolved: str = "ignore",
    state: str = "triggered",
    budgeted: bool = True,
) -> tuple[Decision, OutboxEntry] | None:
    """What a worker commits: decision, trigger, cooldown; None if the incident was decided already."""
    decision = decision_for(event)
    entry = trigger_entry(decision, event, "/trm-sre", None)
    with store.transaction(durable=False) as tx:
        if tx.decision_id_for_incident(event.incident_key) is not None:
            tx.mark_alert_decided(alert_id)
            return None
        tx.insert_decision(DecisionRecord(decision, 1, "active", on_resolved, state, "", budgeted), now)
        assert tx.insert_outbox(entry, now)
        tx.set_cooldown(decision.target, now + 300, decision.id, decision.policy)
        tx.mark_alert_decided(alert_id)
        tx.set_incident_state(event.incident_key, "decided")
    return decision, entry


def test_record_new_duplicate_and_resolved(store: StoreBackend) -> None:
    firing, again = payload(alert_dict("a"))[0], payload(alert_dict("a"))[0]
    other = payload(alert_dict("b"))[0]
    records = store.record_alerts([firing, other, again], NOW)
    assert [r.kind for r in records] == ["new", "new", "duplicate"]
    assert records[0].alert_id is not None and records[1].alert_id is not None and records[2].alert_id is None
    assert [r.event for r in records] == [
        firing,
        other,
        again,
    ]  # the caller's order, whatever order rows were locked in
    assert [r.kind for r in store.record_alerts([firing], NOW + 1)] == ["duplicate"]
    with store.reading() as tx:
        incident = tx.incident(firing.incident_key)
    assert incident is not None and incident.duplicates == 2 and incident.last_seen == NOW + 1
    resolved = payload(alert_dict("a", status="resolved"))[0]
    assert [r.kind for r in store.record_alerts([resolved], NOW + 2)] == ["resolved"]
    assert [r.kind for r in store.record_alerts([resolved], NOW + 3)] == ["duplicate"]
    # Resolved before it was ever seen firing: recorded, nothing to decide.
    never = payload(alert_dict("c", status="resolved"))[0]
    assert [r.kind for r in store.record_alerts([never], NOW)] == ["resolved"]
    with store.reading() as tx:
        row = tx.incident(never.incident_key)
    assert row is not None and row.state == "unmatched" and row.resolved_at == NOW


def test_unmatched_incident_is_re_evaluated_once_per_resend(store: StoreBackend) -> None:
    event = payload(alert_dict("a"))[0]
    (record,) = store.record_alerts([event], NOW)
    assert record.alert_id is not None
    store.mark_unmatched(record.alert_id, event.incident_key)
    first, second = store.record_alerts([event, event], NOW + 1)
    assert (first.kind, second.kind) == ("reevaluate", "duplicate")
    assert first.alert_id is not None
    assert commit(store, event, first.alert_id) is not None
    assert [r.kind for r in store.record_alerts([event], NOW + 2)] == ["duplicate"]  # decided: never again


def alert_rows(store: StoreBackend) -> list[tuple[int, str, int, float]]:
    """Every alert row as (id, status, decided, received_at), oldest first (no parameters: either dialect)."""
    with store.reading() as tx:
        rows = tx._all("SELECT id, status, decided, received_at FROM alerts ORDER BY id")
    return [(int(r["id"]), r["status"], int(r["decided"]), float(r["received_at"])) for r in rows]


def test_an_unmatched_alert_re_sent_3000_times_keeps_one_alert_row(open_store: Callable[..., StoreBackend]) -> None:
    # Issue #13.7: a Watchdog no policy matches, re-sent for months, is re-evaluated on one row refreshed in place.
    clock = FakeClock(NOW)
    store = open_store(clock=clock)
    event = payload(alert_dict("prometheus-0", alertname="Watchdog"))[0]
    (record,) = store.record_alerts([event], NOW)
    assert record.alert_id is not None
    alert_id = record.alert_id
    store.mark_unmatched(alert_id, event.incident_key)
    for i in range(1, 3001):
        (again,) = store.record_alerts([event], NOW + i)
        assert (again.kind, again.alert_id) == ("reevaluate", alert_id)
        store.mark_unmatched(alert_id, event.incident_key)
    assert alert_rows(store) == [(alert_id, "firing", 1, NOW + 3000)]
    with store.reading() as tx:
        incident = tx.incident(event.incident_key)
    assert incident is not None and incident.state == "unmatched"
    # The refreshed row is undecided again, and handed out again once its recorder's lease ends.
    resent = payload(alert_dict("prometheus-0", alertname="Watchdog", annotations={"summary": "still here"}))[0]
    (again,) = store.record_alerts([resent], NOW + 3001)
    assert (again.kind, again.alert_id) == ("reevaluate", alert_id)
    assert alert_rows(store) == [(alert_id, "firing", 0, NOW + 3001)]
    clock.advance(3001 + LEASE_S + 1)
    assert [(p.alert_id, p.event) for p in store.undecided_alerts()] == [(alert_id, resent)]
    with store.reading() as tx:
        assert tx.firing_event(event.incident_key) == resent


def test_a_decision_is_committed_once_per_incident(store: StoreBackend) -> None:
    event = payload(alert_dict("a"))[0]
    (record,) = store.record_alerts([event], NOW)
    assert record.alert_id is not None
    committed = commit(store, event, record.alert_id)
    assert committed is not None
    decision, entry = committed
    assert commit(store, event, record.alert_id) is None
    with store.reading() as tx:
        assert tx.decision_id_for_incident(event.incident_key) == decision.id
        row = tx.decision(decision.id)
        assert tx.firing_event(event.incident_key) == event
    assert row is not None and row.decision == decision and row.state == "triggered" and row.budgeted
    assert store.decision(decision.id) == row
    # The same event id again (a re-commit after a crash) enqueues nothing.
    with store.transaction() as tx:
        assert not tx.insert_outbox(entry, NOW + 5)
    assert store.outbox_depth() == 1


def test_undecided_alerts_are_handed_out_once_their_lease_ends(
    open_store: Callable[..., StoreBackend],
) -> None:
    clock = FakeClock(NOW)
    store = open_store(clock=clock)
    events = payload(alert_dict("a"), alert_dict("b"), alert_dict("c"))
    records = store.record_alerts(events, NOW)
    assert records[0].alert_id is not None
    store.mark_unmatched(records[0].alert_id, events[0].incident_key)
    clock.advance(LEASE_S + 1)  # the recorder died: its lease has run out
    # One batch's alerts arrived together: oldest first says nothing about their order among themselves.
    pending = sorted(store.undecided_alerts(), key=lambda p: p.event.incident_key)
    expected = sorted(zip(events[1:], records[1:], strict=True), key=lambda er: er[0].incident_key)
    assert [(p.event, p.alert_id) for p in pending] == [(e, r.alert_id) for e, r in expected]
    assert records[1].alert_id is not None
    commit(store, events[1], records[1].alert_id)
    clock.advance(2 * LEASE_S + 2)
    assert [p.event for p in store.undecided_alerts()] == events[2:]


def test_outbox_delivery_states(store: StoreBackend) -> None:
    events = payload(alert_dict("a"), alert_dict("b"), alert_dict("c"))
    entries = []
    for event, record in zip(events, store.record_alerts(events, NOW), strict=True):
        assert record.alert_id is not None
        committed = commit(store, event, record.alert_id, NOW + len(entries))
        assert committed is not None
        entries.append(committed[1])
    later = NOW + LEASE_S + 60  # past any claim the committing replica holds for its immediate delivery
    assert [e.event_id for e in store.due_outbox(later)] == [e.event_id for e in entries]
    assert store.outbox_depth() == 3
    first, second, third = entries
    store.mark_delivered(first.event_id, 2, 202, later)
    store.mark_attempt_failed(second.event_id, 1, 503, "sink down", later + 1000)
    assert store.mark_dead(third.event_id, 1, 400, "bad request", later)
    assert not store.mark_dead(third.event_id, 1, 400, "bad request", later)
    delivered, failed, dead = (store.outbox_entry(e.event_id) for e in entries)
    assert delivered is not None and delivered.state == "delivered" and delivered.attempts == 2
    assert delivered.last_status == 202 and delivered.delivered_at == later
    assert delivered.attributes == first.attributes and delivered.data == first.data
    assert failed is not None and failed.state == "pending" and failed.last_error == "sink down"
    assert dead is not None and dead.state == "dead" and dead.last_status == 400
    assert store.outbox_depth() == 1
    assert store.due_outbox(later + 999) == []  # not due before its next attempt
    assert [e.event_id for e in store.due_outbox(later + 1000)] == [second.event_id]
    assert store.outbox_entry("nope") is None


def test_deliveries_that_finish_together_are_marked_in_one_call(store: StoreBackend) -> None:
    events = payload(alert_dict("a"), alert_dict("b"), alert_dict("c"))
    entries = []
    for event, record in zip(events, store.record_alerts(events, NOW), strict=True):
        assert record.alert_id is not None
        committed = commit(store, event, record.alert_id, NOW)
        assert committed is not None
        entries.append(committed[1])
    first, second, third = entries
    # What the engine sends without reading it back is what a read gives right after the commit.
    fresh = store.outbox_entry(first.event_id)
    sent = as_inserted(first, NOW)
    assert fresh is not None and sent == dataclasses.replace(fresh, next_attempt_at=0.0)
    assert json.dumps([sent.attributes, sent.data]) == json.dumps([fresh.attributes, fresh.data])  # same bytes
    store.mark_delivered_many([(first.event_id, 1, 202, NOW + 1), (third.event_id, 3, 200, NOW + 2)])
    marked = {e.event_id: store.outbox_entry(e.event_id) for e in entries}
    assert [(m.state, m.attempts, m.last_status, m.delivered_at) for m in marked.values() if m is not None] == [
        ("delivered", 1, 202, NOW + 1),
        ("pending", 0, None, None),
        ("delivered", 3, 200, NOW + 2),
    ]
    assert store.outbox_depth() == 1
    assert [e.event_id for e in store.due_outbox(NOW + LEASE_S + 60)] == [second.event_id]


def test_cooldown_keeps_the_later_end_and_budget_counts_the_window(store: StoreBackend) -> None:
    with store.transaction() as tx:
        assert tx.cooldown_until("pod-restart:shop/cart-1") is None
        tx.set_cooldown("pod-restart:shop/cart-1", NOW + 600, "d1", "shop/restart")
        tx.set_cooldown("pod-restart:shop/cart-1", NOW + 300, "d2", "shop/restart")
    with store.transaction() as tx:
        assert tx.cooldown_until("pod-restart:shop/cart-1") == NOW + 600
    events = payload(alert_dict("a"), alert_dict("b"), alert_dict("c"))
    for i, (event, record) in enumerate(zip(events, store.record_alerts(events, NOW), strict=True)):
        assert record.alert_id is not None
        commit(store, event, record.alert_id, NOW + 100 * i, budgeted=i != 2)
    with store.transaction() as tx:
        assert tx.budget_used("shop/restart", NOW) == 2
        assert tx.budget_used("shop/restart", NOW + 50) == 1
        assert tx.budget_used("shop/other", NOW) == 0
    assert store.sweep_expired_cooldowns(NOW + 601, 10) == 1


def test_budget_used_can_exclude_one_decision(store: StoreBackend) -> None:
    # An approval re-checking the storm breaker does not count its own decision against the budget.
    events = payload(alert_dict("a"), alert_dict("b"), alert_dict("c"))
    decisions = []
    for i, (event, record) in enumerate(zip(events, store.record_alerts(events, NOW), strict=True)):
        assert record.alert_id is not None
        committed = commit(store, event, record.alert_id, NOW + i, budgeted=i != 2)
        assert committed is not None
        decisions.append(committed[0])
    for open_tx in (store.transaction, store.reading):
        with open_tx() as tx:
            assert tx.budget_used("shop/restart", NOW) == 2
            assert tx.budget_used("shop/restart", NOW, excluding=None) == 2
            assert tx.budget_used("shop/restart", NOW, excluding=decisions[0].id) == 1
            assert tx.budget_used("shop/restart", NOW + 1, excluding=decisions[0].id) == 1  # outside the window
            assert tx.budget_used("shop/restart", NOW + 1, excluding=decisions[1].id) == 0
            assert tx.budget_used("shop/restart", NOW, excluding=decisions[2].id) == 2  # not budgeted anyway
            assert tx.budget_used("shop/restart", NOW, excluding="no-such-decision") == 2
            # Counted no further than the cap (the storm breaker only asks whether the limit is reached).
            assert tx.budget_used("shop/restart", NOW, cap=1) == 1
            assert tx.budget_used("shop/restart", NOW, cap=5) == 2
            assert tx.budget_used("shop/restart", NOW, excluding=decisions[0].id, cap=1) == 1
            assert tx.budget_used("shop/restart", NOW, excluding=decisions[0].id, cap=5) == 1
            assert tx.budget_used("shop/restart", NOW + 1, excluding=decisions[1].id, cap=1) == 0


def test_pending_approval_rows_and_approval_by_id(store: StoreBackend) -> None:
    events = payload(alert_dict("a"), alert_dict("b"), alert_dict("c"))
    approvals = []
    for i, (event, record) in enumerate(zip(events, store.record_alerts(events, NOW), strict=True)):
        assert record.alert_id is not None
        committed = commit(store, event, record.alert_id, state="approval_pending")
        assert committed is not None
        approvals.append(
            ApprovalRow(
                id=f"tok{i}",
                decision_id=committed[0].id,
                incident_key=event.incident_key,
                policy="shop/restart",
                on_resolved="ignore",
                cooldown_seconds=60,
                sink=None,
                state="pending",
                requested_at=NOW + 30 - 10 * i,  # the last one requested first
                expires_at=NOW + 100,
                resolved_at=None,
                actor=None,
            )
        )
    with store.transaction() as tx:
        assert tx.pending_approval_rows() == []
        for approval in approvals:
            tx.insert_approval(approval)
        tx.set_approval_state("tok1", "rejected", NOW + 40, "bob")
    with store.reading() as tx:
        assert tx.pending_approval_rows() == [approvals[2], approvals[0]]  # oldest request first, pending only
    assert store.approval("tok0") == approvals[0]
    rejected = store.approval("tok1")
    assert rejected is not None and (rejected.state, rejected.actor, rejected.resolved_at) == (
        "rejected",
        "bob",
        NOW + 40,
    )
    assert store.approval("nope") is None


def test_approvals_and_resolution_cancel_what_is_pending(store: StoreBackend) -> None:
    event = payload(alert_dict("a"))[0]
    (record,) = store.record_alerts([event], NOW)
    assert record.alert_id is not None
    committed = commit(store, event, record.alert_id, on_resolved="cancelPending", state="approval_pending")
    assert committed is not None
    decision, trigger = committed
    approval = ApprovalRow(
        id="tok1",
        decision_id=decision.id,
        incident_key=event.incident_key,
        policy="shop/restart",
        on_resolved="cancelPending",
        cooldown_seconds=60,
        sink=None,
        state="pending",
        requested_at=NOW,
        expires_at=NOW + 100,
        resolved_at=None,
        actor=None,
    )
    with store.transaction() as tx:
        tx.insert_approval(approval)
        tx.insert_outbox(escalation_entry(decision, event, "/trm-sre", None, ["x"]), NOW)
    assert store.pending_approvals() == 1
    with store.reading() as tx:
        assert tx.approval("tok1") == approval
        assert tx.expired_approvals(NOW + 99) == []
        assert tx.expired_approvals(NOW + 100) == [approval]
        assert tx.pending_approvals_for_incident(event.incident_key) == [approval]
    (resolved,) = store.record_alerts(payload(alert_dict("a", status="resolved")), NOW + 10)
    assert (resolved.kind, resolved.cancelled_approvals, resolved.cancelled_events) == ("resolved", 1, 1)
    assert store.pending_approvals() == 0
    row = store.decision(decision.id)
    assert row is not None and row.state == "approval_cancelled"
    cancelled = store.outbox_entry(trigger.event_id)
    assert cancelled is not None and cancelled.state == "cancelled"
    assert store.outbox_depth() == 1  # the escalation is not a trigger: still pending
    with store.transaction() as tx:
        tx.set_approval_state("tok1", "approved", NOW + 20, "alice")
        answered = tx.approval("tok1")
    assert answered is not None and answered.state == "approved" and answered.actor == "alice"


def test_responses_and_history(store: StoreBackend) -> None:
    event = payload(alert_dict("a"))[0]
    (record,) = store.record_alerts([event], NOW)
    assert record.alert_id is not None
    committed = commit(store, event, record.alert_id)
    assert committed is not None
    decision, entry = committed
    assert store.record_response(decision.id, True, {"restarted": 1}, NOW + 5) == decision
    assert store.record_response("unknown", True, {}, NOW + 5) is None
    history = store.decision_history(decision.id)
    assert history is not None
    assert history["decision"]["id"] == decision.id and history["decision"]["result"] == "success"
    assert history["incident"]["incident_key"] == event.incident_key
    assert [a["status"] for a in history["alerts"]] == ["firing"]
    assert [o["event_id"] for o in history["outbox"]] == [entry.event_id]
    assert history["approval"] is None
    assert [(r["success"], r["data"]) for r in history["responses"]] == [(1, '{"restarted": 1}')]
    assert store.decision_history("unknown") is None


def test_retention_sweeps_only_what_is_finished_and_old(store: StoreBackend) -> None:
    events = payload(alert_dict("a"), alert_dict("b"), alert_dict("c"))
    records = store.record_alerts(events, NOW)
    entries = []
    for event, record in zip(events[:2], records[:2], strict=True):
        assert record.alert_id is not None
        committed = commit(store, event, record.alert_id)
        assert committed is not None
        entries.append(committed[1])
    store.mark_delivered(entries[0].event_id, 1, 202, NOW + 1)  # b's trigger stays pending; c stays undecided
    cutoff = NOW + 10 * 86_400
    assert store.sweep_finished_incidents(cutoff, 100) == {
        "incidents": 1,
        "alerts": 1,
        "decisions": 1,
        "outbox": 1,
    }
    assert store.sweep_finished_incidents(cutoff, 100) == {}
    with store.reading() as tx:
        assert tx.incident(events[0].incident_key) is None
        assert tx.incident(events[1].incident_key) is not None
        assert tx.incident(events[2].incident_key) is not None
    # Swept, it is forgotten: sent again it is a new incident.
    assert [r.kind for r in store.record_alerts(events[:1], cutoff)] == ["new"]


def test_retention_sweeps_superseded_firing_rows_of_an_unmatched_incident(store: StoreBackend) -> None:
    # Issue #13.7: a store written before re-sends refreshed the row in place holds one row per re-send of an
    # unmatched incident that keeps firing; the incident stays recent, the superseded old rows go.
    event = payload(alert_dict("prometheus-0", alertname="Watchdog"))[0]
    (record,) = store.record_alerts([event], NOW)
    assert record.alert_id is not None
    store.mark_unmatched(record.alert_id, event.incident_key)
    with store.transaction() as tx:
        for _ in range(3):
            tx.insert_alert(event, NOW, decided=True)  # the old re-sends' rows
    day = 86_400
    (resent,) = store.record_alerts([event], NOW + 40 * day)  # refreshes the newest row in place
    assert resent.kind == "reevaluate" and resent.alert_id is not None
    store.mark_unmatched(resent.alert_id, event.incident_key)
    with store.transaction() as tx:
        tx.insert_alert(event, NOW + 35 * day, decided=True)  # superseded, but newer than the cutoff
    refreshed = (resent.alert_id, "firing", 1, NOW + 40 * day)
    assert len(alert_rows(store)) == 5 and refreshed in alert_rows(store)
    cutoff = NOW + 30 * day
    assert store.sweep_finished_incidents(cutoff, 2) == {"alerts": 2}  # chunked by the limit
    assert store.sweep_finished_incidents(cutoff, 100) == {"alerts": 1}
    assert store.sweep_finished_incidents(cutoff, 100) == {}
    rows = alert_rows(store)
    assert len(rows) == 2 and refreshed in rows  # recent rows wait for their own retention
    with store.reading() as tx:
        incident = tx.incident(event.incident_key)
    assert incident is not None and incident.state == "unmatched"
    # A re-send refreshes the newest row (the NOW + 35 days one); while it is re-evaluated nothing goes.
    (again,) = store.record_alerts([event], NOW + 41 * day)
    assert again.alert_id is not None and again.alert_id != resent.alert_id
    assert store.sweep_finished_incidents(NOW + 41 * day, 100) == {}
    store.mark_unmatched(again.alert_id, event.incident_key)
    assert store.sweep_finished_incidents(NOW + 41 * day, 100) == {"alerts": 1}  # the NOW + 40 days row
    assert alert_rows(store) == [(again.alert_id, "firing", 1, NOW + 41 * day)]


def test_a_nul_in_a_label_value_is_recorded_and_decided(store: StoreBackend) -> None:
    # PostgreSQL's text cannot hold NUL: a label value with one must not fail the batch (a 503 retried for ever).
    d = alert_dict("cart-\x00-1", alertname="Crash\x00Loop")
    event, other = payload(d, alert_dict("b"))
    records = store.record_alerts([event, other], NOW)
    assert [r.kind for r in records] == ["new", "new"]
    assert [r.kind for r in store.record_alerts([event], NOW + 1)] == ["duplicate"]
    with store.reading() as tx:
        assert tx.firing_event(event.incident_key) == event  # the payload keeps the value exactly
    target = "pod-restart:shop/cart-\x00-1"
    with store.transaction() as tx:
        tx.set_cooldown(target, NOW + 600, "d1", "shop/restart")
    with store.transaction() as tx:
        assert tx.cooldown_until(target) == NOW + 600
        assert tx.cooldown_until("pod-restart:shop/cart-\x00-2") is None


def test_a_failed_transaction_leaves_nothing_behind(store: StoreBackend) -> None:
    event = payload(alert_dict("a"))[0]
    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.insert_incident(event, NOW, "open", None)
        raise RuntimeError("boom")
    with store.reading() as tx:
        assert tx.incident(event.incident_key) is None
    with pytest.raises(StoreError), store.transaction() as tx:  # a constraint the database enforces
        tx.insert_incident(event, NOW, "open", None)
        tx.insert_incident(event, NOW, "open", None)
    with store.reading() as tx:
        assert tx.incident(event.incident_key) is None
    store.close()
    with pytest.raises(StoreError):
        store.record_alerts([event], NOW)
    assert not store.is_open


def test_singleton_lock(store: StoreBackend) -> None:
    lock = store.singleton("retention")
    assert lock is not None and lock.held()
    lock.release()


async def test_engine_decides_and_delivers_once_on_each_backend(
    open_store: Callable[..., StoreBackend], tmp_path: Path
) -> None:
    with CaptureSink() as sink:
        engine = build_engine(tmp_path / "state", [policy()], sink=sink.url, store=open_store())  # type: ignore[arg-type]
        await engine.pipeline.start()
        try:
            events = payload(alert_dict("a"), alert_dict("b"))
            result = await engine.ingest(events)
            assert result.new_incidents == 2
            assert (await engine.ingest(events)).duplicates == 2
            await engine.settle()
            assert await eventually(lambda: len(sink.accepted) == 2)
            assert sorted(sink.accepted_ids(LAMBDA_TRIGGER)) == sorted(trigger_id(e) for e in events)
            assert engine.store.outbox_depth() == 0
        finally:
            await engine.pipeline.stop(drain_timeout_s=0)


async def test_engine_approval_rechecks_the_storm_breaker_without_its_own_decision_on_each_backend(
    open_store: Callable[..., StoreBackend], tmp_path: Path
) -> None:
    # The approved decision was budgeted when it was made: the re-check at approval must not count it
    # against a budget of one (`budget_used(..., excluding=...)`); the expiry loop reads pending_approval_rows.
    actions = {"requireApproval": True, "approvalTimeoutSeconds": 600, "maxTriggersPerWindow": 1, "windowSeconds": 600}
    with CaptureSink() as sink:
        engine = build_engine(
            tmp_path / "state",
            [policy(actions=actions)],
            sink=sink.url,
            store=open_store(),  # type: ignore[arg-type]
            approval_check_interval_s=0.05,
        )
        await engine.pipeline.start()
        try:
            await engine.ingest(payload(alert_dict()))
            await engine.settle()
            assert await eventually(lambda: len(sink.accepted_of(APPROVAL_REQUESTED)) == 1)
            approval_id = sink.accepted_of(APPROVAL_REQUESTED)[0].data()["approval_id"]
            pending = engine.store.approval(approval_id)
            assert pending is not None and pending.state == "pending"
            state, why = await engine.pipeline.answer_approval(approval_id, True, "alice")
            assert state == "approved", why
            await engine.settle()
            assert await eventually(lambda: len(sink.accepted_of(LAMBDA_TRIGGER)) == 1)
            approved = engine.store.approval(approval_id)
            assert approved is not None and (approved.state, approved.actor) == ("approved", "alice")
        finally:
            await engine.pipeline.stop(drain_timeout_s=0)
