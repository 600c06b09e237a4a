"""POST /events with requests built by the CloudEvents SDK 2.x, binary and structured, for every type."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from cloudevents.core.bindings.http import (
    HTTPMessage,
    from_http_event,
    to_binary_event,
    to_structured_event,
)
from cloudevents.core.v1.event import CloudEvent

from controller.edge.cloudevents_in import ACCEPTED_TYPES
from controller.schemas.alerts import ALERT_FIRED, ALERT_RESOLVED
from controller.schemas.decision import (
    LAMBDA_TRIGGER,
    REASONING_COMPLETED,
    REASONING_FAILED,
)
from tests.pipeline.edge.servers import EdgeServer, StartServer, fixture_payload
from tests.pipeline.sink import CaptureSink

MODES = ["binary", "structured"]


def alert_data() -> dict[str, Any]:
    alert: dict[str, Any] = fixture_payload("crashloop.json")["alerts"][0]
    return alert


def encode(ce_type: str, data: Any, mode: str, event_id: str = "ev-1", **extra: Any) -> HTTPMessage:
    attributes = {
        "type": ce_type,
        "source": "/tests/edge",
        "id": event_id,
        "datacontenttype": "application/json",
        **extra,
    }
    event = CloudEvent(attributes=attributes, data=data)
    return to_binary_event(event) if mode == "binary" else to_structured_event(event)


async def post(http: httpx.AsyncClient, message: HTTPMessage) -> httpx.Response:
    return await http.post("/events", content=message.body, headers=message.headers)


@pytest.mark.parametrize("mode", MODES)
async def test_a_fired_alert_event_is_ingested_and_triggers_once(
    start_server: StartServer, sink: CaptureSink, mode: str
) -> None:
    server = await start_server(token="t", sink=sink.url)
    async with server.client() as http:
        first = await post(http, encode(ALERT_FIRED, alert_data(), mode, event_id="a1"))
        second = await post(http, encode(ALERT_FIRED, alert_data(), mode, event_id="a2"))  # a redelivery
    assert first.status_code == 202
    assert first.json() == {
        "type": ALERT_FIRED,
        "id": "a1",
        "result": {"accepted": 1, "new_incidents": 1, "duplicates": 0, "resolved": 0},
    }
    assert second.json()["result"]["duplicates"] == 1
    assert await sink.wait_for_async(lambda s: len(s.accepted_of(LAMBDA_TRIGGER)) == 1)
    await server.idle()
    (trigger,) = sink.accepted_of(LAMBDA_TRIGGER)
    assert trigger.data()["parameters"]["name"] == "cart-7f9c6d5b8-x2k4q"


@pytest.mark.parametrize("mode", MODES)
async def test_the_original_systems_event_shape_is_accepted(server: EdgeServer, mode: str) -> None:
    data = {
        "alertname": "KubePodCrashLooping",
        "status": "firing",
        "labels": {"namespace": "shop", "pod": "cart-1"},
        "annotations": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "startsAt": "2026-05-01T10:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "",
        "receiver": "remediator",
        "version": "4",
    }
    async with server.client() as http:
        response = await post(http, encode(ALERT_FIRED, data, mode))
    assert response.status_code == 202
    assert response.json()["result"]["new_incidents"] == 1


@pytest.mark.parametrize("mode", MODES)
async def test_a_resolved_alert_event_is_recorded_against_its_incident(server: EdgeServer, mode: str) -> None:
    async with server.client() as http:
        await post(http, encode(ALERT_FIRED, alert_data(), mode, event_id="f"))
        resolved = {**alert_data(), "status": "resolved", "endsAt": "2026-05-01T10:30:00Z"}
        response = await post(http, encode(ALERT_RESOLVED, resolved, mode, event_id="r"))
    assert response.status_code == 202
    assert response.json()["result"]["resolved"] == 1


@pytest.mark.parametrize("mode", MODES)
async def test_a_reasoning_request_gets_a_completed_reply_event(server: EdgeServer, mode: str) -> None:
    request = {
        "question": "which remediation?",
        "context": {"alert": alert_data()},
        "max_steps": 6,
        "task_type": "remediation",
        "conversation_id": "conv-7",
    }
    async with server.client() as http:
        response = await post(http, encode("io.homelab.reasoning.requested", request, mode, event_id="q1"))
    assert response.status_code == 200
    reply = from_http_event(HTTPMessage(dict(response.headers), response.content))  # a binary-mode CloudEvent
    assert reply.get_type() == REASONING_COMPLETED
    assert reply.get_id() == "q1-completed"
    assert reply.get_extension("correlationid") == "q1"
    data = reply.get_data()
    assert isinstance(data, dict)
    assert json.loads(data["answer"])["lambda_function"] == "pod-restart"
    assert data["conversation_id"] == "conv-7"
    assert len(data["reasoning_trace"]) == 3


async def test_a_free_form_reasoning_request_gets_a_failed_reply_event(server: EdgeServer) -> None:
    request = {"question": "meaning of life?", "context": {}, "task_type": "general"}
    async with server.client() as http:
        response = await post(http, encode("io.homelab.reasoning.requested", request, "binary", event_id="q2"))
    assert response.status_code == 200
    reply = from_http_event(HTTPMessage(dict(response.headers), response.content))
    assert reply.get_type() == REASONING_FAILED
    data = reply.get_data()
    assert isinstance(data, dict)
    assert "does not answer free-form questions" in data["error"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("outcome", ["success", "error"])
async def test_lambda_responses_are_recorded_on_their_decision(
    start_server: StartServer, sink: CaptureSink, mode: str, outcome: str
) -> None:
    server = await start_server(token="t", sink=sink.url)
    async with server.client() as http:
        await http.post("/alertmanager", json=fixture_payload("crashloop.json"))
        assert await sink.wait_for_async(lambda s: len(s.accepted_of(LAMBDA_TRIGGER)) == 1)
        correlation_id = sink.accepted_of(LAMBDA_TRIGGER)[0].headers["ce-correlationid"]
        body: dict[str, Any] = {
            "functionName": "pod-restart",
            "namespace": "ai",
            "invocationId": "inv-1",
            "correlationId": correlation_id,
        }
        body.update(
            {"result": {"statusCode": 200, "body": {"status": "success"}}}
            if outcome == "success"
            else {"error": {"code": "E", "message": "boom", "retryable": False}}
        )
        response = await post(
            http, encode(f"io.knative.lambda.response.{outcome}", body, mode, source="io.knative.lambda/pod-restart")
        )
        assert response.status_code == 202
        assert response.json()["result"] == {"recorded": True}
        history = (await http.get(f"/decisions/{correlation_id}")).json()
        assert history["result"] == outcome
        assert history["responses"][0]["success"] is (outcome == "success")
        unknown = await post(
            http, encode(f"io.knative.lambda.response.{outcome}", {**body, "correlationId": "zzz"}, mode)
        )
        assert unknown.status_code == 202  # a retry would not make it known
        assert unknown.json()["result"] == {"recorded": False}


async def test_unknown_types_are_400_listing_the_accepted_ones(server: EdgeServer) -> None:
    async with server.client() as http:
        response = await post(http, encode("com.example.something", {"a": 1}, "structured"))
    assert response.status_code == 400
    for accepted in ACCEPTED_TYPES:
        assert accepted in response.json()["detail"]


async def test_batched_mode_is_400_and_says_it_is_not_supported(server: EdgeServer) -> None:
    one = json.loads(encode(ALERT_FIRED, alert_data(), "structured").body)
    async with server.client() as http:
        response = await http.post(
            "/events", content=json.dumps([one]), headers={"content-type": "application/cloudevents-batch+json"}
        )
    assert response.status_code == 400
    assert "batched content mode" in response.json()["detail"]
    assert "not supported" in response.json()["detail"]


async def test_a_plain_json_post_is_not_a_cloudevent(server: EdgeServer) -> None:
    async with server.client() as http:
        response = await http.post("/events", json=alert_data())
    assert response.status_code == 400
    assert "not a CloudEvent" in response.json()["detail"]
