"""Controllers, payloads and policies for the hardening tests.

A controller here is the real thing (`build_components` + `Controller.run`,
uvicorn on 127.0.0.1, the SQLite store, the pipeline) started inside the
test's event loop, so a test can both talk HTTP to it and look at its parts.
Tests that need a separate process (signals, bad checkpoints, the operator
against a restarted apiserver) use `tests/e2e/harness.py` instead.
"""

from __future__ import annotations

import asyncio
import copy
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx

from controller.app import Components, Controller
from controller.engine.model_loader import ModelState
from controller.engine.store import DB_FILENAME
from controller.settings import Settings
from tests.support.alerts import fixture_payload
from tests.support.controllers import launch, wait_listening

REPO = Path(__file__).resolve().parents[2]
STARTS = "2026-05-01T10:04:30Z"


def crashloop(
    pod: str = "cart-7f9c6d5b8-x2k4q",
    *,
    starts: str = STARTS,
    namespace: str | None = None,
    annotations: dict[str, str] | None = None,
    extra_labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """crashloop.json for `pod`: a fresh fingerprint (computed from the labels) per pod."""
    payload = fixture_payload("crashloop.json")
    payload = copy.deepcopy(payload)
    alert = payload["alerts"][0]
    alert["labels"]["pod"] = pod
    if namespace is not None:
        alert["labels"]["namespace"] = namespace
    alert["labels"].update(extra_labels or {})
    alert["annotations"].update(annotations or {})
    alert["fingerprint"] = ""
    alert["startsAt"] = starts
    payload["commonLabels"] = {}
    payload["alerts"] = [alert]
    return payload


@dataclass
class RunningServer:
    url: str
    components: Components
    controller: Controller
    task: asyncio.Task[int]
    token: str | None
    announced: list[str] = field(default_factory=list)

    def client(self, token: str | None = "default", **kwargs: Any) -> httpx.AsyncClient:
        """An HTTP client for the server; `token="default"` sends the server's own token (if any)."""
        token = self.token if token == "default" else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        kwargs.setdefault("timeout", 30)
        return httpx.AsyncClient(base_url=self.url, headers=headers, **kwargs)

    async def idle(self, timeout_s: float = 30) -> None:
        assert await self.components.pipeline.wait_idle(timeout_s), "the pipeline did not become idle"

    def rows(self, table: str) -> int:
        """Rows in a store table, read through a second connection (as sqlite3 on the file would)."""
        conn = sqlite3.connect(self.components.settings.state_dir / DB_FILENAME)
        try:
            return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
        finally:
            conn.close()

    async def stop(self) -> int:
        self.controller.request_stop()
        return await asyncio.wait_for(self.task, 60)


#: The `controller` fixture: `await controller(token=..., sink=..., limits=..., policies=[...], **Settings fields)`.
StartServer = Callable[..., Awaitable[RunningServer]]


async def start_server(settings: Settings, *, model: ModelState | None = None, scheme: str = "http") -> RunningServer:
    """Build and run a controller in this event loop; returns once it listens."""
    components, controller, task, announced = launch(settings, model=model)
    await wait_listening(controller, task, attempts=3000)
    token = settings.token.current() if settings.token.configured else None
    return RunningServer(f"{scheme}://127.0.0.1:{controller.port}", components, controller, task, token, announced)


# Rules copy the pod and namespace from the alert's labels; every function allowed, scope `shop` only.
RULES_POLICY = """\
apiVersion: remediation.homelab.io/v1alpha1
kind: RemediationPolicy
metadata: {name: restart-crashloops, namespace: shop}
spec:
  match: {alertNames: [KubePodCrashLooping]}
  targetNamespaces: [shop]
  allowedFunctions: [pod-restart, pod-check-status, scale-deployment, check-pvc-status,
                     flux-reconcile-kustomization, flux-reconcile-helmrelease, flux-reconcile-gitrepository]
  chain:
    - rules:
        - function: pod-restart
          parameters: {name: "{{ $labels.pod }}", namespace: "{{ $labels.namespace }}", type: pod}
  actions: {cooldownSeconds: 300, maxTriggersPerWindow: 100000, windowSeconds: 600}
"""


def write_policy(directory: Path, text: str = RULES_POLICY, name: str = "policy.yaml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text)
    return path


class FakeLLM:
    """An Ollama-style `/api/chat` server on loopback whose tool call is chosen by the alert it is shown.

    `answers` maps a marker (a label value the test puts on the alert, found in
    the prompt) to the tool call to return: `(function, arguments)`. Runs in
    its own thread and loop, like the capture sink, so it serves whatever
    loop the controller runs in.
    """

    def __init__(
        self, answers: dict[str, tuple[Any, Any]], marker: str = r"hostile-case-\d+", delay_s: float = 0.0
    ) -> None:
        import re
        import threading

        self.answers = answers
        self.delay_s = delay_s  # wait this long before answering (a slow model); may be changed at any time
        self.arrivals = 0  # requests received, counted when they arrive (before any delay)
        self._marker = re.compile(marker)
        self._threading = threading
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: Any = None
        self.requests = 0
        self.url = ""

    def __enter__(self) -> Self:
        from aiohttp import web

        ready = self._threading.Event()

        async def chat(request: web.Request) -> web.Response:
            self.arrivals += 1
            text = await request.text()
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            self.requests += 1
            found = self._marker.search(text)
            if found is None or found.group(0) not in self.answers:
                return web.json_response({"message": {"role": "assistant", "content": "null"}})
            function, arguments = self.answers[found.group(0)]
            call = {"function": {"name": function, "arguments": arguments}}
            return web.json_response({"message": {"role": "assistant", "content": "", "tool_calls": [call]}})

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application()
            app.router.add_post("/api/chat", chat)
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # aiohttp's only way
            self.url = f"http://127.0.0.1:{port}"
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = self._threading.Thread(target=run, name="fake-llm", daemon=True)
        self._thread.start()
        assert ready.wait(10), "the fake LLM did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


class RawSink:
    """A loopback HTTP/1.1 sink written on raw sockets, for answers no well-behaved server gives.

    `mode` says what happens to each request once it has been read in full
    (the sink has *taken* the event, and records its `ce-id`):

    - ``"ok"``: 202 Accepted;
    - ``"hang"``: no answer at all, the connection stays open;
    - ``"drip"``: 202 with a 1 MB Content-Length, then one body byte every 50 ms;
    - ``"reset"``: the connection is reset (RST) without an answer — accepted, then lost.

    Runs in its own thread and event loop, like `tests/pipeline/sink.py`.
    """

    def __init__(self, mode: str = "ok") -> None:
        import threading

        self.mode = mode
        self.taken: list[tuple[str, str]] = []  # (mode it was answered with, ce-id)
        self._threading = threading
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: Any = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.url = ""

    def ids(self, mode: str | None = None) -> list[str]:
        with self._lock:
            return [ce_id for m, ce_id in self.taken if mode is None or m == mode]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        import socket
        import struct

        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers = {}
                for line in head.decode("latin-1").split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                await reader.readexactly(int(headers.get("content-length", "0")))
                mode = self.mode
                with self._lock:
                    self.taken.append((mode, headers.get("ce-id", "")))
                if mode == "ok":
                    writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
                    await writer.drain()
                    continue
                if mode == "hang":
                    await asyncio.Event().wait()  # until the sink stops
                if mode == "drip":
                    writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 1000000\r\n\r\n")
                    for _ in range(1_000_000):
                        writer.write(b"x")
                        await writer.drain()
                        await asyncio.sleep(0.05)
                if mode == "reset":
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.transport.abort()
                    return
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            return
        finally:
            self._writers.discard(writer)

    def __enter__(self) -> Self:
        ready = self._threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            server = loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
            self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
            ready.set()
            loop.run_forever()
            server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

        self._thread = self._threading.Thread(target=run, name="raw-sink", daemon=True)
        self._thread.start()
        assert ready.wait(10), "the raw sink did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
