"""The HTTP API against a real server: receive, auth, limits, 503s, reason, approvals, decisions, probes."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller.edge.config import Limits
from controller.engine.model_loader import ModelState
from controller.schemas.decision import APPROVAL_REQUESTED, LAMBDA_TRIGGER
from tests.pipeline.edge.servers import EdgeServer, StartServer, fixture_payload
from tests.pipeline.sink import CaptureSink

PROTECTED = [
    ("POST", "/alertmanager"),
    ("POST", "/events"),
    ("POST", "/reason"),
    ("POST", "/approvals/abc"),
    ("GET", "/decisions/abc"),
]

APPROVAL_POLICY = """\
apiVersion: remediation.homelab.io/v1alpha1
kind: RemediationPolicy
metadata: {name: needs-approval, namespace: shop}
spec:
  match: {alertNames: [KubePodCrashLooping]}
  allowedFunctions: [pod-restart]
  chain:
    - rules:
        - function: pod-restart
          parameters: {name: "{{ $labels.pod }}", namespace: "{{ $labels.namespace }}", type: pod}
  actions: {requireApproval: true, approvalTimeoutSeconds: 600}
"""


def crashloop(pod: str = "cart-7f9c6d5b8-x2k4q", starts: str = "2026-05-01T10:04:30Z") -> dict[str, Any]:
    payload = fixture_payload("crashloop.json")
    alert = payload["alerts"][0]
    alert["labels"]["pod"] = pod
    alert["fingerprint"] = ""  # computed from the labels, so each pod is its own incident
    alert["startsAt"] = starts
    return payload


@pytest.fixture
async def client(server: EdgeServer) -> AsyncIterator[httpx.AsyncClient]:
    async with server.client() as http:
        yield http


# ---------------------------------------------------------------- receive


async def test_an_alertmanager_payload_is_recorded_then_triggered(start_server: StartServer, sink: CaptureSink) -> None:
    server = await start_server(token="t0k", sink=sink.url)
    async with server.client() as http:
        response = await http.post("/alertmanager", json=fixture_payload("crashloop.json"))
        assert response.status_code == 200
        assert response.json() == {"accepted": 1, "new_incidents": 1, "duplicates": 0, "resolved": 0}
        again = await http.post("/alertmanager", json=fixture_payload("crashloop.json"))
        assert again.json() == {"accepted": 1, "new_incidents": 0, "duplicates": 1, "resolved": 0}
    assert await sink.wait_for_async(lambda s: len(s.accepted_of(LAMBDA_TRIGGER)) == 1)
    await server.idle()
    (trigger,) = sink.accepted_of(LAMBDA_TRIGGER)
    assert trigger.data()["lambda_function"] == "pod-restart"
    assert trigger.data()["parameters"] == {"name": "cart-7f9c6d5b8-x2k4q", "namespace": "shop", "type": "pod"}


async def test_a_group_with_resolved_alerts_is_counted_per_alert(client: httpx.AsyncClient) -> None:
    response = await client.post("/alertmanager", json=fixture_payload("group-mixed.json"))
    assert response.status_code == 200
    assert response.json()["accepted"] == 3
    assert response.json()["resolved"] == 1


@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_protected_routes_need_the_token(server: EdgeServer, method: str, path: str) -> None:
    for token in (None, "wrong-token"):
        async with server.client(token=token) as http:
            response = await http.request(method, path, json={})
        assert response.status_code == 401, (token, response.text)
        assert response.json() == {"detail": "unauthorized"}  # generic: says nothing about why
        assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/openapi.json"])
async def test_probes_metrics_and_the_schema_are_open(server: EdgeServer, path: str) -> None:
    async with server.client(token=None) as http:
        response = await http.get(path)
    assert response.status_code == 200


async def test_a_rotated_token_file_takes_effect_without_a_restart(start_server: StartServer, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first-token\n")
    server = await start_server(token_file=token_file)
    async with server.client(token="first-token") as http:
        assert (await http.post("/reason", json={"context": {"labels": {"alertname": "X"}}})).status_code == 200
    token_file.write_text("second-token-after-rotation\n")
    for token, expected in (("first-token", 401), ("second-token-after-rotation", 200)):
        async with server.client(token=token) as http:
            response = await http.post("/reason", json={"context": {"labels": {"alertname": "X"}}})
        assert response.status_code == expected, token


async def test_without_a_token_on_loopback_requests_are_accepted(start_server: StartServer) -> None:
    server = await start_server()
    async with server.client(token=None) as http:
        response = await http.post("/alertmanager", json=fixture_payload("crashloop.json"))
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"version": "4"}', "invalid Alertmanager payload: alerts: Field required"),
        (b'{"version": "5", "alerts": []}', "unsupported payload version"),
        (b'{"alerts": [{"status": "firing", "labels": {}}]}', "alerts.0.startsAt: Field required"),
        (b'{"alerts": [{"status": "burning", "startsAt": "2026-05-01T10:00:00Z"}]}', "alerts.0.status"),
    ],
)
async def test_malformed_payloads_are_400_with_a_clear_message(
    client: httpx.AsyncClient, body: bytes, expected: str
) -> None:
    response = await client.post("/alertmanager", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert expected in response.json()["detail"]


async def test_a_body_over_the_limit_is_413_even_without_content_length(start_server: StartServer) -> None:
    server = await start_server(token="t", limits=Limits(max_body_bytes=2048))
    big = json.dumps(crashloop()).encode() + b" " * 4096

    async def chunks() -> AsyncIterator[bytes]:  # chunked transfer encoding: no Content-Length to trust
        for start in range(0, len(big), 512):
            yield big[start : start + 512]

    async with server.client() as http:
        declared = await http.post("/alertmanager", content=big, headers={"content-type": "application/json"})
        streamed = await http.post("/alertmanager", content=chunks(), headers={"content-type": "application/json"})
    assert declared.status_code == 413
    assert streamed.status_code == 413
    assert "limit of 2048 bytes" in streamed.json()["detail"]


@pytest.mark.parametrize(
    ("mutate", "limit_name"),
    [
        (lambda p: p["alerts"].extend(copy.deepcopy(p["alerts"]) * 3), "max_alerts"),
        (lambda p: p["alerts"][0]["labels"].update({f"l{i}": "x" for i in range(10)}), "max_labels"),
        (lambda p: p["alerts"][0]["labels"].update({"pod": "p" * 200}), "max_label_value_length"),
        (lambda p: p["alerts"][0]["annotations"].update({"description": "d" * 500}), "max_annotation_value_length"),
        (lambda p: p["alerts"][0]["labels"].update({"n" * 80: "x"}), "max_name_length"),
    ],
)
async def test_limits_answer_400_naming_the_limit(start_server: StartServer, mutate: Any, limit_name: str) -> None:
    limits = Limits(
        max_alerts=3, max_labels=16, max_name_length=64, max_label_value_length=128, max_annotation_value_length=300
    )
    server = await start_server(token="t", limits=limits)
    payload = fixture_payload("crashloop.json")
    mutate(payload)
    async with server.client() as http:
        response = await http.post("/alertmanager", json=payload)
    assert response.status_code == 400
    assert limit_name in response.json()["detail"]


async def test_an_unwritable_store_answers_503_with_retry_after(server: EdgeServer, client: httpx.AsyncClient) -> None:
    server.components.store.close()
    response = await client.post("/alertmanager", json=fixture_payload("crashloop.json"))
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) > 0
    ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert "the store is closed" in ready.json()["reasons"]


async def test_an_overloaded_pipeline_answers_503_never_429(server: EdgeServer, client: httpx.AsyncClient) -> None:
    await server.components.pipeline.stop(drain_timeout_s=0)  # stopping: refuses new alerts as Overloaded
    response = await client.post("/alertmanager", json=fixture_payload("crashloop.json"))
    assert response.status_code == 503
    assert "overloaded" in response.json()["detail"]
    assert int(response.headers["retry-after"]) > 0


# ---------------------------------------------------------------- reason


async def test_reason_answers_with_the_decision_and_its_trace(client: httpx.AsyncClient) -> None:
    alert = fixture_payload("crashloop.json")["alerts"][0]
    response = await client.post(
        "/reason",
        json={"question": "what now?", "context": {"alert": alert}, "max_steps": 4, "task_type": "remediation"},
    )
    assert response.status_code == 200
    body = response.json()
    answer = json.loads(body["answer"])
    assert answer["lambda_function"] == "pod-restart"
    assert answer["parameters"]["name"] == "cart-7f9c6d5b8-x2k4q"
    assert [t["stage"] for t in body["reasoning_trace"]] == ["staticAnnotation", "trm", "rules"]
    assert body["steps"] == 3
    assert body["confidence"] == 1.0
    assert body["duration_ms"] >= 0


async def test_reason_accepts_labels_as_context_and_has_no_side_effects(
    server: EdgeServer, client: httpx.AsyncClient
) -> None:
    response = await client.post("/reason", json={"context": {"labels": {"alertname": "Watchdog", "severity": "none"}}})
    assert response.status_code == 200
    assert json.loads(response.json()["answer"])["outcome"] == "escalate"
    assert server.components.store.outbox_depth() == 0


async def test_reason_refuses_free_form_questions(client: httpx.AsyncClient) -> None:
    response = await client.post("/reason", json={"question": "why is the sky blue?", "task_type": "general"})
    assert response.status_code == 422
    assert "TRM selects remediations; it does not answer free-form questions" in response.json()["detail"]
    no_alert = await client.post("/reason", json={"question": "fix it", "task_type": "remediation", "context": {}})
    assert no_alert.status_code == 422
    assert "context.alert" in no_alert.json()["detail"]


# ---------------------------------------------------------------- approvals and decisions


async def _approval_server(start_server: StartServer, sink: CaptureSink, tmp_path: Path, **kwargs: Any) -> EdgeServer:
    """A server whose policy asks for approval before each trigger."""
    policy = tmp_path / "approval.yaml"
    policy.write_text(APPROVAL_POLICY)
    return await start_server(token="t", sink=sink.url, policies=[policy], **kwargs)


async def _request_approval(http: httpx.AsyncClient, sink: CaptureSink) -> tuple[str, str]:
    """Send the crash-loop alert; (approval id, decision id) of the approval request it gives."""
    assert (await http.post("/alertmanager", json=fixture_payload("crashloop.json"))).status_code == 200
    assert await sink.wait_for_async(lambda s: len(s.accepted_of(APPROVAL_REQUESTED)) == 1)
    request = sink.accepted_of(APPROVAL_REQUESTED)[0]
    return request.data()["approval_id"], request.headers["ce-correlationid"]


async def test_an_approval_releases_the_trigger_once(
    start_server: StartServer, sink: CaptureSink, tmp_path: Path
) -> None:
    # Approvals take the approver token (issue #13.3); the webhook token only sends alerts.
    server = await _approval_server(start_server, sink, tmp_path, approver_token="approver-secret")
    async with server.client() as http, server.client(token="approver-secret") as approver:
        approval_id, decision_id = await _request_approval(http, sink)
        assert sink.accepted_of(LAMBDA_TRIGGER) == []

        bad = await approver.post(f"/approvals/{approval_id}", json={"decision": "maybe", "actor": "ops"})
        assert bad.status_code == 400
        approved = await approver.post(f"/approvals/{approval_id}", json={"decision": "approve", "actor": "ops"})
        assert approved.status_code == 200
        assert approved.json() == {"approval_id": approval_id, "state": "approved"}
        assert await sink.wait_for_async(lambda s: len(s.accepted_of(LAMBDA_TRIGGER)) == 1)

        again = await approver.post(f"/approvals/{approval_id}", json={"decision": "approve", "actor": "ops"})
        assert again.status_code == 200  # a double click approves once
        rejected_late = await approver.post(f"/approvals/{approval_id}", json={"decision": "reject", "actor": "ops"})
        assert rejected_late.status_code == 409
        assert rejected_late.json()["state"] == "approved"
        unknown = await approver.post("/approvals/nope", json={"decision": "approve", "actor": "ops"})
        assert unknown.status_code == 404
        history = (await http.get(f"/decisions/{decision_id}")).json()
    await server.idle()
    assert len(sink.accepted_of(LAMBDA_TRIGGER)) == 1
    # The recorded actor is the authenticated identity, never the body's word ("ops").
    assert history["approval"]["actor"] == "approver-token", history["approval"]


async def test_the_webhook_token_cannot_approve(start_server: StartServer, sink: CaptureSink, tmp_path: Path) -> None:
    server = await _approval_server(start_server, sink, tmp_path, approver_token="approver-secret")
    async with server.client() as http, server.client(token="wrong") as stranger:
        approval_id, _ = await _request_approval(http, sink)
        forbidden = await http.post(f"/approvals/{approval_id}", json={"decision": "approve", "actor": "admin"})
        assert forbidden.status_code == 403
        unknown = await stranger.post(f"/approvals/{approval_id}", json={"decision": "approve", "actor": "admin"})
        assert unknown.status_code == 401
    await server.idle()
    assert sink.accepted_of(LAMBDA_TRIGGER) == []


async def test_without_an_approver_token_nobody_can_approve(
    start_server: StartServer, sink: CaptureSink, tmp_path: Path
) -> None:
    server = await _approval_server(start_server, sink, tmp_path)
    async with server.client() as http:
        approval_id, _ = await _request_approval(http, sink)
        assert (await http.post(f"/approvals/{approval_id}", json={"decision": "approve"})).status_code == 403
    await server.idle()
    assert sink.accepted_of(LAMBDA_TRIGGER) == []


async def test_decisions_show_their_trace_and_history(server: EdgeServer, client: httpx.AsyncClient) -> None:
    await client.post("/alertmanager", json=fixture_payload("crashloop.json"))
    await server.idle()
    decision_id = json.loads(
        (
            await client.post("/reason", json={"context": {"alert": fixture_payload("crashloop.json")["alerts"][0]}})
        ).json()["answer"]
    )["decision_id"]
    response = await client.get(f"/decisions/{decision_id}")
    assert response.status_code == 200
    body = response.json()
    assert body["function"] == "pod-restart"
    assert [t["stage"] for t in body["trace"]] == ["staticAnnotation", "trm", "rules"]
    assert body["trace"][2]["outcome"] == "accepted"
    assert body["deliveries"][0]["type"] == LAMBDA_TRIGGER
    assert (await client.get("/decisions/0000")).status_code == 404


# ---------------------------------------------------------------- probes, metrics, schema


async def test_readiness_lists_what_is_missing(start_server: StartServer) -> None:
    ready = await start_server()
    async with ready.client() as http:
        response = await http.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"ready": True, "reasons": []}

    no_model = await start_server(model=ModelState(None, "unavailable", "no checkpoint in /nowhere"))
    async with no_model.client() as http:
        response = await http.get("/readyz")
        healthy = await http.get("/healthz")
    assert response.status_code == 503
    assert any("TRM model not loaded (no checkpoint in /nowhere)" in r for r in response.json()["reasons"])
    assert healthy.status_code == 200  # liveness does not depend on readiness

    no_policies = await start_server()
    for policy in no_policies.components.index.all():
        no_policies.components.index.remove(policy.key)
    async with no_policies.client() as http:
        response = await http.get("/readyz")
    assert response.status_code == 503
    assert "no RemediationPolicy loaded" in response.json()["reasons"]


async def test_metrics_count_requests_and_alerts(client: httpx.AsyncClient, server: EdgeServer) -> None:
    await client.post("/alertmanager", json=fixture_payload("crashloop.json"))
    await client.post("/alertmanager", content=b"nope")
    await server.idle()
    text = (await client.get("/metrics")).text
    assert 'agent_sre_http_requests_total{code="200",route="/alertmanager"} 1.0' in text
    assert 'agent_sre_http_requests_total{code="400",route="/alertmanager"} 1.0' in text
    assert 'agent_sre_alerts_received_total{source="alertmanager",status="firing"} 1.0' in text


async def test_openapi_documents_every_route_and_body(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    for path in (
        "/alertmanager",
        "/events",
        "/reason",
        "/approvals/{approval_id}",
        "/decisions/{decision_id}",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert path in schema["paths"], path
    body = schema["paths"]["/alertmanager"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/AlertmanagerPayload"}
    components = schema["components"]["schemas"]
    assert {"AlertmanagerPayload", "Alert", "ReasonRequest", "ApprovalRequest", "ReasonResult"} <= set(components)
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


async def test_a_rejection_may_carry_the_correct_call(
    start_server: StartServer, sink: CaptureSink, tmp_path: Path
) -> None:
    # The correction is ground truth for shadow mode and feedback (issue #15), never an action.
    server = await _approval_server(start_server, sink, tmp_path, approver_token="approver-secret")
    async with server.client() as http, server.client(token="approver-secret") as approver:
        approval_id, decision_id = await _request_approval(http, sink)
        url = f"/approvals/{approval_id}"

        with_approve = await approver.post(url, json={"decision": "approve", "correction": {"function": None}})
        assert with_approve.status_code == 400
        assert "a correction goes with a rejection" in with_approve.json()["detail"]
        unknown = await approver.post(url, json={"decision": "reject", "correction": {"function": "rm-rf"}})
        assert unknown.status_code == 400
        assert "not a function in the runbook catalog" in unknown.json()["detail"]
        bad_name = {"function": "scale-deployment", "parameters": {"name": "Cart!", "namespace": "shop", "replicas": 2}}
        invalid = await approver.post(url, json={"decision": "reject", "correction": bad_name})
        assert invalid.status_code == 400
        assert "invalid correction" in invalid.json()["detail"]

        right = {"function": "scale-deployment", "parameters": {"name": "cart", "namespace": "shop", "replicas": "3"}}
        rejected = await approver.post(url, json={"decision": "reject", "correction": right})
        assert rejected.status_code == 200, rejected.text
        # A later answer neither changes the state nor the correction.
        other = {"function": None}
        late = await approver.post(url, json={"decision": "reject", "correction": other})
        assert late.json()["state"] == "rejected"
        history = (await http.get(f"/decisions/{decision_id}")).json()
    await server.idle()
    assert sink.accepted_of(LAMBDA_TRIGGER) == []
    assert history["state"] == "rejected"
    correction = history["correction"]
    assert correction["function"] == "scale-deployment"
    assert correction["parameters"] == {"name": "cart", "namespace": "shop", "replicas": 3}  # cleaned by the runbook
    assert correction["actor"] == "approver-token"
