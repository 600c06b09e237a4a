"""ModelBatcher: concurrent asks become batches, each caller gets its answer, failures and give-ups stay contained."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from controller.engine.model_batcher import ModelBatcher

HELD_OUT = Path(__file__).resolve().parents[2] / "models" / "datasets" / "test-heldout-names.jsonl"


class EchoSelector:
    """Answers each alert with its own `id` label; the first batch waits for `release`, so others pile up."""

    def __init__(self) -> None:
        self.batches: list[tuple[list[str], int | None]] = []
        self.release = threading.Event()
        self.fail_next = False

    def select_batch(self, alerts: Sequence[Mapping[str, Any]], *, max_steps: int | None = None) -> list[str]:
        ids = [a["labels"]["id"] for a in alerts]
        self.batches.append((ids, max_steps))
        if len(self.batches) == 1:
            assert self.release.wait(10), "the test never released the first batch"
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("model exploded")
        return [f"answer-{i}" for i in ids]


def alert(i: int) -> dict[str, Any]:
    return {"labels": {"id": str(i)}}


async def until(predicate: Any, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.005)


async def test_asks_that_arrive_while_a_batch_runs_share_the_next_call_and_get_their_own_answers() -> None:
    selector = EchoSelector()
    batcher = ModelBatcher(selector, max_batch=8)
    first = asyncio.create_task(batcher.select_async(alert(0)))
    await until(lambda: len(selector.batches) == 1)  # an idle batcher starts at once, without a window
    rest = [asyncio.create_task(batcher.select_async(alert(i))) for i in range(1, 21)]
    await asyncio.sleep(0.05)
    selector.release.set()
    answers = await asyncio.gather(first, *rest)

    assert answers == [f"answer-{i}" for i in range(21)]
    sizes = [len(ids) for ids, _ in selector.batches]
    assert sizes == [1, 8, 8, 4]  # capped at max_batch, in arrival order
    assert [i for ids, _ in selector.batches for i in ids] == [str(i) for i in range(21)]
    assert (batcher.batches, batcher.alerts) == (4, 21)


async def test_asks_with_different_max_steps_never_share_a_batch() -> None:
    selector = EchoSelector()
    batcher = ModelBatcher(selector)
    first = asyncio.create_task(batcher.select_async(alert(0), max_steps=4))
    await until(lambda: len(selector.batches) == 1)
    others = [asyncio.create_task(batcher.select_async(alert(i), max_steps=2 if i % 2 else 8)) for i in range(1, 7)]
    await asyncio.sleep(0.05)
    selector.release.set()
    assert await asyncio.gather(first, *others) == [f"answer-{i}" for i in range(7)]
    for ids, steps in selector.batches[1:]:
        assert {2 if int(i) % 2 else 8 for i in ids} == {steps}


async def test_a_failed_batch_fails_only_its_own_callers() -> None:
    selector = EchoSelector()
    selector.fail_next = True
    batcher = ModelBatcher(selector)
    first = asyncio.create_task(batcher.select_async(alert(0)))
    await until(lambda: len(selector.batches) == 1)
    selector.release.set()
    with pytest.raises(RuntimeError, match="model exploded"):
        await first
    assert await batcher.select_async(alert(1)) == "answer-1"  # the batcher keeps working


async def test_a_caller_that_gives_up_before_its_batch_starts_is_left_out_of_it() -> None:
    selector = EchoSelector()
    batcher = ModelBatcher(selector)
    first = asyncio.create_task(batcher.select_async(alert(0)))
    await until(lambda: len(selector.batches) == 1)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(batcher.select_async(alert(1)), timeout=0.02)  # a TRM stage's timeoutMs
    kept = asyncio.create_task(batcher.select_async(alert(2)))
    await asyncio.sleep(0.02)
    selector.release.set()
    assert await first == "answer-0" and await kept == "answer-2"
    assert [ids for ids, _ in selector.batches] == [["0"], ["2"]]


async def test_closing_cancels_the_asks_still_waiting() -> None:
    selector = EchoSelector()
    batcher = ModelBatcher(selector)
    first = asyncio.create_task(batcher.select_async(alert(0)))
    await until(lambda: len(selector.batches) == 1)
    waiting = asyncio.create_task(batcher.select_async(alert(1)))
    await asyncio.sleep(0.01)
    closing = asyncio.create_task(batcher.aclose())
    await asyncio.sleep(0.01)
    selector.release.set()
    await closing
    for task in (first, waiting):
        with pytest.raises(asyncio.CancelledError):
            await task


def test_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ModelBatcher(EchoSelector(), max_batch=0)


async def test_batched_decisions_are_the_decisions_of_one_call_per_alert() -> None:
    """The real checkpoint: stacking alerts into one call changes no function, parameter or halting step."""
    from models.selector import TRMSelector
    from runbooks import default_catalog

    model = TRMSelector.load(catalog=default_catalog(), threads=1)
    alerts = [json.loads(line)["alert"] for line in HELD_OUT.read_text().splitlines()[:64]]
    one_by_one = [model.select(a) for a in alerts]
    batcher = ModelBatcher(model, max_batch=16)
    batched = await asyncio.gather(*(batcher.select_async(a) for a in alerts))

    assert batcher.batches < len(alerts)  # really batched
    for single, together in zip(one_by_one, batched, strict=True):
        assert (together.lambda_function, together.parameters, together.steps) == (
            single.lambda_function,
            single.parameters,
            single.steps,
        )
        assert together.confidence == pytest.approx(single.confidence, abs=1e-4)
