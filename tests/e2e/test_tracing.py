"""One trace per alert, end to end, against a real OpenTelemetry Collector (issue #18).

The controller runs as a real child process (`python -m controller run
--standalone`), configured only by the standard OTEL_* variables; the
collector (built from the Go module proxy by tests/envtest/build.sh) receives
OTLP/HTTP on loopback and writes what it got to a JSON file, which the tests
read back. The sink is a real HTTP CloudEvents sink on loopback.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from controller.schemas.alerts import ALERT_FIRED
from controller.schemas.decision import LAMBDA_RESPONSE_SUCCESS, LAMBDA_TRIGGER
from tests.e2e.harness import REPO, ControllerProcess, child_env, fixture_payload, http, wait_until
from tests.envtest.controlplane import free_port
from tests.envtest.otelcol import Collector, Span
from tests.pipeline.sink import CaptureSink

pytestmark = pytest.mark.slow

SPAN_KIND_SERVER = 2


def start(tmp_path: Path, *args: str, **env: str | None) -> ControllerProcess:
    proc = ControllerProcess(
        ["--standalone", "--port", "0", *args],
        child_env(
            XDG_DATA_HOME=str(tmp_path / "data"),
            OTEL_SERVICE_NAME="trm-sre-test",
            OTEL_BSP_SCHEDULE_DELAY="100",  # export every 100 ms: the test waits less
            **env,
        ),
        tmp_path / "trm-sre.log",
    )
    proc.start()
    return proc


def traced_env(collector: Collector) -> dict[str, str]:
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint}


def post_cloudevent(url: str, ce_type: str, data: dict[str, Any], **headers: str) -> tuple[int, Any]:
    """A binary-mode CloudEvent, as a Knative broker delivers it."""
    request = urllib.request.Request(f"{url}/events", data=json.dumps(data).encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    request.add_header("ce-specversion", "1.0")
    request.add_header("ce-id", secrets.token_hex(8))
    request.add_header("ce-source", "/test/prometheus-events")
    request.add_header("ce-type", ce_type)
    for name, value in headers.items():
        request.add_header(name.replace("_", "-"), value)
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def crashloop_alert() -> dict[str, Any]:
    return fixture_payload("crashloop.json")["alerts"][0]


def new_traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def spans_of(collector: Collector, trace_id: str) -> list[Span]:
    return [s for s in collector.spans() if s.trace_id == trace_id]


def names(spans: list[Span]) -> set[str]:
    return {s.name for s in spans}


def one(spans: list[Span], name: str) -> Span:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


def test_a_cloudevent_with_a_traceparent_is_one_trace_from_ingest_to_delivery(
    tmp_path: Path, sink: CaptureSink, otel_collector: Collector
) -> None:
    proc = start(tmp_path, K_SINK=sink.url, **traced_env(otel_collector))
    traceparent, trace_id, caller_span = new_traceparent()
    try:
        assert '"message": "tracing on"' in proc.log_text()
        status, body = post_cloudevent(proc.url, ALERT_FIRED, crashloop_alert(), ce_traceparent=traceparent)
        assert status == 202, body
        wait_until("the trigger at the sink", lambda: sink.accepted_of(LAMBDA_TRIGGER), 60, proc)
        (trigger,) = sink.accepted_of(LAMBDA_TRIGGER)
        event = trigger.cloudevent()
        # The emitted CloudEvent carries the incoming trace (distributed-tracing extension).
        assert event.get_extension("traceparent").split("-")[1] == trace_id
        decision_id = event.get_extension("correlationid")

        want = {
            f"receive {ALERT_FIRED}",
            "store.commit",
            "decision",
            "policy.match",
            "chain",
            "stage staticAnnotation",
            "validation",
            "guards",
            "outbox.commit",
            "delivery",
            "delivery.attempt",
        }
        wait_until(
            "every stage's span at the collector",
            lambda: want <= names(spans_of(otel_collector, trace_id)),
            30,
            proc,
        )
        spans = spans_of(otel_collector, trace_id)
        assert {s.service for s in spans} == {"trm-sre-test"}
        receive = one(spans, f"receive {ALERT_FIRED}")
        assert receive.parent_span_id == caller_span  # the incoming context is the parent
        assert receive.kind == SPAN_KIND_SERVER
        decision = one(spans, "decision")
        assert decision.parent_span_id == receive.span_id
        assert decision.attributes["trm_sre.decision.id"] == decision_id
        for child in ("policy.match", "chain", "outbox.commit"):
            assert one(spans, child).parent_span_id == decision.span_id, child
        assert one(spans, "guards").parent_span_id == one(spans, "outbox.commit").span_id
        assert one(spans, "store.commit").parent_span_id == receive.span_id

        # Every stage of the decision's own trace is a span under the chain span, with its outcome and latency.
        status, history = http("GET", f"{proc.url}/decisions/{decision_id}")
        assert status == 200
        assert history["trace_id"] == trace_id
        chain = one(spans, "chain")
        for stage in history["trace"]:
            span = one(spans, f"stage {stage['stage']}")
            assert span.parent_span_id == chain.span_id
            assert span.attributes["trm_sre.stage.outcome"] == stage["outcome"]
            assert span.attributes["trm_sre.stage.latency_ms"] == pytest.approx(stage["latency_ms"])
            if stage["stage"] == "trm" and " steps; " in stage["reason"]:
                assert span.attributes["trm_sre.trm.steps"] == int(stage["reason"].split(" ")[0])
            if stage.get("confidence") is not None:
                assert span.attributes["trm_sre.stage.confidence"] == pytest.approx(stage["confidence"])
        accepted = one(spans, f"stage {history['stage']}")
        validations = [s for s in spans if s.name == "validation" and s.parent_span_id == accepted.span_id]
        assert [v.attributes["trm_sre.validation.result"] for v in validations] == ["valid"]

        # Each delivery attempt is a span under the delivery, which continues the decision's trace.
        delivery = one(spans, "delivery")
        assert delivery.attributes["cloudevents.event_id"] == event.get_id()
        assert one(spans, "delivery.attempt").parent_span_id == delivery.span_id
        assert one(spans, "delivery.attempt").attributes["http.response.status_code"] == 202
        assert trigger.headers["traceparent"].split("-")[1] == trace_id  # the HTTP request's own context

        # Log lines carry the trace id.
        logged = [json.loads(line) for line in proc.log_text().splitlines() if line.startswith("{")]
        assert any(e.get("trace_id") == trace_id and e["message"] == "decision committed" for e in logged)

        # A lambda response carrying the trigger's context lands in the decision's trace.
        status, body = post_cloudevent(
            proc.url,
            LAMBDA_RESPONSE_SUCCESS,
            {"correlationId": decision_id, "functionName": "pod-restart", "result": "restarted"},
            ce_traceparent=event.get_extension("traceparent"),
        )
        assert status == 202, body
        wait_until(
            "the lambda response's span",
            lambda: f"receive {LAMBDA_RESPONSE_SUCCESS}" in names(spans_of(otel_collector, trace_id)),
            30,
            proc,
        )
        response = one(spans_of(otel_collector, trace_id), f"receive {LAMBDA_RESPONSE_SUCCESS}")
        assert response.parent_span_id == decision.span_id
        assert response.attributes["trm_sre.decision.id"] == decision_id

        # Alertmanager-style re-send of the same incident in a new trace: its ingest links to the decision's trace.
        resend_parent, resend_trace, _ = new_traceparent()
        status, body = post_cloudevent(proc.url, ALERT_FIRED, crashloop_alert(), ce_traceparent=resend_parent)
        assert status == 202, body
        assert body["result"]["duplicates"] == 1
        wait_until(
            "the re-send's span",
            lambda: f"receive {ALERT_FIRED}" in names(spans_of(otel_collector, resend_trace)),
            30,
            proc,
        )
        resend = one(spans_of(otel_collector, resend_trace), f"receive {ALERT_FIRED}")
        assert {(link["trace_id"], link["span_id"]) for link in resend.links} == {(trace_id, decision.span_id)}
        assert "decision" not in names(spans_of(otel_collector, resend_trace))  # decided once

        # `trm-sre explain` shows the trace id too.
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
        assert f"trace:    {trace_id}" in explained.stdout

        # Exemplars: the stage latency histogram points at this trace (OpenMetrics exposition).
        request = urllib.request.Request(f"{proc.url}/metrics", headers={"Accept": "application/openmetrics-text"})
        with urllib.request.urlopen(request, timeout=15) as answer:
            assert answer.headers["content-type"].startswith("application/openmetrics-text")
            metrics = answer.read().decode()
        assert any(
            line.startswith("agent_sre_stage_duration_seconds_bucket") and f'trace_id="{trace_id}"' in line
            for line in metrics.splitlines()
        )
        # The seed's reasoning metrics; GPU utilization only when the model runs on a GPU (absent, not zero).
        status, text = http("GET", f"{proc.url}/metrics")
        assert status == 200
        for name in (
            "agent_reasoning_requests_total",
            "agent_reasoning_duration_seconds",
            "agent_reasoning_steps",
            "agent_reasoning_confidence",
        ):
            assert f"# TYPE {name} " in text, name
        trm_ran = any(s["stage"] == "trm" and " steps; " in s["reason"] for s in history["trace"])
        assert ('agent_reasoning_steps_count{task_type="remediation"}' in text) == trm_ran
        on_gpu = '"device": "cuda' in proc.log_text()
        assert ("agent_reasoning_gpu_utilization" in text) == on_gpu
    finally:
        assert proc.stop() == 0, proc.log_tail()


def test_an_alertmanager_webhook_starts_a_new_trace(
    tmp_path: Path, sink: CaptureSink, otel_collector: Collector
) -> None:
    proc = start(tmp_path, "--no-model", K_SINK=sink.url, **traced_env(otel_collector))
    try:
        status, body = http("POST", f"{proc.url}/alertmanager", fixture_payload("crashloop.json"))
        assert status == 200, body
        wait_until("the trigger at the sink", lambda: sink.accepted_of(LAMBDA_TRIGGER), 60, proc)
        (trigger,) = sink.accepted_of(LAMBDA_TRIGGER)
        trace_id = trigger.cloudevent().get_extension("traceparent").split("-")[1]
        wait_until(
            "the delivery's span",
            lambda: "delivery.attempt" in names(spans_of(otel_collector, trace_id)),
            30,
            proc,
        )
        spans = spans_of(otel_collector, trace_id)
        root = one(spans, "receive alertmanager")
        assert root.parent_span_id == ""  # nobody sent a context: a new trace starts here
        assert one(spans, "decision").parent_span_id == root.span_id
        assert {"stage staticAnnotation", "stage rules", "guards", "outbox.commit", "delivery"} <= names(spans)
    finally:
        assert proc.stop() == 0, proc.log_tail()


def test_a_reason_request_is_traced_under_the_callers_traceparent(tmp_path: Path, otel_collector: Collector) -> None:
    proc = start(tmp_path, "--no-model", **traced_env(otel_collector))
    traceparent, trace_id, caller_span = new_traceparent()
    try:
        body = {
            "question": "what should be done?",
            "task_type": "remediation",
            "context": {"alert": {"labels": crashloop_alert()["labels"]}},
        }
        request = urllib.request.Request(
            f"{proc.url}/reason",
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json", "traceparent": traceparent},
        )
        with urllib.request.urlopen(request, timeout=15) as response:
            answer = json.loads(response.read())
        stages = [t["stage"] for t in answer["reasoning_trace"]]
        assert stages
        wait_until(
            "the reason request's spans",
            lambda: {f"stage {s}" for s in stages} <= names(spans_of(otel_collector, trace_id)),
            30,
            proc,
        )
        spans = spans_of(otel_collector, trace_id)
        reason = one(spans, "reason")
        assert reason.parent_span_id == caller_span
        assert all(one(spans, f"stage {s}").parent_span_id == reason.span_id for s in stages)
        assert "decision" not in names(spans)  # nothing decided for real: no side effects
    finally:
        assert proc.stop() == 0, proc.log_tail()


def test_with_the_collector_down_alerts_are_still_accepted_and_delivered(tmp_path: Path, sink: CaptureSink) -> None:
    # An endpoint nobody listens on: every export fails; only spans may be lost.
    proc = start(tmp_path, "--no-model", K_SINK=sink.url, OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{free_port()}")
    try:
        assert '"message": "tracing on"' in proc.log_text()
        for n in range(3):
            payload = fixture_payload("crashloop.json")
            for alert in payload["alerts"]:
                alert["labels"]["pod"] = f"cart-{n}"
                alert["fingerprint"] = ""
            status, body = http("POST", f"{proc.url}/alertmanager", payload)
            assert status == 200, body
            assert body["new_incidents"] == 1
        traceparent, trace_id, _ = new_traceparent()
        status, body = post_cloudevent(proc.url, ALERT_FIRED, crashloop_alert(), ce_traceparent=traceparent)
        assert status == 202, body
        wait_until("four triggers at the sink", lambda: len(sink.accepted_of(LAMBDA_TRIGGER)) == 4, 60, proc)
        carried = {t.cloudevent().get_extension("traceparent").split("-")[1] for t in sink.accepted_of(LAMBDA_TRIGGER)}
        assert trace_id in carried  # the context still travels on
    finally:
        assert proc.stop() == 0, proc.log_tail()


def test_without_otel_settings_nothing_is_traced(tmp_path: Path, sink: CaptureSink) -> None:
    proc = start(tmp_path, "--no-model", K_SINK=sink.url)
    try:
        assert '"message": "tracing on"' not in proc.log_text()
        traceparent, _, _ = new_traceparent()
        status, body = post_cloudevent(proc.url, ALERT_FIRED, crashloop_alert(), ce_traceparent=traceparent)
        assert status == 202, body
        wait_until("the trigger at the sink", lambda: sink.accepted_of(LAMBDA_TRIGGER), 60, proc)
        (trigger,) = sink.accepted_of(LAMBDA_TRIGGER)
        assert trigger.cloudevent().get_extension("traceparent") is None
        assert "traceparent" not in trigger.headers
        assert '"trace_id"' not in proc.log_text()
        decision_id = trigger.cloudevent().get_extension("correlationid")
        status, history = http("GET", f"{proc.url}/decisions/{decision_id}")
        assert status == 200 and history["trace_id"] is None
    finally:
        assert proc.stop() == 0, proc.log_tail()
