"""Admission by time: the engine refuses (503) once the waiting alerts are more work than it can do soon."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

import pytest

from controller.decision.chain import StageClients
from controller.decision.policy_index import PolicyIndex
from controller.engine.pipeline import Overloaded, Pipeline
from controller.engine.policy_stats import PolicyStatusRecorder
from controller.engine.store import Store
from controller.engine.work_queue import DrainRate
from controller.observability.metrics import Metrics
from runbooks import default_catalog
from tests.pipeline.engine.builders import FAST, alert_dict, eventually, payload, policy


class BlockedModel:
    """A TRM that answers only once released, so alerts pile up in the queue behind the one being decided."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def select(self, alert: dict[str, Any], *, max_steps: int | None = None) -> Any:
        self.calls += 1
        assert self.release.wait(30), "the test never released the model"
        return _Abstain()


@dataclasses.dataclass
class _Abstain:
    lambda_function: None = None
    parameters: dict[str, Any] = dataclasses.field(default_factory=dict)
    confidence: float = 0.99
    steps: int = 1
    text: str = '{"lambda_function": null}'


async def test_alerts_beyond_the_queue_wait_budget_are_refused_with_the_reason(tmp_path: Path) -> None:
    model = BlockedModel()
    store = Store.open(tmp_path / "state")
    index = PolicyIndex()
    index.upsert(policy(chain=[{"trm": {"minConfidence": 0.5, "timeoutMs": 60_000}}]))
    # One worker at an assumed 1 decision/s with a 3 s budget: three alerts may wait, a fourth may not.
    settings = FAST.model_copy(update={"workers": 1, "assumed_decisions_per_s": 1.0, "max_queue_wait_s": 3.0})
    pipeline = Pipeline(
        settings, store, index, default_catalog(), StageClients(trm=model), PolicyStatusRecorder(), Metrics()
    )
    await pipeline.start()
    try:
        await pipeline.ingest(payload(alert_dict("pod-0")))
        assert await eventually(lambda: model.calls == 1)  # the only worker is now busy with pod-0
        for i in range(1, 4):
            assert (await pipeline.ingest(payload(alert_dict(f"pod-{i}")))).new_incidents == 1
        with pytest.raises(Overloaded, match=r"3 alerts are waiting .*about 4 s of work at 1 decisions/s") as refused:
            await pipeline.ingest(payload(alert_dict("pod-4")))
        assert refused.value.retry_after > 0
        model.release.set()
        assert await pipeline.wait_idle(30)
        assert model.calls == 4  # every accepted alert was decided; the refused one was never recorded
        assert (
            await pipeline.ingest(payload(alert_dict("pod-4")))
        ).new_incidents == 1  # and is taken once room is back
    finally:
        model.release.set()
        await pipeline.stop(drain_timeout_s=5)
        store.close()


def test_the_drain_rate_is_measured_only_while_alerts_wait() -> None:
    rate = DrainRate(assumed_per_s=50)
    for i in range(10):
        rate.completed(100 + i * 0.01, backlog=True)
    assert rate.per_s == 50  # too few completions to trust yet
    for i in range(10, 40):
        rate.completed(100 + i * 0.01, backlog=True)
    assert rate.per_s == pytest.approx(100, rel=0.01)
    assert rate.seconds_for(300) == pytest.approx(3, rel=0.01)
    # A quiet spell (completions with nothing waiting) neither lowers the estimate nor leaks into the next backlog.
    rate.completed(500, backlog=False)
    for i in range(20):
        rate.completed(1000 + i * 0.005, backlog=True)
    assert rate.per_s == pytest.approx(200, rel=0.01)


def test_a_burst_of_completions_is_averaged_over_the_window() -> None:
    rate = DrainRate(assumed_per_s=50)
    # A model batch finishes 16 alerts at once, every 0.1 s: 160 decisions/s, not "infinitely fast".
    for batch in range(20):
        for _ in range(16):
            rate.completed(batch * 0.1, backlog=True)
    assert rate.per_s == pytest.approx(160, rel=0.06)
