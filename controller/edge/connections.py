"""Connection-level deadlines: a client that is slow to send its request headers is disconnected.

uvicorn's h11 protocol bounds the header size (h11's 16 KiB) and closes idle
keep-alive connections after `timeout_keep_alive`, but waits forever for
headers that arrive a byte at a time. `HeaderDeadlineH11` closes a connection
whose request line and headers are not complete `header_timeout_s` after the
connection opened or the previous response finished. The body has its own
deadline (`limits.read_body`), and `limit_concurrency` bounds connections:
together no stalled client holds a connection, or a request slot, for long
(issue #13.5).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol


class HeaderDeadlineH11(H11Protocol):
    """h11 with a deadline on each request's headers (see the module docstring)."""

    header_timeout_s: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_deadline: asyncio.TimerHandle | None = None

    @classmethod
    def with_timeout(cls, header_timeout_s: float) -> type[HeaderDeadlineH11]:
        """This protocol class with its deadline set (uvicorn's `http=` takes a class)."""
        return type(cls.__name__, (cls,), {"header_timeout_s": header_timeout_s})

    def _arm(self) -> None:
        self._disarm()
        self._header_deadline = self.loop.call_later(self.header_timeout_s, self._headers_overdue)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_overdue(self) -> None:
        self._header_deadline = None
        no_request_head = self.cycle is None or self.cycle.response_complete
        if no_request_head and not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        before = self.cycle
        super().handle_events()
        if self.cycle is not before and self.cycle is not None and not self.cycle.response_complete:
            self._disarm()  # the headers are in: the body's deadline is the route's

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()
