"""Turn concurrent asks into one call in a worker thread: the model batch and the store's group commit.

Two costs in the controller are mostly per call, not per item: a TRM
forward pass (Python overhead per op, paid under the GIL) and a durable
SQLite commit (one fsync). Under an alert storm many coroutines ask for
them at once; a `Coalescer` answers all the asks that are waiting with one
call, run in a worker thread so the event loop stays free.

There is no waiting window: the first ask starts a call at once (an idle
controller pays nothing extra), and the asks that arrive while a call runs
form the next one. One call runs at a time. A call takes the oldest ask and
the later ones with the same key, in arrival order, up to `max_items`
(counted by `size`, so an ask may carry several items).

An ask whose caller gives up (cancelled, e.g. by a timeout) before its call
starts is left out of it; after that, its answer is dropped. A call that
raises fails each of its asks with that exception; later calls go on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Ask(Generic[T, R]):
    item: T
    key: Hashable
    answer: asyncio.Future[R]


class Coalescer(Generic[T, R]):
    """`await submit(item, key)` → `run(items, key)[i]`, with concurrent asks sharing one `run` call.

    `run` is blocking (it runs in a worker thread) and must return one answer per item, in order.
    """

    def __init__(
        self,
        run: Callable[[Sequence[T], Hashable], Sequence[R]],
        *,
        max_items: int,
        size: Callable[[T], int] | None = None,
        name: str = "trm-sre-coalescer",
        on_call: Callable[[int], None] | None = None,
    ) -> None:
        if max_items < 1:
            raise ValueError(f"max_items must be at least 1, not {max_items}")
        self._run = run
        self.max_items = max_items
        self._size = size or (lambda _item: 1)
        self._name = name
        self._on_call = on_call  # told the size of each successful call (a metric)
        self._waiting: list[_Ask[T, R]] = []
        self._runner: asyncio.Task[None] | None = None
        #: Calls made and asks answered, for metrics and tests.
        self.calls = 0
        self.answered = 0

    async def submit(self, item: T, key: Hashable = None) -> R:
        answer: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Ask(item, key, answer))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run_calls(), name=self._name)
        return await answer

    def _next_call(self) -> list[_Ask[T, R]]:
        self._waiting = [a for a in self._waiting if not a.answer.done()]  # callers that gave up
        if not self._waiting:
            return []
        key = self._waiting[0].key
        taken: list[_Ask[T, R]] = []
        total = 0
        for ask in self._waiting:
            if ask.key != key:
                continue
            size = self._size(ask.item)
            if taken and total + size > self.max_items:
                break
            taken.append(ask)
            total += size
        chosen = {id(a) for a in taken}
        self._waiting = [a for a in self._waiting if id(a) not in chosen]
        return taken

    async def _run_calls(self) -> None:
        while asks := self._next_call():
            try:
                answers = await asyncio.to_thread(self._run, [a.item for a in asks], asks[0].key)
                if len(answers) != len(asks):
                    raise RuntimeError(f"{self._name}: {len(answers)} answers for {len(asks)} asks")
            except asyncio.CancelledError:
                for ask in asks:  # closing: nobody may wait forever on a call that will not finish
                    ask.answer.cancel()
                raise
            except Exception as exc:  # noqa: BLE001 - handed to every caller of this call, who decides
                for ask in asks:
                    if not ask.answer.done():
                        ask.answer.set_exception(exc)
                continue
            self.calls += 1
            self.answered += len(asks)
            if self._on_call is not None:
                self._on_call(sum(self._size(a.item) for a in asks))
            for ask, answer in zip(asks, answers, strict=True):
                if not ask.answer.done():
                    ask.answer.set_result(answer)

    async def aclose(self) -> None:
        """Stop after cancelling the running call's asks and those still waiting."""
        runner, self._runner = self._runner, None
        for ask in self._waiting:
            ask.answer.cancel()
        self._waiting.clear()
        if runner is not None and not runner.done():
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
