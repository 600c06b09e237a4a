"""ReasoningClient against the real server: answers, refusals, retries on 5xx, and the fallback when it is down."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from controller.client import ReasoningClient, ReasoningError, ReasonResult
from tests.pipeline.edge.servers import EdgeServer, fixture_payload
from tests.pipeline.sink import CaptureSink


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens here once the socket is closed


def crashloop_alert() -> dict[str, Any]:
    alert: dict[str, Any] = fixture_payload("crashloop.json")["alerts"][0]
    return alert


async def test_select_returns_the_decision(server: EdgeServer) -> None:
    async with ReasoningClient(server.url, token=server.token) as client:
        result = await client.select(crashloop_alert())
    assert isinstance(result, ReasonResult)
    decision = result.decision()
    assert decision["lambda_function"] == "pod-restart"
    assert decision["parameters"] == {"name": "cart-7f9c6d5b8-x2k4q", "namespace": "shop", "type": "pod"}
    assert result.steps == 3
    assert [t["stage"] for t in result.reasoning_trace] == ["staticAnnotation", "trm", "rules"]


async def test_reason_with_labels_as_context(server: EdgeServer) -> None:
    async with ReasoningClient(server.url, token=server.token) as client:
        result = await client.reason(
            "what now?",
            {
                "labels": {
                    "alertname": "KubePersistentVolumeFillingUp",
                    "namespace": "monitoring",
                    "persistentvolumeclaim": "db",
                }
            },
        )
    assert result.decision()["lambda_function"] == "check-pvc-status"


async def test_refusals_are_not_retried_and_raise_without_a_fallback(server: EdgeServer) -> None:
    async with ReasoningClient(server.url, token=server.token) as client:
        with pytest.raises(ReasoningError) as info:
            await client.reason("why?", {}, task_type="general")
    assert info.value.status == 422
    assert "free-form" in str(info.value)
    async with ReasoningClient(server.url, token="wrong") as client:
        with pytest.raises(ReasoningError) as info:
            await client.select(crashloop_alert())
    assert info.value.status == 401
    metrics = server.components.metrics.http_requests.labels(route="/reason", code="401")
    assert metrics._value.get() == 1  # one attempt only: a 4xx is not retried


async def test_a_server_that_is_down_yields_the_fallback() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    async with ReasoningClient(url, timeout_s=1, retries=2, backoff_initial_s=0.01) as client:
        assert await client.select(crashloop_alert(), fallback={"lambda_function": None}) == {"lambda_function": None}
        seen: list[ReasoningError] = []

        def remember(error: ReasoningError) -> str:
            seen.append(error)
            return "rules-only"

        assert await client.select(crashloop_alert(), fallback=remember) == "rules-only"
        assert "unreachable" in str(seen[0]) and seen[0].status is None

        async def async_fallback(error: ReasoningError) -> str:
            return "async"

        assert await client.select(crashloop_alert(), fallback=async_fallback) == "async"
        with pytest.raises(ReasoningError, match="unreachable"):
            await client.select(crashloop_alert())


async def test_5xx_answers_are_retried_then_the_fallback_is_used(sink: CaptureSink) -> None:
    sink.answer(503)
    async with ReasoningClient(sink.url, retries=2, backoff_initial_s=0.01, backoff_max_s=0.02) as client:
        result = await client.select(crashloop_alert(), fallback="fallback")
    assert result == "fallback"
    assert [r.status for r in sink.requests] == [503, 503, 503]  # 1 try + 2 retries
    assert all(r.path == "/reason" for r in sink.requests)
