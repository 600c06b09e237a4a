"""A loopback CloudEvents sink that notes when each trigger arrives, and nothing more.

It keeps one small tuple per request (arrival time, CloudEvent type and id,
the alert fingerprint from `data.alert.fingerprint`), so tens of thousands of
triggers cost little memory and the sink stays cheap next to the process it
measures. `time.monotonic()` is CLOCK_MONOTONIC on Linux, the same clock in
every process, so arrival times compare directly with the load generator's.

`POST /echo` answers 200 at once and records nothing: the load generator's
baseline, one bare loopback HTTP round trip through Python on this machine.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass
from typing import Any, Self

from aiohttp import web


@dataclass(frozen=True)
class Arrival:
    at: float  # time.monotonic()
    ce_type: str
    ce_id: str
    fingerprint: str | None


class TriggerSink:
    """Run with `with TriggerSink() as sink:`; `sink.url` is the K_SINK to give the controller."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self._lock = threading.Lock()
        self._arrivals: list[Arrival] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    def __enter__(self) -> Self:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._start())
            except Exception as exc:  # noqa: BLE001 - re-raised in the caller's thread
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            if self._runner is not None:
                loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="bench-sink", daemon=True)
        self._thread.start()
        ready.wait(15)
        if errors:
            raise RuntimeError(f"the bench sink could not start: {errors[0]}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    async def _start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/echo", self._echo)
        app.router.add_route("*", "/{tail:.*}", self._record)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0, backlog=1024)
        await site.start()
        server = site._server  # aiohttp exposes the bound port of port 0 only here
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _echo(self, request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=200)

    async def _record(self, request: web.Request) -> web.Response:
        body = await request.read()
        at = time.monotonic()
        fingerprint = None
        try:
            data: Any = json.loads(body)
            alert = data.get("alert") if isinstance(data, dict) else None
            if isinstance(alert, dict):
                fingerprint = alert.get("fingerprint")
        except ValueError:
            pass
        arrival = Arrival(at, request.headers.get("ce-type", ""), request.headers.get("ce-id", ""), fingerprint)
        with self._lock:
            self._arrivals.append(arrival)
        return web.Response(status=202)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    @property
    def echo_url(self) -> str:
        return f"http://{self.host}:{self.port}/echo"

    def arrivals(self) -> list[Arrival]:
        with self._lock:
            return list(self._arrivals)

    def arrivals_since(self, start: int) -> list[Arrival]:
        """The arrivals after the first `start`: a poll copies only what is new, not every arrival so far
        (the list grows by tens of thousands in a run, and a full copy every poll holds the sink's lock)."""
        with self._lock:
            return self._arrivals[start:]

    def count(self) -> int:
        with self._lock:
            return len(self._arrivals)
