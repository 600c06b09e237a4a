"""A real controller (HTTP on 127.0.0.1, real pipeline and store) started in the test's event loop."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller.app import Components, Controller, ModelState, build_components
from controller.settings import Limits, RunSettings, settings_from_args
from tests.pipeline.sink import CaptureSink

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "alerts"


def fixture_payload(name: str) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return payload


@dataclass
class EdgeServer:
    url: str
    components: Components
    controller: Controller
    token: str | None
    announced: list[str] = field(default_factory=list)

    def client(self, token: str | None = "default", **kwargs: Any) -> httpx.AsyncClient:
        """An HTTP client for the server; `token="default"` sends the server's own token (if any)."""
        token = self.token if token == "default" else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=10, **kwargs)

    async def idle(self) -> None:
        assert await self.components.pipeline.wait_idle(10)


def edge_settings(tmp_path: Path, *, token: str | None = None, sink: str | None = None,
                  limits: Limits | None = None, policies: list[Path] | None = None) -> RunSettings:
    settings = settings_from_args(
        standalone=True, policy_files=[str(p) for p in policies or []], host="127.0.0.1", port=0,
        state_dir=str(tmp_path / "state"), token_file=None, namespaces=None, device="cpu", no_model=True,
        checkpoint=None, sink=sink, liveness_port=0, log_level="INFO",
        environ={"TRM_SRE_WEBHOOK_TOKEN": token} if token else {},
    )
    return dataclasses.replace(settings, limits=limits) if limits else settings


StartServer = Callable[..., Awaitable[EdgeServer]]


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
