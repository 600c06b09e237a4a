"""The floor of this stack: the least a receiver on trm-sre's libraries must do per alert, and nothing more.

    python -m bench.floor --state-dir DIR --sink URL [--port 0]

The benchmark's "floor" (issue #14): what trm-sre would cost if it made no
decision at all. Per Alertmanager webhook it
- parses the JSON body (FastAPI, served by uvicorn with h11 and no access log,
  as the controller serves its routes);
- stores every alert in SQLite in WAL mode with `synchronous=FULL`, the
  controller's durability for what it acknowledges (controller/engine/store/
  store.py): the 2xx waits for the fsync. Concurrent webhooks share one commit
  (a group commit, as the controller's recorder does), so the floor is not
  slowed by an fsync per request the controller does not pay either;
- answers 200, then forwards one CloudEvent per alert to the sink: binary
  mode built with the `cloudevents` SDK and posted with one shared
  `aiohttp.ClientSession`, 16 requests at a time, the controller's delivery
  library, timeout and default concurrency.

No policy, no model, no dedup, no cooldown, no outbox, no retries: the
difference between this and trm-sre is what trm-sre's decisions and
guarantees cost. The trigger's data carries the alert (with its fingerprint)
as trm-sre's does, so the same capture sink matches it to the POST.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sqlite3
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import uvicorn
from cloudevents.core.bindings.http import to_binary_event
from cloudevents.core.v1.event import CloudEvent
from fastapi import FastAPI, Request, Response

TRIGGER = "io.homelab.agent-sre.lambda.trigger"
SOURCE = "/trm-sre/bench-floor"
_DDL = """
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    received_at REAL NOT NULL,
    body TEXT NOT NULL
)
"""


def open_store(path: Path) -> sqlite3.Connection:
    """The controller's settings: WAL, `synchronous=FULL` (fsync before the 2xx), explicit transactions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise RuntimeError(f"could not switch {path} to WAL mode (got {mode})")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(_DDL)
    return conn


class GroupCommitter:
    """One writer: every batch of rows waiting when it is free goes into one durable transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._queue: asyncio.Queue[tuple[list[tuple[str, float, str]], asyncio.Future[None]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def store(self, rows: list[tuple[str, float, str]]) -> None:
        if self._task is None:  # started on the first request, inside the server's loop
            self._task = asyncio.create_task(self._run(), name="floor-writer")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put((rows, done))
        await done

    def _commit(self, rows: list[tuple[str, float, str]]) -> None:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._conn.executemany("INSERT INTO alerts (fingerprint, received_at, body) VALUES (?, ?, ?)", rows)
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise

    async def _run(self) -> None:
        while True:
            waiting = [await self._queue.get()]
            while not self._queue.empty():
                waiting.append(self._queue.get_nowait())
            rows = [row for batch, _ in waiting for row in batch]
            try:
                await asyncio.to_thread(self._commit, rows)
            except Exception as exc:  # noqa: BLE001 - every waiting request answers 500 with the cause
                for _, done in waiting:
                    done.set_exception(exc)
                continue
            for _, done in waiting:
                done.set_result(None)


def trigger_message(alert: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    """One binary-mode CloudEvent for `alert`: (headers, body)."""
    event = CloudEvent(
        {
            "id": str(uuid.uuid4()),
            "source": SOURCE,
            "type": TRIGGER,
            "time": datetime.now(UTC),
            "datacontenttype": "application/json",
        },
        {"alert": alert},
    )
    message = to_binary_event(event)
    return dict(message.headers), message.body


def build_app(conn: sqlite3.Connection, sink: str, timeout_s: float = 5.0, concurrency: int = 16) -> FastAPI:
    """The routes; `concurrency` requests to the sink at once, the controller's `delivery_concurrency` default."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    writer = GroupCommitter(conn)
    sessions: list[aiohttp.ClientSession] = []  # made inside the server's loop, on the first request
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    # Stored alerts wait here for a forwarder, as the controller's outbox entries wait for a delivery slot:
    # an unbounded number of concurrent posts would only queue inside the client's connection pool, more slowly.
    to_forward: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    forwarders: list[asyncio.Task[None]] = []
    counts = {"received": 0, "forwarded": 0, "forward_failed": 0}

    async def forward() -> None:
        while True:
            headers, body = trigger_message(await to_forward.get())
            try:
                async with sessions[0].post(sink, headers=headers, data=body, allow_redirects=False) as response:
                    await response.read()  # read, so the connection is reused
                    ok = 200 <= response.status < 300
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            counts["forwarded" if ok else "forward_failed"] += 1

    @app.post("/alertmanager")
    async def alertmanager(request: Request) -> Response:
        if not forwarders:  # started on the first request, inside the server's loop
            sessions.append(aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), timeout=timeout))
            forwarders.extend(asyncio.create_task(forward(), name=f"forward-{i}") for i in range(concurrency))
        payload = json.loads(await request.body())
        alerts = [a for a in payload.get("alerts", []) if isinstance(a, dict)]
        now = time.time()
        await writer.store([(str(a.get("fingerprint", "")), now, json.dumps(a)) for a in alerts])
        counts["received"] += len(alerts)
        for alert in alerts:
            to_forward.put_nowait(alert)
        return Response(status_code=200)

    @app.get("/readyz")
    async def readyz() -> dict[str, Any]:
        return {"ready": True, "waiting": to_forward.qsize()} | counts

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--sink", required=True, help="where the CloudEvents go (the controller's K_SINK)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (announced on stdout)")
    args = parser.parse_args(argv)
    app = build_app(open_store(args.state_dir / "floor.db"), args.sink)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="off",
        server_header=False,
        http="h11",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    # The same announce line as the controller's, so the bench's process wrapper finds the URL either way.
    print(f"bench floor listening on http://{args.host}:{sock.getsockname()[1]}", flush=True)
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
