"""Replicas on one PostgreSQL store in cluster mode: each indexes every policy, only the lock holder writes status."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from controller.decision.policy_index import PolicyIndex
from controller.engine.policy_stats import PolicyStatusRecorder
from controller.engine.replicas import Singleton
from controller.engine.store.postgres import PostgresStore
from controller.operator.handlers import PolicyHandlers
from controller.operator.status import PolicyStatusSync
from tests.operator.test_rp_checks import CATALOG, T0, FakeWriter, body, spec
from tests.pipeline.engine.builders import eventually, sample_decision


def replica(store: PostgresStore, writer: FakeWriter) -> PolicyHandlers:
    recorder = PolicyStatusRecorder()
    return PolicyHandlers(
        index=PolicyIndex(),
        recorder=recorder,
        catalog=CATALOG,
        # A long interval: the loop writes when a watch event asks, and at stop (the last flush).
        sync=PolicyStatusSync(recorder, writer, interval=3600),
        clock=lambda: T0,
        status_singleton=Singleton(store, "policy-status", check_interval_s=0.05),
    )


async def test_only_the_lock_holder_writes_status_and_another_takes_over(postgres_url: str, tmp_path: Path) -> None:
    stores = [PostgresStore.open(postgres_url, tmp_path / f"r{i}") for i in range(2)]
    writers = [FakeWriter(), FakeWriter()]
    first, second = (replica(store, writer) for store, writer in zip(stores, writers, strict=True))
    logger = logging.getLogger("test")
    try:
        b = body(spec())
        for handlers in (first, second):
            await handlers.on_policy_event(event={"type": "ADDED", "object": dict(b)}, body=b, logger=logger)
            assert handlers.index.get("ns/p") is not None  # every replica keeps its own index
        await first.start_status_sync(logger=logger)
        assert await eventually(lambda: len(writers[0].patches) == 1)
        await second.start_status_sync(logger=logger)
        await asyncio.sleep(0.3)
        assert writers[1].patches == [] and writers[1].events == []  # not the holder: writes nothing
        # A decision counted just before the holder stops reaches .status in its last flush.
        first.recorder.record("ns/p", sample_decision(), "matched")
        await first.stop_status_sync()
        assert len(writers[0].patches) == 2 and writers[0].patches[-1]["counters"]["alertsMatched"] == 1
        # Its lock went with it: the other replica writes now.
        assert await eventually(lambda: len(writers[1].patches) == 1)
        second.recorder.record("ns/p", sample_decision(), "matched")
        await second.stop_status_sync()
        assert len(writers[1].patches) == 2
    finally:
        for store in stores:
            store.close()
