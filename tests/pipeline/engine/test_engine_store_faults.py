"""A store that cannot write: nothing is acknowledged, and everything works again once the fault clears."""

from __future__ import annotations

import sqlite3

import pytest

from controller.engine.pipeline import Overloaded, StoreUnavailable
from controller.engine.store import DB_FILENAME, Store
from tests.pipeline.engine.builders import alert_dict, payload, policy, trigger_id
from tests.pipeline.sink import CaptureSink


def _fill_disk(store: Store) -> None:
    """Make the database full: SQLite's own limit, the same error (SQLITE_FULL) as a full volume."""
    pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
    store._conn.execute(f"PRAGMA max_page_count = {pages}")


def _free_disk(store: Store) -> None:
    store._conn.execute("PRAGMA max_page_count = 1073741823")


def _make_read_only(store: Store, read_only: bool = True) -> None:
    """Refuse every write (SQLITE_READONLY), as a read-only volume would."""
    store._conn.execute(f"PRAGMA query_only = {'ON' if read_only else 'OFF'}")


async def test_a_full_disk_acknowledges_nothing_and_recovers(make_engine, sink: CaptureSink) -> None:
    engine = await make_engine([policy(actions={"maxTriggersPerWindow": 100})], sink=sink.url)
    events = payload(*(alert_dict(f"cart-{i}") for i in range(50)))
    _fill_disk(engine.store)

    with pytest.raises(StoreUnavailable, match="full"):
        await engine.ingest(events)
    assert engine.sql("SELECT COUNT(*) FROM alerts") == [(0,)]
    assert engine.sql("SELECT COUNT(*) FROM incidents") == [(0,)]
    await engine.settle()
    assert sink.requests == []

    _free_disk(engine.store)
    result = await engine.ingest(events)  # Alertmanager's retry
    await engine.settle()
    assert result.new_incidents == 50
    assert sorted(sink.accepted_ids()) == sorted(trigger_id(e) for e in events)


async def test_a_database_locked_by_another_process_acknowledges_nothing(
    make_engine, sink: CaptureSink, tmp_path
) -> None:
    state = tmp_path / "state"
    engine = await make_engine([policy()], sink=sink.url, state_dir=state, store=Store.open(state, busy_timeout_s=0.2))
    other = sqlite3.connect(state / DB_FILENAME, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StoreUnavailable, match="locked"):
            await engine.ingest(payload(alert_dict()))
        assert other.execute("SELECT COUNT(*) FROM alerts").fetchone() == (0,)
        other.execute("ROLLBACK")
    finally:
        other.close()

    events = payload(alert_dict())
    assert (await engine.ingest(events)).new_incidents == 1
    await engine.settle()
    assert sink.accepted_ids() == [trigger_id(events[0])]


async def test_a_decision_whose_commit_fails_is_retried_until_the_store_is_back(make_engine, sink: CaptureSink) -> None:
    engine = await make_engine([policy()], sink=sink.url, start=False)
    events = payload(alert_dict())
    await engine.ingest(events)
    _make_read_only(engine.store)
    await engine.pipeline.start()
    assert not await engine.pipeline.wait_idle(0.3)  # the commit failed and waits for its retry
    assert sink.requests == []
    with pytest.raises(StoreUnavailable, match="readonly"):
        await engine.ingest(payload(alert_dict("cart-2")))

    _make_read_only(engine.store, False)
    await engine.settle()
    assert sink.accepted_ids() == [trigger_id(events[0])]


async def test_a_closed_store_is_unavailable_and_not_ready(make_engine, sink: CaptureSink) -> None:
    engine = await make_engine([policy()], sink=sink.url)
    engine.store.close()

    with pytest.raises(StoreUnavailable):
        await engine.ingest(payload(alert_dict()))
    with pytest.raises(StoreUnavailable):
        engine.pipeline.get_decision("x")
    ready, reasons = engine.pipeline.readiness()
    assert not ready
    assert "the store is closed" in reasons


async def test_a_full_work_queue_is_overloaded_before_anything_is_recorded(make_engine, sink: CaptureSink) -> None:
    engine = await make_engine([policy()], sink=sink.url, start=False, queue_size=3)
    await engine.ingest(payload(alert_dict("cart-1"), alert_dict("cart-2")))

    with pytest.raises(Overloaded) as refused:
        await engine.ingest(payload(alert_dict("cart-3"), alert_dict("cart-4")))
    assert refused.value.retry_after > 0
    assert engine.sql("SELECT COUNT(*) FROM alerts") == [(2,)]

    await engine.pipeline.start()
    await engine.settle()
    assert (await engine.ingest(payload(alert_dict("cart-3"), alert_dict("cart-4")))).new_incidents == 2
    await engine.settle()
    assert len(sink.accepted_ids()) == 4


async def test_a_stopped_engine_refuses_new_alerts(make_engine, sink: CaptureSink) -> None:
    engine = await make_engine([policy()], sink=sink.url)
    await engine.pipeline.stop(drain_timeout_s=1)

    with pytest.raises(Overloaded, match="shutting down"):
        await engine.ingest(payload(alert_dict()))
    assert engine.sql("SELECT COUNT(*) FROM alerts") == [(0,)]
