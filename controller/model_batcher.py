"""Run concurrent TRM calls as one batch: the model's cost is mostly per call, not per alert.

The TRM is a small network run op by op from Python, so one call at batch 1
(about 8 ms on one thread) is mostly fixed overhead, paid while holding the GIL
the event loop also needs. `select_batch` over 16 alerts costs about as much
as three or four single calls (BENCHMARKS.md, batch curve). Under an alert
storm the pipeline's workers all ask the model at once; this class turns
those asks into batches.

There is no waiting window: the first ask starts a batch at once (an idle
controller pays nothing), and the asks that arrive while a batch runs form the
next one. Batches are capped at `max_batch` so one batch stays well inside a
TRM stage's default `timeoutMs` (200 ms); with `max_batch` 16 a caller waits at
most for the batch that is running and its own.

A caller whose wait is cancelled (the stage's timeout) is dropped from its
batch if that batch has not started; otherwise its answer is discarded. The
decisions are the same as one call per alert: the batch is only stacked, each
alert's encoding does not depend on the others, and halting is per alert.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

#: Alerts per model call. 16 x ~3.5 ms per alert keeps one batch near 60 ms on one thread.
DEFAULT_MAX_BATCH = 16


class BatchSelector(Protocol):
    """What `models.selector.TRMSelector` offers: one call for many alerts."""

    def select_batch(self, alerts: Sequence[Mapping[str, Any]], *, max_steps: int | None = None) -> list[Any]: ...


@dataclass
class _Ask:
    alert: Mapping[str, Any]
    max_steps: int | None
    answer: asyncio.Future[Any]


class ModelBatcher:
    """Coalesces `await select_async(alert)` calls into `select_batch` calls run in a worker thread.

    One batch runs at a time (the model is given one intra-op thread; two
    batches side by side would only take turns on the GIL). Asks with
    different `max_steps` (policies may differ) go in different batches.
    """

    def __init__(
        self,
        selector: BatchSelector,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self.selector = selector
        self.max_batch = max_batch
        self._on_batch = on_batch  # e.g. the batch-size histogram
        self._waiting: list[_Ask] = []
        self._runner: asyncio.Task[None] | None = None
        #: Batches run and alerts answered, for the metrics and the benchmark.
        self.batches = 0
        self.alerts = 0

    def __getattr__(self, name: str) -> Any:
        # `info`, `cfg`, `select`, ... of the wrapped selector stay reachable for callers that want them.
        return getattr(self.selector, name)

    async def select_async(self, alert: Mapping[str, Any], *, max_steps: int | None = None) -> Any:
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Ask(alert, max_steps, answer))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run_batches(), name="trm-sre-model-batcher")
        return await answer

    def _next_batch(self) -> list[_Ask]:
        """The oldest live ask and up to max_batch - 1 more with the same max_steps, in arrival order."""
        self._waiting = [a for a in self._waiting if not a.answer.done()]  # drop asks whose callers gave up
        if not self._waiting:
            return []
        steps = self._waiting[0].max_steps
        batch = [a for a in self._waiting if a.max_steps == steps][: self.max_batch]
        taken = {id(a) for a in batch}
        self._waiting = [a for a in self._waiting if id(a) not in taken]
        return batch

    async def _run_batches(self) -> None:
        while batch := self._next_batch():
            try:
                outputs = await asyncio.to_thread(
                    self.selector.select_batch,
                    [a.alert for a in batch],
                    max_steps=batch[0].max_steps,
                )
                if len(outputs) != len(batch):
                    raise RuntimeError(f"the model answered {len(outputs)} alerts for a batch of {len(batch)}")
            except asyncio.CancelledError:
                for ask in batch:  # closing: nobody may wait forever on a batch that will not finish
                    ask.answer.cancel()
                raise
            except Exception as exc:  # every caller of the batch gets the failure; its stage hands over
                for ask in batch:
                    if not ask.answer.done():
                        ask.answer.set_exception(exc)
                continue
            self.batches += 1
            self.alerts += len(batch)
            if self._on_batch is not None:
                self._on_batch(len(batch))
            for ask, output in zip(batch, outputs, strict=True):
                if not ask.answer.done():
                    ask.answer.set_result(output)

    async def aclose(self) -> None:
        """Stop after the running batch; asks still waiting are cancelled (their stages time out and hand over)."""
        runner, self._runner = self._runner, None
        for ask in self._waiting:
            ask.answer.cancel()
        self._waiting.clear()
        if runner is not None and not runner.done():
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
