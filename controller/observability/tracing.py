"""OpenTelemetry tracing: one trace per alert, from the request that brought it to each delivery attempt.

Configured the standard way, by the OpenTelemetry environment variables the
SDK reads (`OTEL_TRACES_EXPORTER`, `OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_SERVICE_NAME`,
`OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`, `OTEL_SDK_DISABLED`). Tracing is OFF
unless an exporter is named or an OTLP endpoint is set: then every hook here
is a check of one module attribute, no span is built and nothing is
exported. The app calls `configure()` when it starts and `shutdown()` when it
stops; the state is this module's, not the OpenTelemetry global provider
(which can be set once per process), so tests can start and stop apps.

Spans leave through a `BatchSpanProcessor` (a bounded queue, `OTEL_BSP_MAX_QUEUE_SIZE`,
exported from its own thread): a slow or dead collector costs dropped spans,
never time on the alert's path. The exporter is OTLP over HTTP/protobuf
(`opentelemetry-exporter-otlp-proto-http`); `console` prints spans (debugging).

Context crosses three boundaries: W3C `traceparent`/`tracestate` in, from an
HTTP header or a CloudEvent's distributed-tracing extension (`extract`); out,
as the same extension on every CloudEvent we emit (`carrier`); and from the
request that stored an alert to the worker that decides it later (a
`SpanContext` kept with the queued work, `context_of`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from controller.schemas.decision import StageOutcome, StageTrace

log = logging.getLogger(__name__)

SCOPE = "trm-sre"
DEFAULT_SERVICE_NAME = "trm-sre"
_PROPAGATOR = TraceContextTextMapPropagator()

# The module's state: None = tracing is off (the default).
_provider: Any = None
_tracer: trace.Tracer | None = None


def exporters_from_env(environ: Mapping[str, str] | None = None) -> list[str]:
    """The trace exporters the environment asks for; [] = tracing off.

    Unlike the SDK's own default (otlp), nothing configured means off: an
    exporter must be named (OTEL_TRACES_EXPORTER) or an OTLP endpoint set.
    """
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    named = [e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "").split(",") if e.strip()]
    if not named and (env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")):
        named = ["otlp"]
    return [e for e in named if e != "none"]


def configure() -> bool:
    """Start tracing if the environment configures it (see the module docstring); True when on."""
    shutdown()
    exporters = exporters_from_env()
    if not exporters:
        return False
    # Imported only when tracing is on: the SDK and the exporter cost nothing to a process that does not trace.
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    span_exporters: list[SpanExporter] = []
    for name in exporters:
        if name == "otlp":
            protocol = os.environ.get(
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
            )
            if protocol != "http/protobuf":
                log.warning("OTLP protocol %r is not supported; traces are sent as http/protobuf", protocol)
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            span_exporters.append(OTLPSpanExporter())
        elif name == "console":
            span_exporters.append(ConsoleSpanExporter())
        else:
            log.warning("trace exporter %r is not supported (otlp, console, none); ignored", name)
    if not span_exporters:
        return False
    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; ours is only the fallback name.
    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: DEFAULT_SERVICE_NAME}
    provider = TracerProvider(
        resource=Resource.create(attributes), shutdown_on_exit=False
    )  # sampler: OTEL_TRACES_SAMPLER
    for exporter in span_exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    global _provider, _tracer
    _provider = provider
    _tracer = provider.get_tracer(SCOPE)
    log.info(
        "tracing on",
        extra={
            "exporters": exporters,
            "endpoint": os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"),
            "sampler": os.environ.get("OTEL_TRACES_SAMPLER", "parentbased_always_on"),
        },
    )
    return True


def shutdown(timeout_ms: int = 5000) -> None:
    """Flush what is queued (bounded by `timeout_ms`) and turn tracing off."""
    global _provider, _tracer
    provider, _provider, _tracer = _provider, None, None
    if provider is None:
        return
    try:
        provider.force_flush(timeout_ms)
        provider.shutdown()
    except Exception:
        log.warning("tracing did not shut down cleanly", exc_info=True)


def enabled() -> bool:
    return _tracer is not None


def force_flush(timeout_ms: int = 5000) -> bool:
    """Export what is queued now (tests, benchmarks); True when nothing is left."""
    return True if _provider is None else bool(_provider.force_flush(timeout_ms))


# --- spans


@contextmanager
def span(
    name: str,
    *,
    parent: Context | SpanContext | None = None,
    links: Sequence[Link] = (),
    attributes: Mapping[str, Any] | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
) -> Iterator[Span | None]:
    """A span around the block (current inside it), or nothing at all when tracing is off.

    `parent`: an extracted Context or a kept SpanContext; None = the current span.
    An exception escaping the block marks the span as an error and is re-raised.
    """
    tracer = _tracer
    if tracer is None:
        yield None
        return
    ctx = context_of(parent) if isinstance(parent, SpanContext) else parent
    with tracer.start_as_current_span(name, context=ctx, kind=kind, attributes=attributes, links=links) as current:
        yield current


def context_of(span_context: SpanContext | None) -> Context | None:
    """A Context whose current span is `span_context` (to parent a span on it), or None."""
    if span_context is None or not span_context.is_valid:
        return None
    return trace.set_span_in_context(NonRecordingSpan(span_context))


def current_span_context() -> SpanContext | None:
    """The current span's context, to keep with work that continues elsewhere; None when off or invalid."""
    if _tracer is None:
        return None
    sc = trace.get_current_span().get_span_context()
    return sc if sc.is_valid else None


def set_attributes(attributes: Mapping[str, Any]) -> None:
    """Add attributes to the current span (nothing when off)."""
    if _tracer is None:
        return
    current = trace.get_current_span()
    if current.is_recording():
        current.set_attributes({k: v for k, v in attributes.items() if v is not None})


def add_link(traceparent: str | None, attributes: Mapping[str, Any] | None = None) -> bool:
    """Link the current span to the span a `traceparent` names (a re-send to its incident's trace)."""
    if _tracer is None or not traceparent:
        return False
    ctx = extract(traceparent)
    current = trace.get_current_span()
    if ctx is None or not current.is_recording():
        return False
    current.add_link(trace.get_current_span(ctx).get_span_context(), dict(attributes or {}))
    return True


# --- propagation (W3C trace context; the CloudEvents distributed-tracing extension uses the same two values)


def extract(traceparent: str | None, tracestate: str | None = None) -> Context | None:
    """The remote parent a `traceparent` (and `tracestate`) names; None when absent or malformed."""
    if not traceparent:
        return None
    carrier = {"traceparent": traceparent}
    if tracestate:
        carrier["tracestate"] = tracestate
    ctx = _PROPAGATOR.extract(carrier)
    return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None


def incoming_parent(*candidates: tuple[str | None, str | None]) -> Context | None:
    """The first valid (traceparent, tracestate) pair, in order of preference; None when off or none is."""
    if _tracer is None:
        return None
    for traceparent, tracestate in candidates:
        ctx = extract(traceparent, tracestate)
        if ctx is not None:
            return ctx
    return None


def carrier() -> dict[str, str]:
    """`traceparent` (and `tracestate`) of the current span, for an outgoing event; {} when off."""
    if _tracer is None:
        return {}
    out: dict[str, str] = {}
    _PROPAGATOR.inject(out)
    return out


def trace_id_of(traceparent: str | None) -> str | None:
    """The 32-hex trace id inside a `traceparent`, or None."""
    if not traceparent:
        return None
    parts = traceparent.split("-")
    return parts[1] if len(parts) >= 4 and len(parts[1]) == 32 else None


def exemplar() -> dict[str, str] | None:
    """A Prometheus exemplar for the current sampled span (`trace_id`, `span_id`); None when off."""
    if _tracer is None:
        return None
    sc = trace.get_current_span().get_span_context()
    if not sc.is_valid or not sc.trace_flags.sampled:
        return None
    return {"trace_id": trace.format_trace_id(sc.trace_id), "span_id": trace.format_span_id(sc.span_id)}


# --- the decision chain, recorded after the fact from the Decision's own trace

# Outcomes after which a stage's proposal went through the parser and the validator.
_VALIDATED = frozenset(
    {StageOutcome.ACCEPTED, StageOutcome.INVALID, StageOutcome.DISALLOWED, StageOutcome.BELOW_THRESHOLD}
)
_FAILED = frozenset({StageOutcome.ERROR, StageOutcome.TIMEOUT})


def record_stages(stages: Sequence[StageTrace], started_ns: int, trm_steps: Mapping[int, int] | None = None) -> None:
    """One span per chain stage, children of the current span, laid end to end from `started_ns`.

    The decision core does no I/O (and imports no OpenTelemetry): it reports
    each stage's latency in its trace, and the engine records the spans from
    that. A stage whose proposal was parsed and validated gets a `validation`
    child at its end; its time is part of the stage's (the core does not time
    it apart). `trm_steps`: recursion steps by stage index, where known.
    """
    tracer = _tracer
    if tracer is None:
        return
    at = started_ns
    for stage in stages:
        end = at + max(int(stage.latency_ms * 1_000_000), 0)
        attributes: dict[str, Any] = {
            "trm_sre.stage.name": stage.stage,
            "trm_sre.stage.index": stage.index,
            "trm_sre.stage.outcome": stage.outcome.value,
            "trm_sre.stage.latency_ms": stage.latency_ms,
            "trm_sre.stage.reason": stage.reason[:500],
        }
        if stage.confidence is not None:
            attributes["trm_sre.stage.confidence"] = stage.confidence
        if stage.function:
            attributes["trm_sre.stage.function"] = stage.function
        steps = (trm_steps or {}).get(stage.index)
        if steps is not None:
            attributes["trm_sre.trm.steps"] = steps
        stage_span = tracer.start_span(f"stage {stage.stage}", start_time=at, attributes=attributes)
        if stage.outcome in _FAILED:
            stage_span.set_status(Status(StatusCode.ERROR, stage.reason[:200]))
        if stage.outcome in _VALIDATED:
            validation = tracer.start_span(
                "validation",
                context=trace.set_span_in_context(stage_span),
                start_time=end,
                attributes={
                    "trm_sre.validation.result": "valid" if stage.outcome == StageOutcome.ACCEPTED else "refused",
                    "trm_sre.validation.outcome": stage.outcome.value,
                    "trm_sre.stage.name": stage.stage,
                },
            )
            validation.end(end_time=end)
        stage_span.end(end_time=end)
        at = end
