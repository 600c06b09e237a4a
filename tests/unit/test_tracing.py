"""Tracing without a collector: off by default, the chain's stages as spans, propagation, logs and metrics.

The end-to-end behaviour against a real OpenTelemetry Collector is in
tests/e2e/test_tracing.py; these are the parts that need no process.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from cloudevents.core.bindings.http import to_binary_event, to_structured_event
from cloudevents.core.v1.event import CloudEvent
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from prometheus_client import generate_latest

from controller.edge.cloudevents_in import parse_inbound
from controller.engine.gpu import gpu_utilization_reader
from controller.engine.trace_hooks import steps_in, trm_steps
from controller.observability import tracing
from controller.observability.logging import JsonFormatter
from controller.observability.metrics import Metrics
from controller.schemas.alerts import ALERT_FIRED
from controller.schemas.decision import StageOutcome, StageTrace
from tests.pipeline.engine.builders import alert_dict, payload, sample_decision

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.fixture
def memory_tracing(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Tracing on, with spans kept in memory (the module's state, as `configure()` would set it)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_provider", provider)
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("test"))
    yield exporter
    provider.shutdown()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, []),
        ({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "console"}, ["console"]),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, []),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, []),
    ],
)
def test_tracing_is_on_only_when_an_exporter_is_configured(env: dict[str, str], expected: list[str]) -> None:
    assert tracing.exporters_from_env(env) == expected


def test_off_by_default_every_hook_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert tracing.configure() is False
    assert not tracing.enabled()
    with tracing.span("anything", parent=tracing.extract(TRACEPARENT)) as span:
        assert span is None
        assert tracing.carrier() == {}
        assert tracing.exemplar() is None
        assert tracing.current_span_context() is None
    assert tracing.incoming_parent((TRACEPARENT, None)) is None


def test_configure_starts_and_shutdown_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    try:
        assert tracing.configure() is True
        with tracing.span("x") as span:
            assert span is not None and span.is_recording()
            assert tracing.carrier()["traceparent"].startswith("00-")
    finally:
        tracing.shutdown()
    assert not tracing.enabled()


def test_an_incoming_traceparent_is_the_parent_and_goes_out_again(memory_tracing: InMemorySpanExporter) -> None:
    with tracing.span("receive", parent=tracing.incoming_parent((None, None), (TRACEPARENT, "vendor=1"))):
        out = tracing.carrier()
        assert tracing.exemplar() == {"trace_id": TRACE_ID, "span_id": out["traceparent"].split("-")[2]}
    (span,) = memory_tracing.get_finished_spans()
    assert f"{span.context.trace_id:032x}" == TRACE_ID
    assert f"{span.parent.span_id:016x}" == "00f067aa0ba902b7"
    assert out["traceparent"].split("-")[1] == TRACE_ID and out["tracestate"] == "vendor=1"
    assert tracing.extract("00-not-a-trace-01") is None
    assert tracing.trace_id_of(TRACEPARENT) == TRACE_ID and tracing.trace_id_of(None) is None


def test_stages_become_spans_laid_end_to_end(memory_tracing: InMemorySpanExporter) -> None:
    stages = [
        StageTrace(index=0, stage="staticAnnotation", outcome=StageOutcome.ABSTAINED, reason="no annotation"),
        StageTrace(
            index=1,
            stage="trm",
            outcome=StageOutcome.BELOW_THRESHOLD,
            reason="6 steps; confidence 0.4 below 0.8",
            confidence=0.4,
            latency_ms=3.0,
        ),
        StageTrace(index=2, stage="functionCalling", outcome=StageOutcome.TIMEOUT, reason="late", latency_ms=5.0),
        StageTrace(
            index=3, stage="rules", outcome=StageOutcome.ACCEPTED, reason="rule 1", function="pod-restart", latency_ms=1
        ),
    ]
    decision = sample_decision().model_copy(update={"trace": tuple(stages)})
    with tracing.span("chain"):
        tracing.record_stages(stages, 1_000_000_000, trm_steps(decision))
    spans = {s.name: s for s in memory_tracing.get_finished_spans() if s.name != "validation"}
    chain = spans.pop("chain")
    assert [s.name for s in sorted(spans.values(), key=lambda s: s.start_time)] == [
        "stage staticAnnotation",
        "stage trm",
        "stage functionCalling",
        "stage rules",
    ]
    assert all(s.parent.span_id == chain.context.span_id for s in spans.values())
    trm = spans["stage trm"]
    assert (trm.start_time, trm.end_time) == (1_000_000_000, 1_003_000_000)
    assert trm.attributes["trm_sre.trm.steps"] == 6
    assert trm.attributes["trm_sre.stage.confidence"] == 0.4
    assert trm.attributes["trm_sre.stage.outcome"] == "below_threshold"
    assert spans["stage functionCalling"].status.status_code == trace.StatusCode.ERROR
    assert spans["stage rules"].start_time == 1_008_000_000
    validations = [s for s in memory_tracing.get_finished_spans() if s.name == "validation"]
    by_parent = {v.parent.span_id: v.attributes["trm_sre.validation.result"] for v in validations}
    assert by_parent == {trm.context.span_id: "refused", spans["stage rules"].context.span_id: "valid"}


def test_trm_steps_are_read_from_the_stage_reason() -> None:
    assert steps_in("12 steps; the model proposed no function") == 12
    assert steps_in("the model did not answer within 50 ms") is None


def test_emitted_cloudevents_carry_the_decisions_traceparent() -> None:
    from controller.engine.delivery import escalation_entry, to_cloudevent, trigger_entry

    event = payload(alert_dict())[0]
    traced = sample_decision().model_copy(update={"traceparent": TRACEPARENT})
    for entry in (
        trigger_entry(traced, event, "/trm-sre", None),
        escalation_entry(traced, event, "/trm-sre", None, []),
    ):
        assert to_binary_event(to_cloudevent(entry, {})).headers["ce-traceparent"] == TRACEPARENT
    untraced = trigger_entry(sample_decision(), event, "/trm-sre", None)
    assert "traceparent" not in untraced.attributes


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_an_incoming_cloudevent_keeps_its_trace_context(mode: str) -> None:
    attributes = {
        "type": ALERT_FIRED,
        "source": "/tests",
        "id": "ev-1",
        "datacontenttype": "application/json",
        "traceparent": TRACEPARENT,
        "tracestate": "vendor=1",
    }
    data = {"labels": {"alertname": "KubePodCrashLooping", "pod": "a"}, "startsAt": "2026-05-01T10:00:00Z"}
    event = CloudEvent(attributes=attributes, data=data)
    message = to_binary_event(event) if mode == "binary" else to_structured_event(event)
    envelope = parse_inbound(message.headers, message.body).envelope
    assert (envelope.traceparent, envelope.tracestate) == (TRACEPARENT, "vendor=1")


def test_log_lines_carry_the_current_trace_and_span() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("test-tracing-logs")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("outside")
        context = SpanContext(int(TRACE_ID, 16), 0x00F067AA0BA902B7, is_remote=False, trace_flags=TraceFlags(1))
        with trace.use_span(NonRecordingSpan(context)):
            logger.warning("inside")
    finally:
        logger.removeHandler(handler)
    outside, inside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert "trace_id" not in outside and "span_id" not in outside
    assert (inside["trace_id"], inside["span_id"]) == (TRACE_ID, "00f067aa0ba902b7")


def test_the_seeds_reasoning_metrics_are_exported_and_gpu_only_on_a_gpu() -> None:
    metrics = Metrics()
    metrics.reasoning_requests.labels(task_type="remediation", status="completed").inc()
    metrics.reasoning_duration.labels(task_type="remediation").observe(0.2)
    metrics.observe_trm(6, 0.9)
    text = generate_latest(metrics.registry).decode()
    assert 'agent_reasoning_requests_total{status="completed",task_type="remediation"} 1.0' in text
    assert 'agent_reasoning_duration_seconds_count{task_type="remediation"} 1.0' in text
    assert 'agent_reasoning_steps_bucket{le="6.0",task_type="remediation"} 1.0' in text
    assert 'agent_reasoning_confidence_bucket{le="0.9",task_type="remediation"} 1.0' in text
    assert "agent_reasoning_gpu_utilization" not in text  # a model on the CPU: absent, not zero
    assert gpu_utilization_reader("cpu") is None
    assert callable(gpu_utilization_reader("cuda:0"))
    metrics.enable_gpu_utilization(lambda: 0.42)
    assert "agent_reasoning_gpu_utilization 0.42" in generate_latest(metrics.registry).decode()
