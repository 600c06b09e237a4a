"""In-process controllers for the edge tests: real HTTP on 127.0.0.1, real pipeline and store.

They are started by `tests/support/controllers.py` (see the `start_server` fixture in conftest.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from controller.app import Components, Controller
from tests.support.alerts import FIXTURES, fixture_payload

__all__ = ["FIXTURES", "EdgeServer", "StartServer", "fixture_payload"]  # the payload helpers: re-exported


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


StartServer = Callable[..., Awaitable[EdgeServer]]
