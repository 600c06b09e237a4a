"""The README's first steps, as a user runs them: `python -m controller run --standalone` and a curl.

No policy file (the embedded default policy), no state dir (the user data dir:
XDG_DATA_HOME points it into the test's temp dir), no model flag (whatever
checkpoint is shipped is loaded, or the TRM stage hands over). Only `--port 0`
is added, so the test never fights another process for port 8080.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from controller.schemas.decision import LAMBDA_TRIGGER
from tests.e2e.harness import (
    REPO,
    ControllerProcess,
    child_env,
    fixture_payload,
    http,
    wait_until,
)
from tests.pipeline.sink import CaptureSink

pytestmark = pytest.mark.slow

EXPECTED_PARAMETERS = {"name": "cart-7f9c6d5b8-x2k4q", "namespace": "shop", "type": "pod"}


def start(tmp_path: Path, **env: str | None) -> ControllerProcess:
    proc = ControllerProcess(
        ["--standalone", "--port", "0"],
        child_env(XDG_DATA_HOME=str(tmp_path / "data"), **env),
        tmp_path / "trm-sre.log",
    )
    proc.start()
    return proc


def test_a_crashloop_alert_reaches_k_sink(tmp_path: Path, sink: CaptureSink) -> None:
    # K_CE_OVERRIDES as a Knative SinkBinding sets it: extensions added to every event.
    proc = start(tmp_path, K_SINK=sink.url, K_CE_OVERRIDES='{"extensions": {"cluster": "homelab"}}')
    try:
        assert f"triggers go to: {sink.url}" in proc.log_text()
        status, body = http("POST", f"{proc.url}/alertmanager", fixture_payload("crashloop.json"))
        assert status == 200, body
        assert body["new_incidents"] == 1
        wait_until("the trigger at K_SINK", lambda: sink.accepted_of(LAMBDA_TRIGGER), 60, proc)
        (trigger,) = sink.accepted_of(LAMBDA_TRIGGER)
        event = trigger.cloudevent()
        assert trigger.headers["content-type"] == "application/json"  # binary mode
        assert event.get_source() == "/trm-sre"
        assert event.get_extension("cluster") == "homelab"
        data = event.get_data()
        assert data["lambda_function"] == "pod-restart"
        assert data["parameters"] == EXPECTED_PARAMETERS
        decision_id = event.get_extension("correlationid")
        assert event.get_id() == f"{decision_id}-trigger"

        # Must show: the decision's trace, from the API and from `trm-sre explain`.
        status, decision = http("GET", f"{proc.url}/decisions/{decision_id}")
        assert status == 200
        # The TRM decides when a checkpoint is shipped and confident; otherwise the rules do.
        stages = [t["stage"] for t in decision["trace"]]
        assert stages in (["staticAnnotation", "trm"], ["staticAnnotation", "trm", "rules"])
        assert decision["trace"][-1]["outcome"] == "accepted"
        assert decision["stage"] == stages[-1]
        explained = subprocess.run(
            [sys.executable, "-m", "controller", "explain", decision_id],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
            env=child_env(XDG_DATA_HOME=str(tmp_path / "data")),
            timeout=120,
        )
        assert explained.returncode == 0, explained.stderr
        assert f"decision {decision_id}" in explained.stdout
        assert "1. staticAnnotation" in explained.stdout and "2. trm" in explained.stdout
        assert "accepted" in explained.stdout
        assert "trigger pod-restart name=cart-7f9c6d5b8-x2k4q namespace=shop type=pod" in explained.stdout
    finally:
        assert proc.stop() == 0, proc.log_tail()
    assert '"message": "stopped"' in proc.log_text()  # SIGTERM: a graceful stop


def test_without_k_sink_triggers_go_to_the_jsonl_file(tmp_path: Path) -> None:
    proc = start(tmp_path)
    triggers = tmp_path / "data" / "trm-sre" / "triggers.jsonl"
    try:
        assert f"triggers go to: file {triggers}" in proc.log_text()
        status, _ = http("POST", f"{proc.url}/alertmanager", fixture_payload("crashloop.json"))
        assert status == 200
        wait_until("a line in triggers.jsonl", lambda: triggers.exists() and triggers.read_text().strip(), 60, proc)
    finally:
        assert proc.stop() == 0, proc.log_tail()
    (line,) = triggers.read_text().splitlines()
    event = json.loads(line)
    assert event["type"] == LAMBDA_TRIGGER
    assert event["data"]["lambda_function"] == "pod-restart"
    assert event["data"]["parameters"] == EXPECTED_PARAMETERS
