"""CloudEvents in: one HTTP request (binary or structured mode) → one typed inbound event.

Parsing goes through the CloudEvents SDK 2.x (`from_http_event`), which reads
the body as `data` in binary mode — the mode Knative brokers deliver in, and
the one the system we replace lost its data in. We then check that the data
has the shape the event type promises and turn it into a typed value the API
hands to the pipeline. Every refusal is a `CloudEventRejected` whose message
tells the sender what was wrong and what would be accepted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings.http import HTTPMessage, from_http_event
from cloudevents.core.exceptions import BaseCloudEventException
from pydantic import ValidationError

from controller.client import ReasonRequest
from controller.schemas.alerts import ALERT_FIRED, ALERT_RESOLVED, Alert, AlertEvent
from controller.schemas.decision import (
    LAMBDA_RESPONSE_ERROR,
    LAMBDA_RESPONSE_SUCCESS,
    REASONING_REQUESTED,
)

ACCEPTED_TYPES = (ALERT_FIRED, ALERT_RESOLVED, REASONING_REQUESTED, LAMBDA_RESPONSE_SUCCESS, LAMBDA_RESPONSE_ERROR)

STRUCTURED_CONTENT_TYPE = "application/cloudevents"
BATCH_CONTENT_TYPE = "application/cloudevents-batch"


class CloudEventRejected(ValueError):
    """The request is not a CloudEvent we accept; the message says why (answered 400)."""


@dataclass(frozen=True)
class Envelope:
    """The attributes worth keeping from the incoming event."""

    id: str
    source: str
    type: str
    mode: str  # "binary" | "structured"
    correlation_id: str | None  # the `correlationid` extension, if any
    # The distributed-tracing extension (ce-traceparent in binary mode, an attribute in structured mode).
    traceparent: str | None = None
    tracestate: str | None = None


@dataclass(frozen=True)
class InboundAlert:
    envelope: Envelope
    event: AlertEvent


@dataclass(frozen=True)
class InboundReasoning:
    envelope: Envelope
    request: ReasonRequest


@dataclass(frozen=True)
class InboundLambdaResponse:
    envelope: Envelope
    correlation_id: str
    success: bool
    function_name: str | None
    data: dict[str, Any]


Inbound = InboundAlert | InboundReasoning | InboundLambdaResponse


def content_mode(headers: Mapping[str, str]) -> str:
    """The HTTP binding tells modes apart by Content-Type: batched, structured, or else binary."""
    content_type = headers.get("content-type", "").strip().lower()
    if content_type.startswith(BATCH_CONTENT_TYPE):
        return "batched"
    if content_type.startswith(STRUCTURED_CONTENT_TYPE):
        return "structured"
    return "binary"


@dataclass(frozen=True)
class Decoded:
    event: BaseCloudEvent
    mode: str
    # Whether the sender set `time`: the SDK fills in "now" when it is absent, which must not
    # stand in for an alert's start (it would make every retry a new incident).
    sent_time: bool


_REQUIRED = ("specversion", "id", "source", "type")


def read_cloudevent(headers: Mapping[str, str], body: bytes) -> Decoded:
    """Decode the request with the SDK, after checking what the SDK would silently fill in."""
    lowered = {k.lower(): v for k, v in headers.items()}
    mode = content_mode(lowered)
    if mode == "batched":
        raise CloudEventRejected(
            "batched content mode (application/cloudevents-batch+json) is not supported: "
            "send one event per request, in binary or structured mode"
        )
    if mode == "structured":
        try:
            doc = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CloudEventRejected(f"structured CloudEvent body is not valid JSON: {exc}") from exc
        except RecursionError:
            raise CloudEventRejected("structured CloudEvent body is nested too deeply") from None
        if not isinstance(doc, dict):
            raise CloudEventRejected("structured CloudEvent body must be a JSON object")
        _require_unicode(doc, "structured CloudEvent body")
        missing = [name for name in _REQUIRED if not doc.get(name)]
        sent_time = bool(doc.get("time"))
        # Only the body counts in structured mode; drop ce-* headers so the SDK does not read it as binary.
        lowered = {"content-type": lowered["content-type"]}
    else:
        if "ce-specversion" not in lowered:
            raise CloudEventRejected(
                "not a CloudEvent: binary mode needs ce-specversion, ce-id, ce-source and ce-type headers; "
                "structured mode needs Content-Type: application/cloudevents+json"
            )
        missing = [name for name in _REQUIRED if not lowered.get(f"ce-{name}")]
        sent_time = bool(lowered.get("ce-time"))
    if missing:
        raise CloudEventRejected(f"invalid CloudEvent: missing required attribute(s) {', '.join(missing)}")
    try:
        event = from_http_event(HTTPMessage(headers=lowered, body=body))
    except (BaseCloudEventException, ValueError, TypeError, AttributeError, OverflowError) as exc:
        # AttributeError/OverflowError: the SDK hands a structured `time` that is not a timestamp string
        # (a long JSON list, a year out of range) to dateutil, which fails with those.
        raise CloudEventRejected(f"invalid CloudEvent: {exc}") from exc
    except RecursionError:  # binary mode: the SDK parses a JSON body nested beyond Python's recursion limit
        raise CloudEventRejected("invalid CloudEvent: the data is nested too deeply") from None
    return Decoded(event, mode, sent_time)


def parse_inbound(headers: Mapping[str, str], body: bytes) -> Inbound:
    """One request → one typed inbound event, or CloudEventRejected."""
    decoded = read_cloudevent(headers, body)
    event = decoded.event
    ce_type = event.get_type()
    correlation = event.get_extension("correlationid")
    envelope = Envelope(
        id=event.get_id(),
        source=event.get_source(),
        type=ce_type,
        mode=decoded.mode,
        correlation_id=str(correlation) if correlation else None,
        traceparent=_text_extension(event, "traceparent"),
        tracestate=_text_extension(event, "tracestate"),
    )
    if ce_type not in ACCEPTED_TYPES:
        raise CloudEventRejected(
            f"unsupported CloudEvent type {ce_type[:200]!r}; accepted types: {', '.join(ACCEPTED_TYPES)}"
        )
    data = _data_object(event)
    if ce_type in (ALERT_FIRED, ALERT_RESOLVED):
        return InboundAlert(
            envelope, alert_event_from_data(data, ce_type, event.get_time() if decoded.sent_time else None)
        )
    if ce_type == REASONING_REQUESTED:
        try:
            return InboundReasoning(envelope, ReasonRequest.model_validate(data))
        except ValidationError as exc:
            raise CloudEventRejected(f"invalid {REASONING_REQUESTED} data: {summarize_validation(exc)}") from exc
    return _lambda_response(envelope, data)


def _text_extension(event: BaseCloudEvent, name: str) -> str | None:
    value = event.get_extension(name)
    return value if isinstance(value, str) and value else None


def _data_object(event: BaseCloudEvent) -> dict[str, Any]:
    data = event.get_data()
    if isinstance(data, (bytes, str)):
        # A JSON content type is parsed by the SDK; anything left here is not a JSON object.
        try:
            data = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CloudEventRejected(f"{event.get_type()}: data must be a JSON object ({exc})") from exc
    if not isinstance(data, dict):
        raise CloudEventRejected(f"{event.get_type()}: data must be a JSON object, got {type(data).__name__}")
    _require_unicode(data, f"{event.get_type()}: data")
    return data


def _require_unicode(value: Any, what: str) -> None:
    """Refuse JSON whose strings are not Unicode text (a "\\ud800" escape decodes to a lone surrogate).

    Such a string passes as `str` but fails wherever it is encoded later (the
    store, the reply, the sink): refused here it is a 400, not a 500.
    """
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise CloudEventRejected(f"{what} holds text that is not valid Unicode (a lone surrogate)") from None
    except RecursionError:
        raise CloudEventRejected(f"{what} is nested too deeply") from None


def alert_event_from_data(data: dict[str, Any], ce_type: str, ce_time: datetime | None = None) -> AlertEvent:
    """Either an Alertmanager alert object or the original system's flattened shape.

    The original producer (prometheus-events) sent `{alertname, status, labels,
    annotations, commonLabels, commonAnnotations, startsAt, endsAt,
    generatorURL, receiver, ...}`; an Alertmanager alert object has `labels`,
    `annotations`, `startsAt`, `fingerprint`... Both carry `labels`; the
    status always comes from the event type, never from the data (the old
    producer took it from the group).
    """
    labels = data.get("labels") or {}
    if not isinstance(labels, dict):
        raise CloudEventRejected(f"{ce_type}: data.labels must be an object of strings")
    labels = dict(labels)
    if "alertname" not in labels and isinstance(data.get("alertname"), str):
        labels["alertname"] = data["alertname"]
    if not labels.get("alertname"):
        raise CloudEventRejected(f"{ce_type}: the alert has no alertname (data.labels.alertname or data.alertname)")
    starts_at = data.get("startsAt") or (ce_time.isoformat() if ce_time else None)
    if not starts_at:
        raise CloudEventRejected(f"{ce_type}: data.startsAt is required (it identifies the incident)")
    fields: dict[str, Any] = {
        "status": "resolved" if ce_type == ALERT_RESOLVED else "firing",
        "labels": labels,
        "annotations": data.get("annotations") or {},
        "startsAt": starts_at,
        "generatorURL": data.get("generatorURL") or "",
        "fingerprint": data.get("fingerprint") or "",
    }
    if data.get("endsAt"):
        fields["endsAt"] = data["endsAt"]
    common = data.get("commonAnnotations") or {}
    try:
        alert = Alert.model_validate(fields)
        return AlertEvent(
            alert=alert,
            receiver=str(data.get("receiver") or ""),
            group_key=str(data.get("groupKey") or ""),
            common_annotations=common,
            source="cloudevents",
        )
    except ValidationError as exc:
        raise CloudEventRejected(f"{ce_type}: invalid alert data: {summarize_validation(exc)}") from exc


def _lambda_response(envelope: Envelope, data: dict[str, Any]) -> InboundLambdaResponse:
    correlation_id = data.get("correlationId") or data.get("correlation_id") or envelope.correlation_id
    if not correlation_id or not isinstance(correlation_id, str):
        raise CloudEventRejected(
            f"{envelope.type}: no correlation id (data.correlationId or the correlationid extension)"
        )
    function = data.get("functionName")
    return InboundLambdaResponse(
        envelope=envelope,
        correlation_id=correlation_id,
        success=envelope.type == LAMBDA_RESPONSE_SUCCESS,
        function_name=function if isinstance(function, str) else None,
        data=data,
    )


def summarize_validation(exc: ValidationError, limit: int = 5) -> str:
    """Pydantic's errors as `field.path: message; ...` (the first few)."""
    parts = []
    for error in exc.errors()[:limit]:
        where = ".".join(str(p) for p in error["loc"]) or "body"
        parts.append(f"{where}: {error['msg']}")
    more = len(exc.errors()) - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")
