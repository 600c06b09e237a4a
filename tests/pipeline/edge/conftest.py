"""Fixtures of the edge tests: controllers started in the test's event loop, a capture sink."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.app import Controller
from controller.engine.model_loader import ModelState
from tests.pipeline.edge.servers import EdgeServer, StartServer
from tests.pipeline.sink import CaptureSink
from tests.support.controllers import launch, server_settings, wait_listening


@pytest.fixture
async def start_server(tmp_path: Path) -> AsyncIterator[StartServer]:
    """Start controllers in this loop (`await start_server(token=..., sink=..., limits=...)`); all stop at the end."""
    running: list[tuple[Controller, asyncio.Task[int]]] = []

    async def start(*, model: ModelState | None = None, **kwargs: Any) -> EdgeServer:
        settings = server_settings(tmp_path / f"server{len(running)}" / "state", **kwargs)
        components, controller, task, announced = launch(settings, model=model)
        running.append((controller, task))
        await wait_listening(controller, task, attempts=500)
        return EdgeServer(f"http://127.0.0.1:{controller.port}", components, controller, kwargs.get("token"), announced)

    yield start
    for controller, task in running:
        controller.request_stop()
        await asyncio.wait_for(task, 30)


@pytest.fixture
async def server(start_server: StartServer) -> EdgeServer:
    """A controller with a bearer token, the embedded default policy, triggers to the JSONL file."""
    return await start_server(token="edge-test-token")


@pytest.fixture
def sink() -> Iterator[CaptureSink]:
    with CaptureSink() as capture:
        yield capture
