"""Shadow mode end to end: a real Alertmanager notifies a real trm-sre running a live policy and a Shadow one.

The Shadow policy outranks the live one and would restart pods too; only the
live policy's triggers may reach the loopback capture sink. Its decisions are
compared with the ground truth (the rule author's annotation, the live
trigger's outcome) and counted in `/metrics`; then `trm-sre eval --from-store`
reads the state directory the controller is writing and prints the same
counts. Every wait is for a state, never a fixed sleep.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.schemas.decision import LAMBDA_TRIGGER
from tests.e2e.harness import (
    REPO,
    ControllerProcess,
    child_env,
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

LIVE = crashloop_restart_policy(
    "quick", "shop", "{cooldownSeconds: 0, verify: {windowSeconds: 15, recurrenceSeconds: 3}}"
)
SHADOW = """\
apiVersion: remediation.homelab.io/v1alpha1
kind: RemediationPolicy
metadata: {name: quick-shadow, namespace: shop}
spec:
  mode: Shadow
  priority: 1000
  match: {alertNames: [KubePodCrashLooping]}
  targetNamespaces: [shop]
  allowedFunctions: [pod-restart, pod-check-status]
  chain:
    - rules:
        - match: {matchers: [{label: pod, op: "=~", value: "check-.*"}]}
          function: pod-check-status
          parameters: {name: "{{ $labels.pod }}", namespace: "{{ $labels.namespace }}"}
        - match: {matchers: [{label: pod, op: "=~", value: "(cart|web)-.*"}]}
          function: pod-restart
          parameters: {name: "{{ $labels.pod }}", namespace: "{{ $labels.namespace }}", type: pod}
"""
NO_ACTION = {"lambda_function": "none"}


@pytest.fixture
def trm_sre(tmp_path: Path, sink: CaptureSink, token_file: Path) -> Iterator[ControllerProcess]:
    proc = judging_controller(tmp_path, sink.url, token_file, {"live": LIVE, "shadow": SHADOW})
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


def test_a_shadow_policy_emits_nothing_and_measures_itself(
    trm_sre: ControllerProcess, alertmanager: Alertmanager, sink: CaptureSink, tmp_path: Path
) -> None:
    def shadow_count(agreement: str, stage: str = "rules") -> float:
        status, text = http("GET", f"{trm_sre.url}/metrics")
        assert status == 200
        labels = {"policy": "shop/quick-shadow", "stage": stage, "agreement": agreement}
        return metric_value(text, "agent_sre_shadow_decisions_total", **labels)

    starts = now_rfc3339()
    alerts = {
        "cart-7f9c6d5b8-x2k4q": None,  # restarted, resolves: verified; the shadow would restart it too
        "check-7f9c6d5b8-qwert": None,  # the shadow would only check it; the live restart is ineffective
        "web-6d4cf56db6-abcde": NO_ACTION,  # the author says no action; the shadow would restart it
        "idle-6d4cf56db6-fghij": NO_ACTION,  # the author says no action; the shadow has no rule for it
    }
    alertmanager.post_alerts([crashloop_alert("shop", pod, starts, annotations=a) for pod, a in alerts.items()])
    wait_until("four live triggers", lambda: len(sink.accepted_of(LAMBDA_TRIGGER)) == 4, 60, trm_sre)
    alertmanager.post_alerts([crashloop_alert("shop", "cart-7f9c6d5b8-x2k4q", starts, ends_at=now_rfc3339())])

    wait_until("the annotated alerts compared", lambda: shadow_count("shadow_only_action") == 1, 60, trm_sre)
    wait_until("the verified restart compared", lambda: shadow_count("agree") == 1, 90, trm_sre)
    wait_until("the ineffective restart compared", lambda: shadow_count("disagree_function") == 1, 90, trm_sre)
    assert shadow_count("both_abstain", stage="none") == 1
    # Nothing but the live policy's four triggers ever reached the sink.
    assert len(sink.requests) == 4
    assert {r.data()["policy"] for r in sink.requests} == {"shop/quick"}

    report = subprocess.run(
        [sys.executable, "-m", "controller", "eval", "--from-store", "--state-dir", str(tmp_path / "state"), "--json"],
        cwd=REPO,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    shadow = json.loads(report.stdout)["shadow"]
    assert shadow["counts"] == {
        "agree": 1,
        "disagree_function": 1,
        "disagree_parameters": 0,
        "shadow_only_action": 1,
        "live_only_action": 0,
        "both_abstain": 1,
    }
    assert shadow["truth_sources"] == {"annotation": 2, "outcome": 2}
    assert shadow["precision_vs_verified_outcomes"]["precision"] == 1.0
