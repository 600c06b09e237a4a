"""A real Alertmanager (v0.31, built from source) notifying a real trm-sre.

What only the real sender shows: its payloads and grouping, bearer
credentials read from a file, re-notifications of a group that keeps firing,
retries when trm-sre answers 503, and `send_resolved` notifications.
The 503 is produced the way it happens in production: another process holds
the SQLite write lock, so trm-sre cannot record the alert durably and refuses
to acknowledge it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from controller.schemas.decision import LAMBDA_TRIGGER
from tests.e2e.harness import (
    LARGE_BUDGET_POLICY,
    ControllerProcess,
    child_env,
    http,
    metric_value,
    wait_until,
)
from tests.envtest.alertmanager import Alertmanager, start_alertmanager, webhook_config
from tests.pipeline.sink import CaptureSink

pytestmark = [pytest.mark.envtest, pytest.mark.slow]


@pytest.fixture
def trm_sre(tmp_path: Path, sink: CaptureSink, token_file: Path) -> Iterator[ControllerProcess]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(LARGE_BUDGET_POLICY)
    proc = ControllerProcess(
        [
            "--standalone",
            "--port",
            "0",
            "--no-model",
            "--state-dir",
            str(tmp_path / "state"),
            "--policies",
            str(policy),
            "--token-file",
            str(token_file),
        ],
        child_env(K_SINK=sink.url),
        tmp_path / "trm-sre.log",
    )
    proc.start()
    yield proc
    assert proc.stop() == 0, proc.log_tail()


@pytest.fixture
def alertmanager(
    alertmanager_bin_dir: Path, trm_sre: ControllerProcess, token_file: Path, tmp_path: Path
) -> Iterator[Alertmanager]:
    # group_by alertname: both test alerts share a group, so every notification re-sends both.
    config = webhook_config(
        f"{trm_sre.url}/alertmanager", token_file, group_wait="1s", group_interval="2s", repeat_interval="3s"
    )
    am = start_alertmanager(config, tmp_path / "alertmanager", bin_dir=alertmanager_bin_dir)
    yield am
    am.stop()


def alert(pod: str, starts_at: str, ends_at: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "labels": {"alertname": "KubePodCrashLooping", "namespace": "shop", "pod": pod, "severity": "warning"},
        "annotations": {"summary": f"{pod} is crash looping"},
        "startsAt": starts_at,
        "generatorURL": "http://prometheus:9090/graph",
    }
    if ends_at:
        body["endsAt"] = ends_at
    return body


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def triggers_for(sink: CaptureSink, pod: str) -> list[str]:
    return [r.ce_id or "" for r in sink.accepted_of(LAMBDA_TRIGGER) if r.data()["parameters"]["name"] == pod]


def requests_answered(proc: ControllerProcess, code: int) -> float:
    status, text = http("GET", f"{proc.url}/metrics")
    assert status == 200
    return metric_value(text, "agent_sre_http_requests_total", code=str(code), route="/alertmanager")


def test_alertmanager_notifications_retries_and_resolution(
    trm_sre: ControllerProcess, alertmanager: Alertmanager, sink: CaptureSink, token_file: Path, tmp_path: Path
) -> None:
    token = token_file.read_text().strip()
    first_start = now()
    alertmanager.post_alerts([alert("cart-1", first_start)])

    # 1. The first notification triggers the remediation.
    wait_until("the first trigger", lambda: triggers_for(sink, "cart-1"), 60, trm_sre)
    decision_id = sink.accepted_of(LAMBDA_TRIGGER)[0].headers["ce-correlationid"]

    # 2. Re-notifications (repeat_interval 3s) reach trm-sre and add nothing.
    seen = requests_answered(trm_sre, 200)
    wait_until("two re-notifications", lambda: requests_answered(trm_sre, 200) >= seen + 2, 60, trm_sre)
    assert len(triggers_for(sink, "cart-1")) == 1

    # 3. The store cannot write (another process holds SQLite's write lock): trm-sre answers 503,
    #    Alertmanager retries, and the new incident is triggered exactly once when the lock is gone.
    lock = sqlite3.connect(tmp_path / "state" / "trm-sre.db", isolation_level=None, timeout=30)
    try:
        lock.execute("BEGIN IMMEDIATE")
        alertmanager.post_alerts([alert("cart-1", first_start), alert("cart-2", now())])
        wait_until("a 503 to Alertmanager", lambda: requests_answered(trm_sre, 503) >= 1, 90, trm_sre)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    wait_until("the trigger for the retried incident", lambda: triggers_for(sink, "cart-2"), 90, trm_sre)
    seen = requests_answered(trm_sre, 200)
    wait_until("notifications after the outage", lambda: requests_answered(trm_sre, 200) >= seen + 2, 60, trm_sre)
    assert len(triggers_for(sink, "cart-2")) == 1
    assert len(triggers_for(sink, "cart-1")) == 1

    # 4. Resolving the alert in Alertmanager reaches trm-sre as a resolved alert of the same incident.
    alertmanager.post_alerts([alert("cart-1", first_start, ends_at=now())])

    def resolved() -> bool:
        status, decision = http("GET", f"{trm_sre.url}/decisions/{decision_id}", token=token)
        return status == 200 and decision["incident"]["resolved"] is True

    wait_until("the resolved notification", resolved, 60, trm_sre)
    _, decision = http("GET", f"{trm_sre.url}/decisions/{decision_id}", token=token)
    assert decision["incident"]["resend_count"] >= 2
    assert len(sink.accepted_of(LAMBDA_TRIGGER)) == 2
    # Alertmanager authenticated with the credentials file: no 401s.
    assert requests_answered(trm_sre, 401) == 0
