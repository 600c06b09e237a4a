"""Fixtures of the end-to-end tests: a real HTTP CloudEvents sink standing in for K_SINK, and a real
OpenTelemetry Collector receiving the controller's spans."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.envtest.otelcol import Collector, otelcol_bin_dir, start_collector
from tests.pipeline.sink import CaptureSink


@pytest.fixture
def sink() -> Iterator[CaptureSink]:
    with CaptureSink() as capture:
        yield capture


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    """The webhook bearer token, in a file as a mounted Secret gives it (with a trailing newline)."""
    path = tmp_path / "token"
    path.write_text(secrets.token_hex(16) + "\n")
    return path


@pytest.fixture(scope="session")
def otelcol_dir() -> Path:
    """Directory with the real `otelcol` (built from the Go module proxy on first use)."""
    return otelcol_bin_dir()


@pytest.fixture
def otel_collector(otelcol_dir: Path, tmp_path: Path) -> Iterator[Collector]:
    """A real collector on loopback: OTLP/HTTP in, every span written to a JSON file (`spans()`)."""
    collector = start_collector(tmp_path / "otelcol", bin_dir=otelcol_dir)
    try:
        yield collector
    finally:
        collector.stop()
