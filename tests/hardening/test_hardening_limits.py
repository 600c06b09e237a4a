"""Limits answer with the right status codes, and a flood cannot grow memory without bound.

Claims (issue #6, "Hostile input"):
- the body size is capped (413; 4 MiB by default, exactly; configurable, also
  with `--max-body-bytes`) on every POST route, whether or not the sender
  declares a Content-Length;
- alerts per payload, labels per alert, name and value lengths and annotation
  lengths are capped (400, the message names the limit), on `/alertmanager`
  and on alert CloudEvents; a payload at every limit is accepted;
- overload is 503 with Retry-After, never 429 (Alertmanager only retries 5xx);
- under a flood with a tiny work queue the queue never grows past its bound,
  every refused request is a 503 with Retry-After, nothing refused is stored,
  and everything accepted is decided and triggered exactly once.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cloudevents.core.bindings.http import to_binary_event
from cloudevents.core.v1.event import CloudEvent

from controller.edge.config import Limits
from controller.schemas.decision import LAMBDA_TRIGGER
from tests.hardening.support import (
    REPO,
    RULES_POLICY,
    StartServer,
    crashloop,
    write_policy,
)
from tests.pipeline.sink import CaptureSink

TOKEN = "limits-token"
APPROVER = "limits-approver-token"  # /approvals takes its own credential (issue #13.3)
_AS_APPROVER = {"content-type": "application/json", "authorization": f"Bearer {APPROVER}"}
MIB = 1024 * 1024


def _padded(payload: dict[str, Any], size: int) -> bytes:
    """`payload` as JSON, padded with insignificant whitespace to exactly `size` bytes."""
    body = json.dumps(payload).encode()
    assert len(body) <= size
    return body[:-1] + b" " * (size - len(body)) + b"}"


async def _chunks(body: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


@pytest.fixture
async def server(controller: StartServer) -> Any:
    return await controller(token=TOKEN, approver_token=APPROVER)


# ----------------------------------------------------------------------------- body size


async def test_the_default_body_limit_is_4_mib_exactly(server: Any) -> None:
    async with server.client() as http:
        at_limit = await http.post(
            "/alertmanager", content=_padded(crashloop(), 4 * MIB), headers={"content-type": "application/json"}
        )
        over = await http.post(
            "/alertmanager", content=_padded(crashloop(), 4 * MIB + 1), headers={"content-type": "application/json"}
        )
        over_chunked = await http.post(
            "/alertmanager",
            content=_chunks(_padded(crashloop(), 4 * MIB + 1)),
            headers={"content-type": "application/json"},
        )
    assert at_limit.status_code == 200, at_limit.text
    assert over.status_code == 413
    assert over.json()["detail"] == f"body of {4 * MIB + 1} bytes is over the limit of {4 * MIB} bytes"
    assert over_chunked.status_code == 413  # no Content-Length to trust: counted while reading
    assert f"limit of {4 * MIB} bytes" in over_chunked.json()["detail"]


async def test_a_lying_content_length_does_not_get_past_the_limit(controller: StartServer) -> None:
    server = await controller(token=TOKEN, limits=Limits(max_body_bytes=4096))
    body = _padded(crashloop(), 64 * 1024)
    reader, writer = await asyncio.open_connection("127.0.0.1", int(server.url.rsplit(":", 1)[1]))
    try:
        head = (
            f"POST /alertmanager HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        writer.write(head.encode())
        for start in range(0, len(body), 1024):
            piece = body[start : start + 1024]
            writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 30)
    finally:
        writer.close()
    assert status_line.startswith(b"HTTP/1.1 413")


@pytest.mark.parametrize("path", ["/alertmanager", "/events", "/reason", "/approvals/abc"])
async def test_every_post_route_enforces_the_configured_body_limit(controller: StartServer, path: str) -> None:
    server = await controller(token=TOKEN, approver_token=APPROVER, limits=Limits(max_body_bytes=2048))
    async with server.client(token=APPROVER if path.startswith("/approvals") else TOKEN) as http:
        response = await http.post(
            path,
            content=b"{" + b" " * 4096 + b"}",
            headers={
                "content-type": "application/json",
                "ce-specversion": "1.0",
                "ce-id": "x",
                "ce-source": "/x",
                "ce-type": "io.homelab.prometheus.alert.fired",
            },
        )
    assert response.status_code == 413
    assert "limit of 2048 bytes" in response.json()["detail"]


def test_the_body_limit_is_configurable_on_the_command_line(tmp_path: Path) -> None:
    environ = {k: v for k, v in os.environ.items() if k not in ("TRM_SRE_WEBHOOK_TOKEN", "K_SINK", "KUBECONFIG")}
    environ.update({"PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "TRM_SRE_WEBHOOK_TOKEN": TOKEN})
    log = tmp_path / "log"
    with open(log, "wb") as out:
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "controller",
                "run",
                "--standalone",
                "--no-model",
                "--port",
                "0",
                "--state-dir",
                str(tmp_path / "state"),
                "--max-body-bytes",
                "2048",
            ],
            cwd=REPO,
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline, url = time.monotonic() + 120, None
        while url is None and time.monotonic() < deadline and child.poll() is None:
            found = re.search(r"listening on (http://[0-9.]+:[0-9]+)", log.read_text(errors="replace"))
            url = found.group(1) if found else None
            time.sleep(0.1)
        assert url, log.read_text()
        headers = {"Authorization": f"Bearer {TOKEN}", "content-type": "application/json"}
        assert httpx.post(f"{url}/alertmanager", content=_padded(crashloop(), 2048), headers=headers).status_code == 200
        over = httpx.post(f"{url}/alertmanager", content=_padded(crashloop(), 2049), headers=headers)
        assert over.status_code == 413 and "limit of 2048 bytes" in over.json()["detail"]
    finally:
        os.killpg(child.pid, signal.SIGTERM)
        assert child.wait(40) == 0, log.read_text()


# ----------------------------------------------------------------------------- structure limits

SMALL = Limits(
    max_alerts=5, max_labels=8, max_name_length=32, max_label_value_length=64, max_annotation_value_length=128
)


def _alert(i: int = 0, **labels: str) -> dict[str, Any]:
    return {
        "status": "firing",
        "labels": {"alertname": "KubePodCrashLooping", "namespace": "shop", "pod": f"cart-{i}", **labels},
        "annotations": {},
        "startsAt": "2026-05-01T10:00:00Z",
    }


def _payload(*alerts: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"version": "4", "status": "firing", "receiver": "trm-sre", "alerts": list(alerts), **extra}


def _labels(n: int) -> dict[str, str]:
    return {f"l{i}": "v" for i in range(n)}


AT_LIMIT = [
    pytest.param(_payload(*(_alert(i) for i in range(5))), id="max_alerts"),
    pytest.param(_payload(_alert(**_labels(5))), id="max_labels"),
    pytest.param(_payload(_alert(**{"n" * 32: "x"})), id="max_name_length"),
    pytest.param(_payload(_alert(extra="v" * 64)), id="max_label_value_length"),
    pytest.param(_payload({**_alert(), "annotations": {"description": "d" * 128}}), id="max_annotation_value_length"),
    pytest.param(_payload({**_alert(), "annotations": _labels(8)}), id="max_annotations"),
]

OVER_LIMIT = [
    pytest.param(_payload(*(_alert(i) for i in range(6))), "max_alerts", id="alerts"),
    pytest.param(_payload(_alert(**_labels(6))), "max_labels", id="labels"),
    pytest.param(_payload(_alert(**{"n" * 33: "x"})), "max_name_length", id="label-name"),
    pytest.param(_payload(_alert(extra="v" * 65)), "max_label_value_length", id="label-value"),
    pytest.param(
        _payload({**_alert(), "annotations": {"description": "d" * 129}}),
        "max_annotation_value_length",
        id="annotation-value",
    ),
    pytest.param(_payload({**_alert(), "annotations": {"a" * 33: "x"}}), "max_name_length", id="annotation-name"),
    pytest.param(_payload({**_alert(), "annotations": _labels(9)}), "max_labels", id="annotations"),
    pytest.param(
        _payload(_alert(), commonAnnotations={"description": "d" * 129}),
        "max_annotation_value_length",
        id="common-annotation",
    ),
    pytest.param(_payload(_alert(), _alert(1, extra="v" * 65)), "max_label_value_length", id="second-alert"),
]


@pytest.mark.parametrize("payload", AT_LIMIT)
async def test_a_payload_at_each_limit_is_accepted(controller: StartServer, payload: dict[str, Any]) -> None:
    server = await controller(token=TOKEN, limits=SMALL)
    async with server.client() as http:
        response = await http.post("/alertmanager", json=payload)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(("payload", "limit"), OVER_LIMIT)
async def test_a_payload_over_a_limit_is_400_naming_it_and_nothing_is_stored(
    controller: StartServer, payload: dict[str, Any], limit: str
) -> None:
    server = await controller(token=TOKEN, limits=SMALL)
    async with server.client() as http:
        response = await http.post("/alertmanager", json=payload)
    assert response.status_code == 400
    assert f"({limit})" in response.json()["detail"]
    assert server.rows("alerts") == 0


async def test_the_default_structure_limits(server: Any) -> None:
    """1,000 alerts, 64 labels, 256-character names, 2,048-character label values, 16 KiB annotations."""

    def many(n: int) -> dict[str, Any]:
        return _payload(*(_alert(i) for i in range(n)))

    async with server.client() as http:
        cases = [
            (many(1000), 200, None),
            (many(1001), 400, "max_alerts"),
            (_payload(_alert(**_labels(61))), 200, None),
            (_payload(_alert(**_labels(62))), 400, "max_labels"),
            (_payload(_alert(**{"n" * 256: "x"})), 200, None),
            (_payload(_alert(**{"n" * 257: "x"})), 400, "max_name_length"),
            (_payload(_alert(extra="v" * 2048)), 200, None),
            (_payload(_alert(extra="v" * 2049)), 400, "max_label_value_length"),
            (_payload({**_alert(), "annotations": {"d": "d" * 16384}}), 200, None),
            (_payload({**_alert(), "annotations": {"d": "d" * 16385}}), 400, "max_annotation_value_length"),
        ]
        for payload, status, limit in cases:
            response = await http.post("/alertmanager", json=payload)
            assert response.status_code == status, (limit, response.text[:200])
            if limit:
                assert f"({limit})" in response.json()["detail"]


@pytest.mark.parametrize(
    ("alert", "limit"),
    [
        (_alert(**_labels(6)), "max_labels"),
        (_alert(extra="v" * 65), "max_label_value_length"),
        ({**_alert(), "annotations": {"description": "d" * 129}}, "max_annotation_value_length"),
    ],
)
async def test_alert_cloudevents_obey_the_same_limits(
    controller: StartServer, alert: dict[str, Any], limit: str
) -> None:
    server = await controller(token=TOKEN, limits=SMALL)
    event = CloudEvent(
        attributes={
            "type": "io.homelab.prometheus.alert.fired",
            "source": "/prometheus",
            "id": "e-1",
            "datacontenttype": "application/json",
        },
        data=alert,
    )
    message = to_binary_event(event)
    async with server.client() as http:
        response = await http.post("/events", content=message.body, headers=dict(message.headers))
    assert response.status_code == 400
    assert f"({limit})" in response.json()["detail"]


# ----------------------------------------------------------------------------- overload and floods

SLOW_POLICY = RULES_POLICY.replace(
    "  chain:\n",
    '  chain:\n    - functionCalling: {endpoint: "LLM_URL", api: ollama, model: slow, timeoutMs: 10000}\n',
)


async def test_requests_beyond_the_in_flight_bound_get_503_with_retry_after_never_429(controller: StartServer) -> None:
    """One slot, no waiting: while a slow request holds it, every other request is a 503 asking to come back.

    The slot is held by a request whose handling is slow (its ingest waits on a gate). A slow *sender* no
    longer holds one: bodies are read before the slot is taken (issue #13.5,
    test_hardening_trust.py::test_two_hundred_stalled_connections_do_not_delay_a_normal_webhook).
    """
    server = await controller(token=TOKEN, limits=Limits(max_in_flight=1, queue_wait_s=0.05, retry_after_s=7))
    pipeline = server.components.pipeline
    original, gate, entered = pipeline.ingest, asyncio.Event(), asyncio.Event()

    async def slow_ingest(events: Any) -> Any:
        entered.set()
        await gate.wait()
        return await original(events)

    pipeline.ingest = slow_ingest  # type: ignore[method-assign]
    async with server.client() as http:
        holder = asyncio.create_task(http.post("/alertmanager", json=_payload(_alert(999))))
        await asyncio.wait_for(entered.wait(), 30)
        answers = await asyncio.gather(
            *(http.post("/alertmanager", json=_payload(_alert(1000 + i))) for i in range(10))
        )
        reasoned = await http.post("/reason", json={"task_type": "remediation", "context": {"alert": _alert()}})
        gate.set()
        held = await holder
    assert held.status_code == 200
    assert [r.status_code for r in answers] == [503] * 10  # never 429: Alertmanager retries only 5xx
    assert reasoned.status_code == 503
    for response in [*answers, reasoned]:
        assert response.headers["retry-after"] == "7"
        assert "retry later" in response.json()["detail"]


async def test_a_flood_against_a_tiny_queue_stays_bounded_and_loses_nothing_accepted(
    controller: StartServer, sink: CaptureSink, tmp_path: Path
) -> None:
    queue_size = 4
    with CaptureSink() as llm:
        llm.answer(200, delay_s=0.5)  # slow decisions: the queue fills long before the workers drain it
        policy = write_policy(tmp_path / "p", SLOW_POLICY.replace("LLM_URL", llm.url.rstrip("/")))
        server = await controller(token=TOKEN, sink=sink.url, policies=[policy], queue_size=queue_size)
        pipeline = server.components.pipeline
        observed: list[int] = []
        flooding = True

        async def watch_queue() -> None:
            # The queue's length (test-only introspection): it is what memory grows with.
            while flooding:
                observed.append(pipeline._queue.qsize())
                await asyncio.sleep(0.002)

        watcher = asyncio.create_task(watch_queue())
        limits = httpx.Limits(max_connections=64)
        async with server.client(limits=limits) as http:
            answers = await asyncio.gather(
                *(http.post("/alertmanager", json=_payload(_alert(i))) for i in range(200)), return_exceptions=True
            )
        flooding = False
        await watcher
        await server.idle(120)

    assert not [a for a in answers if isinstance(a, BaseException)]
    statuses = [a.status_code for a in answers]  # type: ignore[union-attr]
    assert set(statuses) <= {200, 503}, set(statuses)
    accepted = [a for a in answers if a.status_code == 200]  # type: ignore[union-attr]
    refused = [a for a in answers if a.status_code == 503]  # type: ignore[union-attr]
    assert refused, "a flood of 200 against a queue of 4 must be refused in part"
    assert all(int(r.headers["retry-after"]) > 0 for r in refused)
    assert max(observed) <= queue_size
    # Nothing refused was stored; everything accepted was decided and triggered exactly once.
    stored = server.rows("alerts")
    assert stored == len(accepted)
    triggers = sink.accepted_ids(LAMBDA_TRIGGER)
    assert len(triggers) == len(set(triggers)) == len(accepted)


# ----------------------------------------------------------------------------- text that is not Unicode

_SURROGATE = '"x\\ud800"'  # valid JSON; json.loads makes a lone surrogate of it, which no encoder accepts
_CE_BINARY = {"ce-specversion": "1.0", "ce-id": "u-1", "ce-source": "/s", "content-type": "application/json"}
_CE_STRUCTURED = {"content-type": "application/cloudevents+json"}
NOT_UNICODE = [
    (
        "/alertmanager",
        {"content-type": "application/json"},
        '{"alerts": [{"status": "firing", "startsAt": "2026-05-01T10:00:00Z", "labels": {"alertname": "A", "pod": S}}]}',
    ),
    (
        "/alertmanager",
        {"content-type": "application/json"},
        '{"receiver": S, "alerts": [{"status": "firing", "startsAt": "2026-05-01T10:00:00Z", "labels": {"alertname": "A"}}]}',
    ),
    (
        "/events",
        {**_CE_BINARY, "ce-type": "io.homelab.prometheus.alert.fired"},
        '{"labels": {"alertname": "A", "pod": S}, "startsAt": "2026-05-01T10:00:00Z"}',
    ),
    ("/events", {**_CE_BINARY, "ce-type": "io.knative.lambda.response.success"}, '{"correlationId": S}'),
    (
        "/events",
        _CE_STRUCTURED,
        '{"specversion": "1.0", "id": S, "source": "/s", "type": "io.knative.lambda.response.error", "data": {"correlationId": "c"}}',
    ),
    (
        "/events",
        _CE_STRUCTURED,
        '{"specversion": "1.0", "id": "x", "source": "/s", "type": "io.knative.lambda.response.success", "data": {"correlationId": S}}',
    ),
    (
        "/events",
        _CE_STRUCTURED,
        (
            '{"specversion": "1.0", "id": "x", "source": "/s", "type": "io.homelab.reasoning.requested", '
            '"data": {"task_type": "remediation", "context": {"labels": {"alertname": S}}}}'
        ),
    ),
    (
        "/reason",
        {"content-type": "application/json"},
        '{"task_type": "remediation", "context": {"labels": {"alertname": S}}}',
    ),
    (
        "/reason",
        {"content-type": "application/json"},
        '{"task_type": "remediation", "conversation_id": S, "context": {}}',
    ),
    ("/approvals/abc", _AS_APPROVER, '{"decision": "approve", "actor": S}'),
]


@pytest.mark.parametrize(("path", "headers", "body"), NOT_UNICODE)
async def test_text_that_is_not_unicode_is_refused_on_every_route_never_a_500(
    server: Any, path: str, headers: dict[str, str], body: str
) -> None:
    async with server.client() as http:
        response = await http.post(path, content=body.replace("S", _SURROGATE).encode(), headers=headers)
        alive = await http.get("/healthz")
    assert 400 <= response.status_code < 500, response.text
    assert alive.status_code == 200
    assert server.rows("alerts") == 0


# ----------------------------------------------------------------------------- nesting


def _nested(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


NESTED_BODIES = [
    ("/alertmanager", {"content-type": "application/json"}, "N"),
    (
        "/alertmanager",
        {"content-type": "application/json"},
        '{"alerts": [{"status": "firing", "startsAt": "2026-05-01T10:00:00Z", "labels": N}]}',
    ),
    ("/alertmanager", {"content-type": "application/json"}, '{"extra": N, "alerts": []}'),
    (
        "/events",
        {**_CE_BINARY, "ce-type": "io.homelab.prometheus.alert.fired"},
        '{"labels": {"alertname": "A"}, "x": N}',
    ),
    ("/events", {**_CE_BINARY, "ce-type": "io.knative.lambda.response.success"}, '{"correlationId": "c", "result": N}'),
    (
        "/events",
        _CE_STRUCTURED,
        (
            '{"specversion": "1.0", "id": "x", "source": "/s", "type": "io.homelab.reasoning.requested", '
            '"data": {"task_type": "remediation", "context": {"deep": N, "labels": {"alertname": "A"}}}}'
        ),
    ),
    (
        "/reason",
        {"content-type": "application/json"},
        '{"task_type": "remediation", "context": {"deep": N, "labels": {"alertname": "A"}}}',
    ),
    ("/reason", {"content-type": "application/json"}, '{"task_type": "remediation", "context": {"alert": N}}'),
    ("/approvals/abc", _AS_APPROVER, '{"decision": "approve", "actor": "a", "x": N}'),
]


@pytest.mark.parametrize("depth", [64, 900, 990, 5_000, 200_000])
async def test_deeply_nested_json_is_answered_never_a_500(server: Any, depth: int) -> None:
    async with server.client() as http:
        for path, headers, template in NESTED_BODIES:
            response = await http.post(path, content=template.replace("N", _nested(depth)).encode(), headers=headers)
            assert response.status_code < 500, (path, template[:40], response.text[:200])
        assert (await http.get("/healthz")).status_code == 200
