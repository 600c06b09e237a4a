"""SIGTERM: a graceful stop drains what is in flight and exits within the Deployment's grace period (30 s).

`trm-sre run` runs as a real child process. A burst of alerts is accepted
while every decision waits on a slow model (a function-calling stage), so
work is queued and in flight when SIGTERM arrives. The process must:

- exit 0 within 30 s (Kubernetes' default terminationGracePeriodSeconds,
  which deploy/base keeps) although the queue cannot drain in that time;
- finish the decisions it had started (each is triggered before the exit);
- lose nothing accepted: what it could not decide is still in the store, and
  a restart on the same state directory decides it — every accepted alert
  triggered exactly once across both runs, none twice.

(SIGKILL in the middle of a burst is tests/e2e/test_crash_and_outage.py.)
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import yaml

from controller.engine.config import EngineSettings
from controller.schemas.decision import LAMBDA_TRIGGER
from tests.e2e.harness import ControllerProcess, child_env, http, wait_until
from tests.hardening.support import RULES_POLICY, FakeLLM
from tests.pipeline.sink import CaptureSink

GRACE_PERIOD_S = 30
TOKEN = "sigterm-token"
MODEL_DELAY_S = 4.0
# More than the workers can finish in the grace period (each round of decisions takes MODEL_DELAY_S),
# so work is still queued at the exit whatever the worker count.
ALERTS = EngineSettings().workers * (GRACE_PERIOD_S // int(MODEL_DELAY_S) + 1)


def test_the_grace_period_in_deploy_base_is_the_one_tested() -> None:
    deployment = yaml.safe_load(
        (Path(__file__).resolve().parents[2] / "deploy" / "base" / "deployment.yaml").read_text()
    )
    grace = deployment["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
    assert grace >= GRACE_PERIOD_S


def _payload(i: int) -> dict[str, object]:
    alert = {
        "status": "firing",
        "startsAt": "2026-05-01T10:00:00Z",
        "annotations": {},
        "labels": {"alertname": "KubePodCrashLooping", "namespace": "shop", "pod": f"cart-{i}"},
    }
    return {"version": "4", "status": "firing", "receiver": "trm-sre", "alerts": [alert]}


def test_sigterm_drains_in_flight_work_exits_in_the_grace_period_and_loses_nothing(
    tmp_path: Path, sink: CaptureSink
) -> None:
    with FakeLLM({}, delay_s=MODEL_DELAY_S) as llm:
        policy = tmp_path / "policy.yaml"
        policy.write_text(
            RULES_POLICY.replace(
                "  chain:\n",
                "  chain:\n    - functionCalling: "
                f'{{endpoint: "{llm.url}", api: ollama, model: slow, timeoutMs: 20000}}\n',
            )
        )
        args = [
            "--standalone",
            "--no-model",
            "--port",
            "0",
            "--state-dir",
            str(tmp_path / "state"),
            "--policies",
            str(policy),
        ]
        env = child_env(K_SINK=sink.url, TRM_SRE_WEBHOOK_TOKEN=TOKEN)
        first = ControllerProcess(args, env, tmp_path / "first.log")
        url = first.start()
        try:
            for i in range(ALERTS):
                status, body = http("POST", f"{url}/alertmanager", _payload(i), token=TOKEN)
                assert status == 200, body
            wait_until("decisions in flight", lambda: llm.arrivals >= 4, 60, first)
            started_before_term = llm.arrivals

            first.signal(signal.SIGTERM)
            signalled = time.monotonic()
            try:
                code = first.popen.wait(GRACE_PERIOD_S)  # type: ignore[union-attr]
            except subprocess.TimeoutExpired:
                raise AssertionError(f"still running {GRACE_PERIOD_S} s after SIGTERM:\n{first.log_tail()}") from None
            print(f"exited {time.monotonic() - signalled:.1f} s after SIGTERM")
        finally:
            first.stop()
        assert code == 0, first.log_tail()
        log = first.log_text()
        assert '"stopped"' in log or "stopped" in log
        assert "Traceback" not in log

        delivered_by_first = sink.accepted_ids(LAMBDA_TRIGGER)
        # Every decision that had started when SIGTERM came was finished and delivered before the exit.
        assert len(delivered_by_first) >= started_before_term
        assert len(delivered_by_first) < ALERTS  # the queue could not drain in the grace period: a real test

        llm.delay_s = 0.0
        second = ControllerProcess(args, env, tmp_path / "second.log")
        url = second.start()
        try:
            wait_until(
                "every accepted alert triggered",
                lambda: len(set(sink.accepted_ids(LAMBDA_TRIGGER))) >= ALERTS,
                90,
                second,
            )
            time.sleep(1)  # a duplicate would have arrived by now
        finally:
            assert second.stop() == 0, second.log_tail()

    triggers = sink.accepted_ids(LAMBDA_TRIGGER)
    assert len(triggers) == len(set(triggers)) == ALERTS  # each accepted alert once, across both runs
    pods = sorted(r.data()["parameters"]["name"] for r in sink.accepted_of(LAMBDA_TRIGGER))
    assert pods == sorted(f"cart-{i}" for i in range(ALERTS))
