"""Silences tied to remediation (issue #16) against a real Alertmanager on loopback.

Alertmanager notifies trm-sre and, through a second webhook, a capture
server (what a human's pager would get). trm-sre creates, extends and expires
silences through Alertmanager's own API; the tests read them back from that
API (and amtool). Every wait is for a state, never a fixed sleep.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.schemas.decision import APPROVAL_REQUESTED, LAMBDA_RESPONSE_ERROR, LAMBDA_TRIGGER
from tests.e2e.harness import (
    REPO,
    ControllerProcess,
    child_env,
    crashloop_alert,
    crashloop_payload,
    crashloop_restart_policy,
    http,
    metric_value,
    now_rfc3339,
    wait_until,
)
from tests.envtest.alertmanager import Alertmanager, start_alertmanager, webhook_config
from tests.envtest.controlplane import free_port
from tests.pipeline.sink import CaptureSink

pytestmark = [pytest.mark.envtest, pytest.mark.slow]

CRASH_DIR = Path(__file__).parent / "silence_crash"


# shop: silenced for 4 s at a time (so it is extended while firing), verified 2 s after resolving;
# pay: a long window (the lambda's error expires it); dry / appr: silences enabled but never delivered.
SILENCE = "silence: {enabled: true, maxSeconds: 4, severities: [warning]}"
POLICIES = {
    "shop": crashloop_restart_policy(
        "quick", "shop", f"{{cooldownSeconds: 300, verify: {{windowSeconds: 60, recurrenceSeconds: 2}}, {SILENCE}}}"
    ),
    "pay": crashloop_restart_policy(
        "long", "pay", "{cooldownSeconds: 300, verify: {windowSeconds: 600}, silence: {enabled: true}}"
    ),
    "dry": crashloop_restart_policy("dry", "dry", "{dryRun: true, silence: {enabled: true}}"),
    "appr": crashloop_restart_policy(
        "appr", "appr", "{requireApproval: true, approvalTimeoutSeconds: 600, silence: {enabled: true}}"
    ),
}


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


@pytest.fixture
def pager() -> Iterator[CaptureSink]:
    """Alertmanager's second receiver: what a human would be paged with."""
    with CaptureSink() as capture:
        yield capture


class Env:
    def __init__(self, tmp_path: Path, am: Alertmanager, port: int, sink: CaptureSink, token_file: Path) -> None:
        self.am, self.sink, self.token = am, sink, token_file.read_text().strip()
        files = []
        for namespace, text in POLICIES.items():
            path = tmp_path / f"{namespace}.yaml"
            path.write_text(text)
            files.append(str(path))
        self.marker = tmp_path / "crashed"
        self.state_dir = tmp_path / "state"
        self.trm_sre = ControllerProcess(
            [
                "--standalone",
                "--port",
                str(port),
                "--no-model",
                "--state-dir",
                str(tmp_path / "state"),
                "--token-file",
                str(token_file),
                "--alertmanager-url",
                am.url,
                "--policies",
                *files,
            ],
            child_env(
                K_SINK=sink.url,
                TRM_SRE_ENGINE__OUTCOME_INTERVAL_S="0.5",
                TRM_SRE_ENGINE__SILENCE_INTERVAL_S="0.5",
                PYTHONPATH=f"{CRASH_DIR}:{REPO}",
                TRM_SRE_TEST_SILENCE_CRASH_MARKER=None,
            ),
            tmp_path / "trm-sre.log",
        )

    def fire(self, namespace: str, pod: str) -> tuple[str, str]:
        starts = now_rfc3339()
        self.am.post_alerts([crashloop_alert(namespace, pod, starts)])
        wait_until(f"the trigger for {pod}", lambda: self.triggers(pod), 60, self.trm_sre)
        return self.triggers(pod)[0].headers["ce-correlationid"], starts

    def triggers(self, pod: str) -> list[Any]:
        return [r for r in self.sink.accepted_of(LAMBDA_TRIGGER) if r.data()["parameters"]["name"] == pod]

    def decision(self, decision_id: str) -> dict[str, Any]:
        status, body = http("GET", f"{self.trm_sre.url}/decisions/{decision_id}", token=self.token)
        assert status == 200, body
        return body

    def silences_for(self, pod: str) -> list[dict[str, Any]]:
        """Alertmanager's silences (any state) whose matchers name this pod."""
        return [
            s
            for s in _get(f"{self.am.url}/api/v2/silences")
            if any(m["name"] == "pod" and m["value"] == pod for m in s["matchers"])
        ]

    def active_silences_for(self, pod: str) -> list[dict[str, Any]]:
        return [s for s in self.silences_for(pod) if s["status"]["state"] == "active"]

    def alert(self, pod: str) -> dict[str, Any] | None:
        found = [a for a in self.am.alerts() if a["labels"].get("pod") == pod]
        return found[0] if found else None

    def metric(self, name: str, **labels: str) -> float:
        status, text = http("GET", f"{self.trm_sre.url}/metrics")
        assert status == 200
        return metric_value(text, name, **labels)


@pytest.fixture
def env(
    tmp_path: Path, alertmanager_bin_dir: Path, sink: CaptureSink, pager: CaptureSink, token_file: Path
) -> Iterator[Env]:
    port = free_port()
    config = json.loads(
        webhook_config(
            f"http://127.0.0.1:{port}/alertmanager",
            token_file,
            group_by=("namespace", "pod"),
            group_wait="1s",
            group_interval="1s",
            repeat_interval="2s",  # a human is paged again soon once nothing silences the alert
        )
    )
    config["receivers"][0]["webhook_configs"].append({"url": pager.url, "send_resolved": True})
    am = start_alertmanager(json.dumps(config), tmp_path / "alertmanager", bin_dir=alertmanager_bin_dir)
    e = Env(tmp_path, am, port, sink, token_file)
    e.trm_sre.start()
    yield e
    if e.trm_sre.alive():
        assert e.trm_sre.stop() == 0, e.trm_sre.log_tail()
    am.stop()


def test_one_silence_matching_the_alert_extended_then_resolution_polled_and_verified(env: Env) -> None:
    pod = "cart-7f9c6d5b8-x2k4q"
    decision_id, starts = env.fire("shop", pod)
    wait_until("a silence for the alert", lambda: env.active_silences_for(pod), 60, env.trm_sre)
    silences = env.silences_for(pod)
    assert len(silences) == 1, silences
    silence = silences[0]
    labels = crashloop_alert("shop", pod, starts)["labels"]
    assert sorted((m["name"], m["value"], m["isEqual"], m["isRegex"]) for m in silence["matchers"]) == sorted(
        (k, v, True, False) for k, v in labels.items()
    )
    assert silence["createdBy"] == "trm-sre/shop/quick"
    assert decision_id in silence["comment"] and "pod-restart" in silence["comment"]
    assert f"/decisions/{decision_id}" in silence["comment"]
    # amtool, Alertmanager's own client, sees it and says it matches the alert.
    query = env.am.amtool("silence", "query", "-o", "json", *(f"{k}={v}" for k, v in labels.items()))
    assert [s["id"] for s in json.loads(query.stdout)] == [silence["id"]]
    wait_until(
        "the alert suppressed by it",
        lambda: silence["id"] in (env.alert(pod) or {}).get("status", {}).get("silencedBy", []),
        30,
        env.trm_sre,
    )
    assert env.decision(decision_id)["silence"]["silenceId"] == silence["id"]

    # Still firing, within the cooldown: the 4 s silence is extended in place (same id, later end).
    wait_until(
        "the silence extended",
        lambda: env.metric("agent_sre_silences_total", result="extended") >= 1,
        60,
        env.trm_sre,
    )
    extended = env.active_silences_for(pod)
    assert [s["id"] for s in extended] == [silence["id"]]
    assert extended[0]["endsAt"] > silence["endsAt"] and extended[0]["startsAt"] == silence["startsAt"]

    # Resolved under the silence: Alertmanager sends trm-sre no resolution (alertmanager#226); the poll sees it.
    env.am.post_alerts([crashloop_alert("shop", pod, starts, ends_at=now_rfc3339())])

    def verified() -> bool:
        v = env.decision(decision_id)["verification"]
        return v is not None and v["state"] not in ("pending", "resolved")

    wait_until("the outcome", verified, 90, env.trm_sre)
    d = env.decision(decision_id)
    assert d["verification"]["state"] == "verified", d["verification"]
    assert d["silence"]["resolutionSource"] == "alertmanager-poll", d["silence"]
    assert d["incident"]["resolved"] is False  # the webhook never said so: only the poll knew
    # Verified: the silence is expired, none left behind.
    wait_until("the silence expired", lambda: d_state(env, decision_id) == "expired", 30, env.trm_sre)
    assert env.active_silences_for(pod) == []
    assert [s["status"]["state"] for s in env.silences_for(pod)] == ["expired"]
    assert env.metric("agent_sre_silences_total", result="created") == 1
    assert env.metric("agent_sre_silences_total", result="expired") == 1
    # trm-sre explain, reading the store, shows it too.
    explained = subprocess.run(
        [sys.executable, "-m", "controller", "explain", decision_id, "--state-dir", str(env.state_dir)],
        cwd=REPO,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert explained.returncode == 0, explained.stderr
    line = next(x for x in explained.stdout.splitlines() if x.strip().startswith("silence:"))
    assert f"expired {silence['id']}" in line and "alertmanager-poll" in line, explained.stdout


def d_state(env: Env, decision_id: str) -> str | None:
    s = env.decision(decision_id).get("silence")
    return None if s is None else s["state"]


def test_a_lambda_error_expires_the_silence_and_the_alert_pages_again(env: Env, pager: CaptureSink) -> None:
    pod = "db-7f9c6d5b8-zxcvb"
    decision_id, _ = env.fire("pay", pod)
    wait_until("a silence for the alert", lambda: env.active_silences_for(pod), 60, env.trm_sre)
    silence_id = env.active_silences_for(pod)[0]["id"]
    error_event = {
        "specversion": "1.0",
        "id": "resp-1",
        "source": "/lambda/pod-restart",
        "type": LAMBDA_RESPONSE_ERROR,
        "datacontenttype": "application/json",
        "data": {"functionName": "pod-restart", "correlationId": decision_id, "error": {"message": "forbidden"}},
    }
    request = urllib.request.Request(f"{env.trm_sre.url}/events", json.dumps(error_event).encode(), method="POST")
    request.add_header("Content-Type", "application/cloudevents+json")
    request.add_header("Authorization", f"Bearer {env.token}")
    with urllib.request.urlopen(request, timeout=15) as response:
        assert response.status == 202
    wait_until("the silence expired", lambda: not env.active_silences_for(pod), 60, env.trm_sre)
    assert [s["id"] for s in env.silences_for(pod)] == [silence_id]
    assert env.silences_for(pod)[0]["status"]["state"] == "expired"
    assert env.decision(decision_id)["silence"]["reason"] == "the lambda answered with an error"
    # The human is paged again: Alertmanager notifies its receivers of the alert once more.
    seen = len(pager.requests)

    def paged() -> bool:
        return any(pod in r.body.decode() for r in pager.requests[seen:])

    wait_until("the alert notified again", paged, 60, env.trm_sre)
    alert = env.alert(pod)
    assert alert is not None and alert["status"]["state"] == "active" and alert["status"]["silencedBy"] == []


def test_a_crash_between_creating_and_storing_adopts_the_silence(env: Env, tmp_path: Path) -> None:
    assert env.trm_sre.stop() == 0, env.trm_sre.log_tail()
    env.trm_sre.env["TRM_SRE_TEST_SILENCE_CRASH_MARKER"] = str(env.marker)
    env.trm_sre.start()
    pod = "api-7f9c6d5b8-qwert"
    env.am.post_alerts([crashloop_alert("shop", pod, now_rfc3339())])
    wait_until("the crash after creating", lambda: env.marker.exists() and not env.trm_sre.alive(), 60, None)
    crashed_decision, crashed_silence = env.marker.read_text().split()
    assert [s["id"] for s in env.active_silences_for(pod)] == [crashed_silence]

    env.trm_sre.start()  # the marker exists: no second crash
    wait_until(
        "the silence stored",
        lambda: (env.decision(crashed_decision).get("silence") or {}).get("silenceId") == crashed_silence,
        60,
        env.trm_sre,
    )
    assert [s["id"] for s in env.silences_for(pod)] == [crashed_silence]


def test_dry_run_and_pending_approval_create_no_silence(env: Env) -> None:
    env.am.post_alerts([crashloop_alert("dry", "dry-7f9c6d5b8-aaaaa", now_rfc3339())])
    env.am.post_alerts([crashloop_alert("appr", "appr-7f9c6d5b8-bbbbb", now_rfc3339())])
    wait_until(
        "the approval requested",
        lambda: env.sink.accepted_of(APPROVAL_REQUESTED),
        60,
        env.trm_sre,
    )
    wait_until(
        "the dry run decided",
        lambda: env.metric("agent_sre_policy_actions_total", action="dry_run") >= 1,
        60,
        env.trm_sre,
    )
    approval_decision = env.sink.accepted_of(APPROVAL_REQUESTED)[0].headers["ce-correlationid"]
    # A delivered trigger after them gets its silence: the silence loop has looked at everything before it.
    env.fire("shop", "later-7f9c6d5b8-ccccc")
    wait_until("the later silence", lambda: env.active_silences_for("later-7f9c6d5b8-ccccc"), 60, env.trm_sre)
    assert env.silences_for("dry-7f9c6d5b8-aaaaa") == []
    assert env.silences_for("appr-7f9c6d5b8-bbbbb") == []
    assert env.decision(approval_decision)["silence"] is None
    assert env.metric("agent_sre_silences_total", result="created") == 1


def test_an_unreachable_alertmanager_never_blocks_the_trigger(tmp_path: Path, sink: CaptureSink) -> None:
    token = tmp_path / "token"
    token.write_text(secrets.token_hex(16) + "\n")
    policy = tmp_path / "shop.yaml"
    policy.write_text(POLICIES["shop"])
    proc = ControllerProcess(
        [
            "--standalone",
            "--port",
            str(free_port()),
            "--no-model",
            "--state-dir",
            str(tmp_path / "state"),
            "--token-file",
            str(token),
            "--alertmanager-url",
            f"http://127.0.0.1:{free_port()}",  # nothing listens there
            "--policies",
            str(policy),
        ],
        child_env(K_SINK=sink.url, TRM_SRE_ENGINE__SILENCE_INTERVAL_S="0.5"),
        tmp_path / "trm-sre.log",
    )
    proc.start()
    try:
        payload = crashloop_payload("cart-7f9c6d5b8-x2k4q")
        payload["alerts"][0]["labels"]["namespace"] = "shop"
        payload["alerts"][0]["labels"]["severity"] = "warning"
        status, body = http("POST", f"{proc.url}/alertmanager", payload, token=token.read_text().strip())
        assert status == 200, body
        wait_until("the trigger", lambda: sink.accepted_of(LAMBDA_TRIGGER), 60, proc)
        decision_id = sink.accepted_of(LAMBDA_TRIGGER)[0].headers["ce-correlationid"]

        def failed_silence() -> bool:
            status, text = http("GET", f"{proc.url}/metrics")
            return status == 200 and metric_value(text, "agent_sre_silences_total", result="failed") >= 1

        wait_until("a failed silence attempt", failed_silence, 60, proc)
        status, d = http("GET", f"{proc.url}/decisions/{decision_id}", token=token.read_text().strip())
        assert status == 200, d
        assert d["state"] == "triggered", d
        assert [(x["type"], x["state"]) for x in d["deliveries"]] == [(LAMBDA_TRIGGER, "delivered")], d
        assert d["silence"] is None
        assert d["verification"]["state"] == "pending"
    finally:
        assert proc.stop() == 0, proc.log_tail()
