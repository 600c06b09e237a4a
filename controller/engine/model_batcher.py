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

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, Protocol

from controller.engine.coalesce import Coalescer

#: Alerts per model call. 16 x ~3.5 ms per alert keeps one batch near 60 ms on one thread.
DEFAULT_MAX_BATCH = 16


class BatchSelector(Protocol):
    """What `models.selector.TRMSelector` offers: one call for many alerts."""

    def select_batch(self, alerts: Sequence[Mapping[str, Any]], *, max_steps: int | None = None) -> list[Any]: ...


class ModelBatcher:
    """`await select_async(alert)`, answered by `select_batch` calls shared by concurrent asks.

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
        self.selector = selector
        self._coalescer: Coalescer[Mapping[str, Any], Any] = Coalescer(
            self._select_batch, max_items=max_batch, name="trm-sre-model-batcher", on_call=on_batch
        )

    def __getattr__(self, name: str) -> Any:
        # `info`, `cfg`, `select`, ... of the wrapped selector stay reachable for callers that want them.
        return getattr(self.selector, name)

    @property
    def batches(self) -> int:
        """Model calls made so far."""
        return self._coalescer.calls

    @property
    def alerts(self) -> int:
        """Alerts answered so far."""
        return self._coalescer.answered

    def _select_batch(self, alerts: Sequence[Mapping[str, Any]], max_steps: Hashable) -> list[Any]:
        return self.selector.select_batch(alerts, max_steps=max_steps)  # type: ignore[arg-type]

    async def select_async(self, alert: Mapping[str, Any], *, max_steps: int | None = None) -> Any:
        return await self._coalescer.submit(alert, key=max_steps)

    async def aclose(self) -> None:
        """Stop after the running batch; asks still waiting are cancelled (their stages time out and hand over)."""
        await self._coalescer.aclose()
