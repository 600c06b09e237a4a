"""In-process controllers for the edge tests: real HTTP on 127.0.0.1, real pipeline and store."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from controller.app import Components, Controller
from controller.settings import Limits, RunSettings, settings_from_args

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
                  limits: Limits | None = None, policies: list[Path] | None = None,
                  token_file: Path | None = None) -> RunSettings:
    settings = settings_from_args(
        standalone=True, policy_files=[str(p) for p in policies or []], host="127.0.0.1", port=0,
        state_dir=str(tmp_path / "state"), token_file=str(token_file) if token_file else None, namespaces=None,
        device="cpu", no_model=True,
        checkpoint=None, sink=sink, liveness_port=0, log_level="INFO",
        environ={"TRM_SRE_WEBHOOK_TOKEN": token} if token else {},
    )
    return dataclasses.replace(settings, limits=limits) if limits else settings


StartServer = Callable[..., Awaitable[EdgeServer]]
