"""Fixtures of the end-to-end tests: a real HTTP CloudEvents sink standing in for K_SINK."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.pipeline.sink import CaptureSink


@pytest.fixture
def sink() -> Iterator[CaptureSink]:
    with CaptureSink() as capture:
        yield capture
