"""Fixtures of the edge tests: controllers started in the test's event loop, a capture sink."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.app import Controller, ModelState, build_components
from tests.pipeline.edge.servers import EdgeServer, StartServer, edge_settings
from tests.pipeline.sink import CaptureSink


@pytest.fixture
async def start_server(tmp_path: Path) -> AsyncIterator[StartServer]:
    """Start controllers in this loop (`await start_server(token=..., sink=..., limits=...)`); all stopped at the end."""
    running: list[tuple[Controller, asyncio.Task[int]]] = []

    async def start(*, model: ModelState | None = None, **kwargs: Any) -> EdgeServer:
        settings = edge_settings(tmp_path / f"server{len(running)}", **kwargs)
        components = build_components(settings, model=model or ModelState(None, "disabled", "tests"))
        announced: list[str] = []
        controller = Controller(components, announce=announced.append)
        task = asyncio.create_task(controller.run(install_signal_handlers=False))
        running.append((controller, task))
        for _ in range(500):
            if controller.port or task.done():
                break
            await asyncio.sleep(0.01)
        if task.done():
            task.result()
        assert controller.port, "the server did not start"
        return EdgeServer(f"http://127.0.0.1:{controller.port}", components, controller,
                          kwargs.get("token"), announced)

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
