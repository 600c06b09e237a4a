"""Group commit: webhooks that arrive together share one durable transaction, with the same outcome as one each."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from controller.engine.pipeline import StoreUnavailable
from controller.engine.store import StoreError
from controller.schemas.decision import LAMBDA_TRIGGER
from tests.pipeline.engine.builders import alert_dict, payload, policy
from tests.pipeline.sink import CaptureSink


class CountingRecorder:
    """Wraps Store.record_alerts: counts transactions; the first one waits for `release`, so others pile up."""

    def __init__(self, store: Any) -> None:
        self.inner = store.record_alerts
        self.sizes: list[int] = []
        self.release = threading.Event()
        self.fail = False
        store.record_alerts = self

    def __call__(self, events: Any, now: float) -> Any:
        self.sizes.append(len(events))
        if len(self.sizes) == 1:
            assert self.release.wait(20), "the test never released the first commit"
        if self.fail:
            raise StoreError("disk I/O error")
        return self.inner(events, now)


async def _until(predicate: Any) -> None:
    for _ in range(2000):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition never held")


async def test_concurrent_webhooks_share_a_commit_and_each_gets_its_own_result(make_engine, sink: CaptureSink) -> None:
    engine = await make_engine([policy()], sink=sink.url)
    recorder = CountingRecorder(engine.store)
    first = asyncio.create_task(engine.ingest(payload(alert_dict("pod-0"))))
    await _until(lambda: len(recorder.sizes) == 1)
    # While the first commit runs: ten webhooks, one of them a re-send of another's alert.
    bodies = [payload(alert_dict(f"pod-{i}"), alert_dict(f"pod-{i}-b")) for i in range(1, 10)]
    bodies.append(payload(alert_dict("pod-3")))
    rest = [asyncio.create_task(engine.ingest(b)) for b in bodies]
    await asyncio.sleep(0.05)
    recorder.release.set()
    results = await asyncio.gather(first, *rest)
    await engine.settle()

    assert recorder.sizes == [1, 19]  # two transactions for eleven webhooks
    assert [r.accepted for r in results] == [1] + [2] * 9 + [1]
    assert [r.new_incidents for r in results] == [1] + [2] * 9 + [0]
    assert results[-1].duplicates == 1  # pod-3 was recorded by an earlier webhook of the same commit
    triggers = sink.accepted_of(LAMBDA_TRIGGER)
    assert len(triggers) == len({t.ce_id for t in triggers}) == 19


async def test_a_failed_group_commit_refuses_every_webhook_in_it_and_records_none(
    make_engine, sink: CaptureSink
) -> None:
    engine = await make_engine([policy()], sink=sink.url)
    recorder = CountingRecorder(engine.store)
    recorder.fail = True
    first = asyncio.create_task(engine.ingest(payload(alert_dict("pod-0"))))
    await _until(lambda: len(recorder.sizes) == 1)
    rest = [asyncio.create_task(engine.ingest(payload(alert_dict(f"pod-{i}")))) for i in range(1, 4)]
    await asyncio.sleep(0.05)
    recorder.release.set()
    outcomes = await asyncio.gather(first, *rest, return_exceptions=True)

    assert recorder.sizes == [1, 3]
    assert all(isinstance(o, StoreUnavailable) for o in outcomes), outcomes
    assert engine.sql("SELECT COUNT(*) FROM alerts") == [(0,)]
    recorder.fail = False
    assert (await engine.ingest(payload(alert_dict("pod-1")))).new_incidents == 1  # the store works again


@pytest.mark.parametrize("per_webhook", [600, 1500])
async def test_a_group_commit_is_bounded_but_never_splits_a_webhook(
    make_engine, sink: CaptureSink, per_webhook: int
) -> None:
    engine = await make_engine(
        [policy(actions={"dryRun": True})], sink=sink.url, queue_size=100_000, max_queue_wait_s=3600.0
    )
    recorder = CountingRecorder(engine.store)
    first = asyncio.create_task(engine.ingest(payload(alert_dict("pod-x"))))
    await _until(lambda: len(recorder.sizes) == 1)
    big = [
        asyncio.create_task(engine.ingest(payload(*(alert_dict(f"w{w}-{i}") for i in range(per_webhook)))))
        for w in range(3)
    ]
    await asyncio.sleep(0.05)
    recorder.release.set()
    await asyncio.gather(first, *big)

    assert recorder.sizes[0] == 1
    assert all(size % per_webhook == 0 and size <= max(2000, per_webhook) for size in recorder.sizes[1:])
    assert sum(recorder.sizes[1:]) == 3 * per_webhook
