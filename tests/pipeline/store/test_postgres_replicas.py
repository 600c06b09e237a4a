"""What several replicas on one PostgreSQL database need beyond the conformance suite.

Two (or more) `PostgresStore`s on one database stand for replicas: concurrent migrations,
insert-or-ignore recording, leased claims of undecided alerts and due outbox entries,
singleton locks, the cooldown and storm breaker across replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest

from controller.engine.replicas import Singleton
from controller.engine.store import StoreError
from controller.engine.store.postgres import PostgresStore
from controller.engine.store.postgres_migrations import MIGRATIONS, SCHEMA_VERSION, migrate
from controller.schemas.decision import LAMBDA_TRIGGER
from tests.pipeline.engine.builders import FakeClock, alert_dict, build_engine, eventually, payload, policy
from tests.pipeline.sink import CaptureSink
from tests.pipeline.store.test_store_conformance import NOW, commit
from tests.support.postgres import start_postgres

LEASE_S = 30.0


@pytest.fixture
def replicas(postgres_url: str, tmp_path: Path) -> Iterator[list[PostgresStore]]:
    clock = FakeClock(NOW)
    stores = [PostgresStore.open(postgres_url, tmp_path / f"r{i}", lease_s=LEASE_S, clock=clock) for i in range(3)]
    try:
        yield stores
    finally:
        for store in stores:
            store.close()


def test_replicas_starting_together_migrate_once(postgres_url: str) -> None:
    with ThreadPoolExecutor(6) as pool:
        versions = list(pool.map(lambda _: migrate(postgres_url), range(6)))
    assert versions == [SCHEMA_VERSION] * 6
    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute("SELECT version FROM trm_sre_schema ORDER BY version").fetchall()
    assert [r[0] for r in rows] == [v for v, _ in MIGRATIONS]


def test_a_database_newer_than_the_build_is_refused(postgres_url: str, tmp_path: Path) -> None:
    migrate(postgres_url)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("INSERT INTO trm_sre_schema (version, applied_at) VALUES (%s, 0)", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="newer than this build"):
        PostgresStore.open(postgres_url, tmp_path)


def test_an_unreachable_database_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot open the PostgreSQL store"):
        PostgresStore.open("postgresql://nobody@127.0.0.1:1/none", tmp_path, connect_timeout_s=1)


def test_the_same_alerts_recorded_by_three_replicas_at_once_are_new_once(replicas: list[PostgresStore]) -> None:
    events = payload(*(alert_dict(f"pod-{i}") for i in range(50)))
    barrier = threading.Barrier(len(replicas) * 2)

    def record(i: int) -> list[str]:
        barrier.wait()
        # The webhook's alerts in another order every other time: rows are still locked in one order (no deadlock).
        batch = list(reversed(events)) if i % 2 else events
        return [r.kind for r in replicas[i % len(replicas)].record_alerts(batch, NOW)]

    with ThreadPoolExecutor(len(replicas) * 2) as pool:
        kinds = list(pool.map(record, range(len(replicas) * 2)))
    assert sum(k.count("new") for k in kinds) == len(events)
    assert sum(k.count("duplicate") for k in kinds) == len(events) * (len(replicas) * 2 - 1)


def test_undecided_alerts_move_to_another_replica_only_after_the_lease(replicas: list[PostgresStore]) -> None:
    first, second, _ = replicas
    clock = first._clock
    assert isinstance(clock, FakeClock)
    events = payload(alert_dict("a"), alert_dict("b"))
    records = first.record_alerts(events, NOW)
    assert second.undecided_alerts() == []  # leased to the replica that recorded them
    clock.advance(LEASE_S + 1)  # that replica died
    claimed = second.undecided_alerts()
    assert sorted(p.alert_id for p in claimed) == sorted(r.alert_id for r in records if r.alert_id)
    assert first.undecided_alerts() == []  # now the second replica's, for a lease
    assert replicas[2].undecided_alerts() == []


def test_due_outbox_entries_are_claimed_by_one_replica_at_a_time(replicas: list[PostgresStore]) -> None:
    events = payload(*(alert_dict(f"pod-{i}") for i in range(20)))
    for event, record in zip(events, replicas[0].record_alerts(events, NOW), strict=True):
        assert record.alert_id is not None
        commit(replicas[0], event, record.alert_id)
    later = NOW + LEASE_S + 1
    assert replicas[1].due_outbox(later, limit=0) == []
    with ThreadPoolExecutor(len(replicas)) as pool:
        claims = list(pool.map(lambda s: s.due_outbox(later, limit=8), replicas))
    ids = [e.event_id for claim in claims for e in claim]
    assert len(ids) == len(set(ids)) == 20  # every entry claimed once, by one replica
    assert all(len(c) <= 8 for c in claims)
    assert all(s.due_outbox(later) == [] for s in replicas)  # all leased now
    assert len(replicas[2].due_outbox(later + LEASE_S + 1)) == 20  # the claimer died: due again after the lease


def test_a_singleton_lock_has_one_holder_and_passes_on_when_released(replicas: list[PostgresStore]) -> None:
    first = replicas[0].singleton("retention")
    assert first is not None and first.held()
    assert replicas[1].singleton("retention") is None
    other = replicas[1].singleton("approvals")  # another name is another lock
    assert other is not None
    first.release()
    assert not first.held()
    second = replicas[2].singleton("retention")
    assert second is not None
    second.release()
    other.release()


async def test_cooldown_and_storm_breaker_hold_across_replicas(postgres_url: str, tmp_path: Path) -> None:
    """Two engines on one database; incidents on one target arriving at both at once give one trigger."""
    actions = {"cooldownSeconds": 300, "maxTriggersPerWindow": 3, "windowSeconds": 600}
    with CaptureSink() as sink:
        engines = [
            build_engine(
                tmp_path / f"r{i}",
                [policy(actions=actions)],
                sink=sink.url,
                store=PostgresStore.open(postgres_url, tmp_path / f"r{i}"),  # type: ignore[arg-type]
            )
            for i in range(2)
        ]
        for engine in engines:
            await engine.pipeline.start()
        try:
            # Cooldown: one target, five incidents (five startsAt), spread over both replicas at once.
            same_target = [payload(alert_dict("cart-1", starts_at=f"2026-05-01T10:0{i}:00Z")) for i in range(5)]
            await asyncio.gather(*(engines[i % 2].ingest(events) for i, events in enumerate(same_target)))
            for engine in engines:
                await engine.settle()
            # Storm breaker: ten more targets of the same policy; its budget (3 per window) has 2 left.
            others = [payload(alert_dict(f"web-{i}")) for i in range(10)]
            await asyncio.gather(*(engines[i % 2].ingest(events) for i, events in enumerate(others)))
            for engine in engines:
                await engine.settle()
            decided = sum(
                engine.metric("agent_sre_decisions_total", stage="rules", outcome="trigger") for engine in engines
            )
            assert decided == 15
            assert await eventually(lambda: len(sink.accepted_of(LAMBDA_TRIGGER)) == 3)
            for engine in engines:
                await engine.settle()
            triggers = [r.data()["parameters"]["name"] for r in sink.accepted_of(LAMBDA_TRIGGER)]
            assert triggers.count("cart-1") == 1
            assert len(triggers) == 3
            actions_taken = {
                action: sum(e.metric("agent_sre_policy_actions_total", action=action) for e in engines)
                for action in ("trigger", "cooldown", "storm_breaker")
            }
            assert actions_taken == {"trigger": 3, "cooldown": 4, "storm_breaker": 8}
        finally:
            for engine in engines:
                await engine.pipeline.stop(drain_timeout_s=0)
                engine.store.close()


async def test_a_singleton_loop_runs_on_one_replica_and_moves_when_it_stops(replicas: list[PostgresStore]) -> None:
    runs: list[str] = []

    def loop_of(name: str) -> Callable[[], Coroutine[Any, Any, None]]:
        async def loop() -> None:
            while True:
                runs.append(name)
                await asyncio.sleep(0.01)

        return loop

    singletons = [Singleton(store, "retention", check_interval_s=0.05) for store in replicas[:2]]
    first = asyncio.create_task(singletons[0].run(loop_of("first")))
    assert await eventually(lambda: singletons[0].holding)
    second = asyncio.create_task(singletons[1].run(loop_of("second")))
    await asyncio.sleep(0.3)
    assert set(runs) == {"first"} and not singletons[1].holding
    first.cancel()  # the holder stops (or dies): its lock's connection closes
    with contextlib.suppress(asyncio.CancelledError):
        await first
    assert not singletons[0].holding
    assert await eventually(lambda: singletons[1].holding and "second" in runs)
    second.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await second


def test_a_database_outage_is_a_store_error_and_the_pool_reconnects_after_it(tmp_path: Path) -> None:
    server = start_postgres()  # its own server: this test stops it
    try:
        store = PostgresStore.open(server.create_database(), tmp_path, pool_size=2)
        try:
            assert [r.kind for r in store.record_alerts(payload(alert_dict("a")), NOW)] == ["new"]
            server.pause()
            with pytest.raises(StoreError):
                store.record_alerts(payload(alert_dict("b")), NOW)
            with pytest.raises(StoreError):
                store.singleton("retention")
            server.resume()
            # The pool drops the dead connections when it hands them out (a failover looks the same).
            assert [r.kind for r in store.record_alerts(payload(alert_dict("a"), alert_dict("b")), NOW)] == [
                "duplicate",
                "new",
            ]
        finally:
            store.close()
    finally:
        server.stop()
