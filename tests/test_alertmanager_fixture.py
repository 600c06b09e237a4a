"""The real Alertmanager fixture: a webhook receiver gets v4 payloads with the bearer token."""

from __future__ import annotations

import json
import queue
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.envtest.alertmanager import Alertmanager, start_alertmanager, webhook_config

pytestmark = pytest.mark.envtest


@dataclass
class Received:
    path: str
    authorization: str | None
    payload: dict[str, Any]


class WebhookSink:
    """A tiny loopback HTTP server that queues every POST it gets."""

    def __init__(self) -> None:
        self.received: queue.Queue[Received] = queue.Queue()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                sink.received.put(Received(self.path, self.headers.get("Authorization"), json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def next(self, timeout: float = 20) -> Received:
        return self.received.get(timeout=timeout)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sink() -> Iterator[WebhookSink]:
    s = WebhookSink()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def token() -> str:
    return secrets.token_hex(16)


@pytest.fixture
def alertmanager(tmp_path: Path, sink: WebhookSink, token: str, alertmanager_bin_dir: Path) -> Iterator[Alertmanager]:
    credentials = tmp_path / "webhook-token"
    credentials.write_text(token + "\n")  # trailing newline as editors leave it; Alertmanager trims it
    am = start_alertmanager(webhook_config(sink.url, credentials), tmp_path / "am", bin_dir=alertmanager_bin_dir)
    try:
        yield am
    finally:
        am.stop()


def test_amtool_alert_reaches_webhook_as_v4_with_bearer_token(
    alertmanager: Alertmanager, sink: WebhookSink, token: str
) -> None:
    alertmanager.amtool(
        "alert",
        "add",
        "alertname=KubePodCrashLooping",
        "namespace=shop",
        "severity=critical",
        "--annotation=summary=pod keeps restarting",
    )

    got = sink.next()

    assert got.path == "/alerts"
    assert got.authorization == f"Bearer {token}"
    assert got.payload["version"] == "4"
    assert got.payload["status"] == "firing"
    assert got.payload["receiver"] == "trm-sre"
    assert got.payload["groupLabels"] == {"alertname": "KubePodCrashLooping"}
    [alert] = got.payload["alerts"]
    assert alert["labels"] == {"alertname": "KubePodCrashLooping", "namespace": "shop", "severity": "critical"}
    assert alert["annotations"] == {"summary": "pod keeps restarting"}
    assert alert["fingerprint"]


def test_post_alerts_then_resolved_is_sent(alertmanager: Alertmanager, sink: WebhookSink) -> None:
    labels = {"alertname": "HighErrorRate", "service": "checkout"}
    now = datetime.now(UTC)
    alertmanager.post_alerts([{"labels": labels, "startsAt": (now - timedelta(minutes=1)).isoformat()}])
    assert sink.next().payload["status"] == "firing"
    assert [a["labels"] for a in alertmanager.alerts()] == [labels]

    # endsAt in the past resolves it; send_resolved delivers that after group_interval.
    alertmanager.post_alerts([{"labels": labels, "endsAt": datetime.now(UTC).isoformat()}])

    resolved = sink.next()
    assert resolved.payload["status"] == "resolved"
    assert resolved.payload["alerts"][0]["status"] == "resolved"


def test_stop_is_idempotent_and_frees_the_port(alertmanager: Alertmanager) -> None:
    alertmanager.stop()
    alertmanager.stop()
    with pytest.raises(OSError):
        alertmanager.alerts()
