"""CloudEvents in: both content modes through the SDK 2.x, every accepted type, and clear refusals."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from cloudevents.core.bindings.http import (
    HTTPMessage,
    to_binary_event,
    to_structured_event,
)
from cloudevents.core.v1.event import CloudEvent

from controller.edge.cloudevents_in import (
    ACCEPTED_TYPES,
    CloudEventRejected,
    InboundAlert,
    InboundLambdaResponse,
    InboundReasoning,
    parse_inbound,
)
from controller.schemas.alerts import ALERT_FIRED, ALERT_RESOLVED

AM_ALERT = {
    "status": "firing",
    "labels": {"alertname": "KubePodCrashLooping", "namespace": "shop", "pod": "cart-1"},
    "annotations": {"summary": "crash"},
    "startsAt": "2026-05-01T10:00:00Z",
    "endsAt": "0001-01-01T00:00:00Z",
    "fingerprint": "3c1f9a0b7d2e4f61",
}
# The shape the system we replace (prometheus-events) sent.
ORIGINAL_SHAPE = {
    "alertname": "KubePodCrashLooping",
    "status": "firing",
    "severity": "warning",
    "labels": {"namespace": "shop", "pod": "cart-1"},
    "annotations": {"summary": "crash"},
    "commonLabels": {"namespace": "shop"},
    "commonAnnotations": {"runbook_url": "http://runbooks/x"},
    "startsAt": "2026-05-01T10:00:00Z",
    "endsAt": "0001-01-01T00:00:00Z",
    "generatorURL": "http://prom/graph",
    "receiver": "remediator",
    "version": "4",
}


def message(ce_type: str, data: Any, *, mode: str, **extra: Any) -> HTTPMessage:
    attributes = {"type": ce_type, "source": "/tests", "id": "ev-1", "datacontenttype": "application/json", **extra}
    event = CloudEvent(attributes=attributes, data=data)
    return to_binary_event(event) if mode == "binary" else to_structured_event(event)


def parse(msg: HTTPMessage) -> Any:
    return parse_inbound(msg.headers, msg.body)


@pytest.mark.parametrize("mode", ["binary", "structured"])
@pytest.mark.parametrize("data", [AM_ALERT, ORIGINAL_SHAPE], ids=["alertmanager-alert", "original-shape"])
def test_fired_alerts_keep_their_data_in_both_modes(mode: str, data: dict[str, Any]) -> None:
    inbound = parse(message(ALERT_FIRED, data, mode=mode))
    assert isinstance(inbound, InboundAlert)
    alert = inbound.event.alert
    assert alert.labels["alertname"] == "KubePodCrashLooping"
    assert alert.labels["pod"] == "cart-1"
    assert alert.status == "firing"
    assert inbound.event.source == "cloudevents"
    assert inbound.envelope.mode == mode


def test_status_comes_from_the_event_type_not_the_data() -> None:
    inbound = parse(message(ALERT_RESOLVED, {**ORIGINAL_SHAPE, "status": "firing"}, mode="binary"))
    assert isinstance(inbound, InboundAlert)
    assert inbound.event.alert.status == "resolved"


def test_original_shape_without_fingerprint_gets_the_label_fingerprint() -> None:
    first = parse(message(ALERT_FIRED, ORIGINAL_SHAPE, mode="binary"))
    again = parse(message(ALERT_RESOLVED, ORIGINAL_SHAPE, mode="structured"))
    assert isinstance(first, InboundAlert) and isinstance(again, InboundAlert)
    assert first.event.incident_key == again.event.incident_key
    assert first.event.common_annotations == {"runbook_url": "http://runbooks/x"}


def test_missing_start_time_falls_back_to_the_event_time_or_is_refused() -> None:
    data = {k: v for k, v in ORIGINAL_SHAPE.items() if k != "startsAt"}
    timed = message(ALERT_FIRED, data, mode="binary", time=datetime(2026, 5, 1, 10, tzinfo=UTC))
    untimed = {k: v for k, v in timed.headers.items() if k != "ce-time"}  # the SDK fills `time` in by itself
    with pytest.raises(CloudEventRejected, match="startsAt is required"):
        parse_inbound(untimed, timed.body)
    inbound = parse(timed)
    assert isinstance(inbound, InboundAlert)
    assert inbound.event.alert.startsAt.year == 2026


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_reasoning_requests_are_typed(mode: str) -> None:
    data = {
        "question": "what now?",
        "context": {"alert": AM_ALERT},
        "max_steps": 4,
        "task_type": "remediation",
        "conversation_id": "c-1",
    }
    inbound = parse(message("io.homelab.reasoning.requested", data, mode=mode))
    assert isinstance(inbound, InboundReasoning)
    assert inbound.request.max_steps == 4
    assert inbound.request.conversation_id == "c-1"


@pytest.mark.parametrize("mode", ["binary", "structured"])
@pytest.mark.parametrize("ce_type", ["io.knative.lambda.response.success", "io.knative.lambda.response.error"])
def test_lambda_responses_carry_their_correlation_id(mode: str, ce_type: str) -> None:
    data = {"functionName": "pod-restart", "correlationId": "abc123", "result": {"statusCode": 200, "body": {}}}
    inbound = parse(message(ce_type, data, mode=mode))
    assert isinstance(inbound, InboundLambdaResponse)
    assert inbound.correlation_id == "abc123"
    assert inbound.success is ce_type.endswith("success")
    assert inbound.function_name == "pod-restart"


def test_lambda_response_correlation_id_may_come_from_the_extension() -> None:
    inbound = parse(
        message("io.knative.lambda.response.error", {"error": {"message": "x"}}, mode="binary", correlationid="fromext")
    )
    assert isinstance(inbound, InboundLambdaResponse)
    assert inbound.correlation_id == "fromext"
    with pytest.raises(CloudEventRejected, match="no correlation id"):
        parse(message("io.knative.lambda.response.error", {"error": {}}, mode="binary"))


def test_unknown_types_are_refused_with_the_accepted_list() -> None:
    with pytest.raises(CloudEventRejected) as info:
        parse(message("com.example.other", {"x": 1}, mode="binary"))
    for accepted in ACCEPTED_TYPES:
        assert accepted in str(info.value)


def test_batched_mode_is_refused_and_says_so() -> None:
    body = json.dumps([json.loads(message(ALERT_FIRED, AM_ALERT, mode="structured").body)]).encode()
    with pytest.raises(CloudEventRejected, match="batched content mode .* not supported"):
        parse_inbound({"content-type": "application/cloudevents-batch+json"}, body)


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        ({"content-type": "application/json"}, b'{"a": 1}', "not a CloudEvent"),
        ({"content-type": "application/cloudevents+json"}, b"{not json", "not valid JSON"),
        ({"content-type": "application/cloudevents+json"}, b"[]", "must be a JSON object"),
        (
            {"content-type": "application/cloudevents+json"},
            b'{"specversion": "1.0", "type": "x"}',
            "invalid CloudEvent",
        ),
        (
            {
                "ce-specversion": "1.0",
                "ce-type": ALERT_FIRED,
                "ce-source": "/s",
                "ce-id": "1",
                "content-type": "application/json",
            },
            b"[1, 2]",
            "data must be a JSON object",
        ),
        (
            {
                "ce-specversion": "1.0",
                "ce-type": ALERT_FIRED,
                "ce-source": "/s",
                "ce-id": "1",
                "content-type": "application/json",
            },
            b'{"labels": {}}',
            "no alertname",
        ),
    ],
)
def test_malformed_requests_are_refused_clearly(headers: dict[str, str], body: bytes, expected: str) -> None:
    with pytest.raises(CloudEventRejected, match=expected):
        parse_inbound(headers, body)
