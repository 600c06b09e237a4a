"""A real HTTP CloudEvents sink on loopback that records every request, for pipeline and e2e tests.

It runs an aiohttp server in its own thread and event loop, so it works the
same from async tests (next to the engine's loop), from sync tests and from
tests that drive the controller as a subprocess. Every request is recorded
with its headers, body and the answer it got; how it answers can be switched
at any time:

    with CaptureSink() as sink:
        sink.answer(500)                      # every request from now on
        sink.script(500, 503, Answer(202))    # the next three requests, then the default again
        sink.script(Answer(reset=True))       # drop the connection without an answer
        sink.script(Answer(202, delay_s=2))   # answer late (client timeouts)
        sink.go_down(); sink.come_up()        # connection refused, then back on the same port
        await sink.wait_for_async(lambda s: len(s.accepted_ids()) == 3)

`accepted` holds only requests answered 2xx: what a real sink took in.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web
from cloudevents.core.bindings.http import HTTPMessage, from_http
from cloudevents.core.formats.json import JSONFormat


@dataclass(frozen=True)
class Answer:
    """How to answer one request: a status after an optional delay, or a reset connection."""

    status: int = 202
    delay_s: float = 0.0
    reset: bool = False
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CapturedRequest:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    status: int | None  # None: the connection was reset / dropped without an answer
    received_at: float

    @property
    def accepted(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def ce_id(self) -> str | None:
        return self.headers.get("ce-id")

    @property
    def ce_type(self) -> str | None:
        return self.headers.get("ce-type")

    def cloudevent(self) -> Any:
        """The request parsed with the CloudEvents SDK (binary or structured mode)."""
        return from_http(HTTPMessage(dict(self.headers), self.body), JSONFormat())

    def data(self) -> Any:
        return self.cloudevent().get_data()


class CaptureSink:
    """See the module docstring. Use as a context manager, or call start() / stop()."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._lock = threading.Lock()
        self._requests: list[CapturedRequest] = []
        self._default = Answer(202)
        self._script: deque[Answer] = deque()
        self._down = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    # lifecycle

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Self:
        ready = threading.Event()
        failure: list[Exception] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._start_server())
            except Exception as exc:  # noqa: BLE001 - re-raised in start()'s thread (a port in use, ...)
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="capture-sink", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the capture sink did not start within 10 s")
        if failure:
            raise RuntimeError(f"the capture sink could not start: {failure[0]}") from failure[0]
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop = self._thread = None

    async def _start_server(self) -> None:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        await self._listen()

    async def _listen(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await self._site.start()
        if self.port == 0:
            server = self._site._server  # the only way aiohttp exposes the bound port of port 0
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _cleanup(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _call(self, coro_factory: Callable[[], Any]) -> None:
        assert self._loop is not None, "the sink is not running"
        asyncio.run_coroutine_threadsafe(coro_factory(), self._loop).result(10)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    # behaviour

    def answer(self, status: int = 202, *, delay_s: float = 0.0, reset: bool = False) -> None:
        """Answer every request from now on like this (after any scripted answers)."""
        with self._lock:
            self._default = Answer(status, delay_s, reset)

    def script(self, *answers: int | Answer) -> None:
        """Answer the next requests with these, in order; then the default answer again."""
        with self._lock:
            self._script.extend(a if isinstance(a, Answer) else Answer(a) for a in answers)

    def go_down(self) -> None:
        """Stop listening (new connections are refused); requests on kept-alive connections are dropped."""
        with self._lock:
            self._down = True

        async def close() -> None:
            if self._site is not None:
                await self._site.stop()
                self._site = None

        self._call(close)

    def come_up(self) -> None:
        """Listen again, on the same port."""

        async def reopen() -> None:
            if self._site is None:
                await self._listen()

        self._call(reopen)
        with self._lock:
            self._down = False

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        with self._lock:
            if self._down:
                answer = Answer(reset=True)
            elif self._script:
                answer = self._script.popleft()
            else:
                answer = self._default
        if answer.delay_s:
            await asyncio.sleep(answer.delay_s)
        captured = CapturedRequest(
            method=request.method,
            path=request.path,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            status=None if answer.reset else answer.status,
            received_at=time.time(),
        )
        with self._lock:
            self._requests.append(captured)
        if answer.reset:
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError  # nothing can be written on an aborted connection
        return web.Response(status=answer.status, headers=answer.headers)

    # observations

    @property
    def requests(self) -> list[CapturedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def accepted(self) -> list[CapturedRequest]:
        return [r for r in self.requests if r.accepted]

    def accepted_ids(self, ce_type: str | None = None) -> list[str]:
        """CloudEvent ids of accepted requests, in arrival order (duplicates kept, so tests can see them)."""
        return [r.ce_id or "" for r in self.accepted if ce_type is None or r.ce_type == ce_type]

    def accepted_of(self, ce_type: str) -> list[CapturedRequest]:
        return [r for r in self.accepted if r.ce_type == ce_type]

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    def wait_for(self, predicate: Callable[[CaptureSink], bool], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.01)
        return predicate(self)

    async def wait_for_async(self, predicate: Callable[[CaptureSink], bool], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            await asyncio.sleep(0.01)
        return predicate(self)
