"""Fixtures of the engine tests: a capture sink and engines that are always stopped and closed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.pipeline.engine.builders import Engine, Engines
from tests.pipeline.sink import CaptureSink


@pytest.fixture
def sink() -> Iterator[CaptureSink]:
    with CaptureSink() as capture:
        yield capture


@pytest.fixture
async def make_engine(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Engine]]]:
    """`await make_engine(policies, sink=url, start=True, state_dir=..., **settings)`."""
    engines = Engines()

    async def make(policies: list[Any], *, start: bool = True, state_dir: Path | None = None, **kwargs: Any) -> Engine:
        return await engines.make(state_dir or tmp_path / "state", policies, start=start, **kwargs)

    yield make
    await engines.close()
