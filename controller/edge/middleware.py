"""HTTP middleware: count requests by route template and status, and bind a correlation id to each."""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from controller.observability.logging import correlation

if TYPE_CHECKING:
    from controller.observability.metrics import Metrics

log = logging.getLogger("controller.edge.api")  # the log lines keep the logger they always had


def request_counter(metrics: Metrics) -> Callable[[str, int], None]:
    def count(route: str, code: int) -> None:
        metrics.http_requests.labels(route=route, code=str(code)).inc()

    return count


class RequestMetrics:
    """Pure ASGI middleware: count requests by route template and status; bind a request correlation id."""

    def __init__(self, app: Any, count: Callable[[str, int], None]) -> None:
        self.app = app
        self.count = count

    async def __call__(
        self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        headers = dict(scope.get("headers") or [])
        request_id = (headers.get(b"x-correlation-id") or headers.get(b"ce-id") or b"").decode("latin-1")[:128]

        async def send_and_record(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        # 16 hex digits as before (uuid4 read os.urandom per request; a log id needs no secrecy, only spread).
        with correlation(request_id or f"{random.getrandbits(64):016x}"):
            try:
                await self.app(scope, receive, send_and_record)
            finally:
                route = scope.get("route")
                self.count(getattr(route, "path", "unmatched"), status)
                if status >= 500:
                    log.warning(
                        "request failed",
                        extra={"method": scope.get("method"), "path": scope.get("path"), "status": status},
                    )
                else:
                    log.debug(
                        "request", extra={"method": scope.get("method"), "path": scope.get("path"), "status": status}
                    )
