"""Trigger outcomes and the circuit breaker end to end: a real Alertmanager notifying a real trm-sre.

Alerts are posted to Alertmanager, which notifies trm-sre (firing, then
`send_resolved`); triggers go to a loopback capture sink; a lambda's error
answer comes back as a CloudEvent on `/events`. Outcomes are read from
`GET /decisions/{id}` and `/metrics`. The windows are a few seconds long so
the test runs fast; every wait is for a state, never a fixed sleep.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.schemas.decision import LAMBDA_RESPONSE_ERROR, LAMBDA_TRIGGER, REMEDIATION_ESCALATED
from tests.e2e.harness import (
    ControllerProcess,
    crashloop_alert,
    crashloop_restart_policy,
    http,
    judging_controller,
    metric_value,
    now_rfc3339,
    per_pod_webhook_config,
    wait_until,
)
from tests.envtest.alertmanager import Alertmanager, start_alertmanager
from tests.pipeline.sink import CaptureSink

pytestmark = [pytest.mark.envtest, pytest.mark.slow]


# shop: quick to verify (recurrence 3 s); web: a long recurrence time, to see a recurrence;
# batch: a circuit breaker that opens after two ineffective outcomes.
POLICIES = {
    "shop": crashloop_restart_policy(
        "quick", "shop", "{cooldownSeconds: 0, verify: {windowSeconds: 20, recurrenceSeconds: 3}}"
    ),
    "web": crashloop_restart_policy(
        "recurring", "web", "{cooldownSeconds: 0, verify: {windowSeconds: 20, recurrenceSeconds: 120}}"
    ),
    "batch": crashloop_restart_policy(
        "breaker",
        "batch",
        "{cooldownSeconds: 0, verify: {windowSeconds: 3, recurrenceSeconds: 3},"
        " circuitBreaker: {failures: 2, windowSeconds: 3600, cooldownSeconds: 3600}}",
    ),
}


@pytest.fixture
def trm_sre(tmp_path: Path, sink: CaptureSink, token_file: Path) -> Iterator[ControllerProcess]:
    proc = judging_controller(tmp_path, sink.url, token_file, POLICIES)
    proc.start()
    yield proc
    assert proc.stop() == 0, proc.log_tail()


@pytest.fixture
def alertmanager(
    alertmanager_bin_dir: Path, trm_sre: ControllerProcess, token_file: Path, tmp_path: Path
) -> Iterator[Alertmanager]:
    config = per_pod_webhook_config(f"{trm_sre.url}/alertmanager", token_file)
    am = start_alertmanager(config, tmp_path / "alertmanager", bin_dir=alertmanager_bin_dir)
    yield am
    am.stop()


class Scenario:
    def __init__(self, trm_sre: ControllerProcess, am: Alertmanager, sink: CaptureSink, token: str) -> None:
        self.trm_sre, self.am, self.sink, self.token = trm_sre, am, sink, token

    def fire(self, namespace: str, pod: str) -> tuple[str, str]:
        """Post a firing alert; wait for its trigger; (decision id, startsAt)."""
        starts = now_rfc3339()
        self.am.post_alerts([crashloop_alert(namespace, pod, starts)])
        wait_until(f"the trigger for {pod}", lambda: self.triggers(pod), 60, self.trm_sre)
        return self.triggers(pod)[0].headers["ce-correlationid"], starts

    def resolve(self, namespace: str, pod: str, starts: str) -> None:
        self.am.post_alerts([crashloop_alert(namespace, pod, starts, ends_at=now_rfc3339())])

    def triggers(self, pod: str) -> list[Any]:
        return [r for r in self.sink.accepted_of(LAMBDA_TRIGGER) if r.data()["parameters"]["name"] == pod]

    def decision(self, decision_id: str) -> dict[str, Any]:
        status, body = http("GET", f"{self.trm_sre.url}/decisions/{decision_id}", token=self.token)
        assert status == 200, body
        return body

    def outcome(self, decision_id: str, state: str) -> dict[str, Any]:
        def reached() -> bool:
            v = self.decision(decision_id)["verification"]
            return v is not None and v["state"] not in ("pending", "resolved")

        wait_until(f"the outcome of {decision_id}", reached, 90, self.trm_sre)
        verification = self.decision(decision_id)["verification"]
        assert verification["state"] == state, verification
        return verification

    def metric(self, policy: str, outcome: str) -> float:
        status, text = http("GET", f"{self.trm_sre.url}/metrics")
        assert status == 200
        return metric_value(
            text, "agent_sre_remediation_outcomes_total", policy=policy, function="pod-restart", outcome=outcome
        )


def test_outcomes_through_a_real_alertmanager(
    trm_sre: ControllerProcess, alertmanager: Alertmanager, sink: CaptureSink, token_file: Path
) -> None:
    s = Scenario(trm_sre, alertmanager, sink, token_file.read_text().strip())

    verified, verified_starts = s.fire("shop", "cart-7f9c6d5b8-x2k4q")
    ineffective, _ = s.fire("shop", "api-7f9c6d5b8-qwert")
    failed, _ = s.fire("shop", "db-7f9c6d5b8-zxcvb")
    recurred, recurred_starts = s.fire("web", "front-6d4cf56db6-abcde")

    # verified: Alertmanager sends the resolution; nothing comes back within the recurrence time.
    s.resolve("shop", "cart-7f9c6d5b8-x2k4q", verified_starts)
    # failed: the lambda answers with an error (a structured CloudEvent on /events).
    error_event = {
        "specversion": "1.0",
        "id": "resp-1",
        "source": "/lambda/pod-restart",
        "type": LAMBDA_RESPONSE_ERROR,
        "datacontenttype": "application/json",
        "data": {"functionName": "pod-restart", "correlationId": failed, "error": {"message": "forbidden"}},
    }
    request = urllib.request.Request(f"{trm_sre.url}/events", json.dumps(error_event).encode(), method="POST")
    request.add_header("Content-Type", "application/cloudevents+json")
    request.add_header("Authorization", f"Bearer {s.token}")
    with urllib.request.urlopen(request, timeout=15) as response:
        assert response.status == 202
    # recurred: resolved, then the same Deployment's next pod crash-loops within the recurrence time.
    s.resolve("web", "front-6d4cf56db6-abcde", recurred_starts)
    wait_until(
        "the web incident resolved",
        lambda: s.decision(recurred)["incident"]["resolved"] is True,
        60,
        trm_sre,
    )
    s.fire("web", "front-6d4cf56db6-fghij")

    v = s.outcome(verified, "verified")
    assert v["target"] == "shop/deployment/cart" and v["resolvedAt"]
    assert s.outcome(failed, "failed")["evidence"]["signal"] == "the lambda answered with an error"
    v = s.outcome(recurred, "recurred")
    assert v["target"] == "web/deployment/front"
    assert v["evidence"]["recurredIncident"] != s.decision(recurred)["incident_key"]
    assert s.outcome(ineffective, "ineffective")["evidence"]["signal"].startswith("still firing 20s")
    assert s.metric("shop/quick", "verified") == 1
    assert s.metric("shop/quick", "failed") == 1
    assert s.metric("shop/quick", "ineffective") == 1
    assert s.metric("web/recurring", "recurred") == 1


def test_two_ineffective_outcomes_open_the_circuit_across_a_restart(
    trm_sre: ControllerProcess, alertmanager: Alertmanager, sink: CaptureSink, token_file: Path
) -> None:
    s = Scenario(trm_sre, alertmanager, sink, token_file.read_text().strip())
    first, _ = s.fire("batch", "job-a")
    s.outcome(first, "ineffective")
    second, _ = s.fire("batch", "job-b")
    s.outcome(second, "ineffective")

    assert trm_sre.stop() == 0, trm_sre.log_tail()
    trm_sre.start()

    alertmanager.post_alerts([crashloop_alert("batch", "job-c", now_rfc3339())])

    def escalated() -> list[Any]:
        return [r for r in sink.accepted_of(REMEDIATION_ESCALATED) if "job-c" in str(r.data())]

    wait_until("the third alert escalated", escalated, 60, trm_sre)
    assert s.triggers("job-c") == []
    decision_id = escalated()[0].headers["ce-correlationid"]
    decision = s.decision(decision_id)
    assert decision["state"] == "escalated"
    assert "circuit breaker open for pod-restart under policy batch/breaker" in decision["reason"]
    assert decision["verification"] is None
