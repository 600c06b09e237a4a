"""The functionCalling stage against a real loopback HTTP server speaking Ollama's and OpenAI's formats."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from aiohttp import web

from controller.decision import StageClients, decide
from controller.decision.function_calling import (
    ABSTAIN_TOOL,
    MAX_RESPONSE_BYTES,
    SYSTEM_PROMPT,
)
from controller.engine.llm_http import HttpChatTransport
from controller.schemas.decision import Decision, StageOutcome
from controller.schemas.policy import SecretKeyRef
from runbooks import default_catalog
from tests.support.loopback import serving

from .helpers import event, policy

CATALOG = default_catalog()
ALLOWED = ("pod-check-status", "pod-restart")
GOOD = {"name": "cart-7f9", "namespace": "shop"}
Reply = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class LLMServer:
    """A loopback server for both wire formats; `reply` decides the answer, every request is kept."""

    url: str = ""
    reply: Reply | None = None
    received: list[Received] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.received.append(Received(request.path, dict(request.headers), await request.json()))
        assert self.reply is not None
        return await self.reply(request)


@pytest.fixture
async def server() -> AsyncIterator[LLMServer]:
    state = LLMServer()
    app = web.Application()
    app.router.add_post("/api/chat", state.handle)
    app.router.add_post("/v1/chat/completions", state.handle)
    async with serving(app, shutdown_timeout=0.5) as url:
        state.url = url
        yield state
        state.release.set()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as client:
        yield client


def tool_call(api: str, name: str, arguments: Any) -> Reply:
    """A well-formed reply carrying one tool call (arguments as given: object for Ollama, string for OpenAI)."""

    async def reply(_: web.Request) -> web.Response:
        if api == "ollama":
            message = {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"id": "call_1", "function": {"index": 0, "name": name, "arguments": arguments}}],
            }
            return web.json_response(
                {"model": "functiongemma", "done": True, "done_reason": "stop", "message": message}
            )
        args = arguments if isinstance(arguments, str) else json.dumps(arguments)
        call = {"id": "call_1", "index": 0, "type": "function", "function": {"name": name, "arguments": args}}
        message = {"role": "assistant", "content": None, "tool_calls": [call]}
        return web.json_response(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
            }
        )

    return reply


def content(api: str, text: str) -> Reply:
    async def reply(_: web.Request) -> web.Response:
        message = {"role": "assistant", "content": text}
        if api == "ollama":
            return web.json_response({"model": "m", "done": True, "message": message})
        return web.json_response({"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})

    return reply


def fc_policy(url: str, api: str, **options: Any) -> Any:
    stage = {"functionCalling": {"endpoint": url, "api": api, "model": "functiongemma", "timeoutMs": 3000, **options}}
    return policy(stage, allowed=ALLOWED, scope=("shop",))


async def run(server: LLMServer, http: httpx.AsyncClient, api: str, secrets: Any = None, **options: Any) -> Decision:
    return await decide(
        event(),
        fc_policy(server.url, api, **options),
        CATALOG,
        StageClients(chat=HttpChatTransport(http), secrets=secrets),
    )


APIS = pytest.mark.parametrize("api", ["ollama", "openai"])


@APIS
async def test_a_valid_tool_call_is_accepted(server: LLMServer, http: httpx.AsyncClient, api: str) -> None:
    server.reply = tool_call(api, "pod-restart", {**GOOD, "type": "pod"})
    decision = await run(server, http, api)
    assert decision.outcome == "trigger" and decision.stage == "functionCalling"
    assert decision.function == "pod-restart" and decision.parameters == {**GOOD, "type": "pod"}
    assert decision.confidence is None


@APIS
async def test_the_request_offers_only_allowed_tools_plus_abstain_without_streaming(
    server: LLMServer, http: httpx.AsyncClient, api: str
) -> None:
    server.reply = tool_call(api, ABSTAIN_TOOL, {})
    await run(server, http, api)
    [request] = server.received
    body = request.body
    assert request.path == ("/api/chat" if api == "ollama" else "/v1/chat/completions")
    assert body["model"] == "functiongemma"
    assert body["stream"] is False
    assert [t["function"]["name"] for t in body["tools"]] == [*ALLOWED, ABSTAIN_TOOL]
    assert all(t["type"] == "function" for t in body["tools"])
    assert "scale-deployment" not in json.dumps(body["tools"])
    if api == "ollama":
        assert body["options"] == {"temperature": 0}
    else:
        assert body["tool_choice"] == "auto" and body["temperature"] == 0
    system, user = body["messages"]
    assert system == {"role": "system", "content": SYSTEM_PROMPT}
    alert = json.loads(user["content"])
    assert user["role"] == "user" and alert["labels"]["pod"] == "cart-7f9" and alert["status"] == "firing"
    assert "authorization" not in {k.lower() for k in request.headers}


@APIS
async def test_the_bearer_token_comes_from_the_secret_ref(server: LLMServer, http: httpx.AsyncClient, api: str) -> None:
    asked: list[tuple[str, SecretKeyRef]] = []

    def secrets(namespace: str, ref: SecretKeyRef) -> str | None:
        asked.append((namespace, ref))
        return "s3cret-token"

    server.reply = tool_call(api, "pod-restart", GOOD)
    decision = await run(server, http, api, secrets=secrets, secretRef={"name": "llm", "key": "apiKey"})
    assert decision.outcome == "trigger"
    assert asked == [("ops", SecretKeyRef(name="llm", key="apiKey"))]
    assert server.received[0].headers["Authorization"] == "Bearer s3cret-token"
    assert "s3cret-token" not in decision.model_dump_json()


@pytest.mark.parametrize("resolver", [None, lambda ns, ref: None, lambda ns, ref: 1 / 0])
async def test_an_unresolvable_secret_is_an_error_and_nothing_is_sent(
    server: LLMServer, http: httpx.AsyncClient, resolver: Any
) -> None:
    server.reply = tool_call("ollama", "pod-restart", GOOD)
    decision = await run(server, http, "ollama", secrets=resolver, secretRef={"name": "llm"})
    assert decision.trace[0].outcome is StageOutcome.ERROR
    assert "llm" in decision.trace[0].reason
    assert server.received == []


@APIS
async def test_invalid_json_arguments_are_invalid(server: LLMServer, http: httpx.AsyncClient, api: str) -> None:
    server.reply = tool_call(api, "pod-restart", '{"name": "cart-7f9", namespace: shop')
    decision = await run(server, http, api)
    assert decision.trace[0].outcome is StageOutcome.INVALID
    assert "not valid JSON" in decision.trace[0].reason
    assert decision.outcome == "escalate"


@APIS
async def test_an_invented_function_is_invalid(server: LLMServer, http: httpx.AsyncClient, api: str) -> None:
    server.reply = tool_call(api, "kubectl_exec", {"command": "rm -rf /"})
    decision = await run(server, http, api)
    assert decision.trace[0].outcome is StageOutcome.INVALID
    assert "not a function in the runbook catalog" in decision.trace[0].reason


@APIS
async def test_a_function_the_policy_does_not_allow_is_disallowed(
    server: LLMServer, http: httpx.AsyncClient, api: str
) -> None:
    server.reply = tool_call(api, "scale-deployment", {"name": "cart", "namespace": "shop", "replicas": 0})
    decision = await run(server, http, api)
    assert decision.trace[0].outcome is StageOutcome.DISALLOWED
    assert decision.outcome == "escalate"


@APIS
async def test_the_abstain_tool_abstains_with_the_models_reason(
    server: LLMServer, http: httpx.AsyncClient, api: str
) -> None:
    server.reply = tool_call(api, ABSTAIN_TOOL, {"reason": "watchdog alerts need no action"})
    decision = await run(server, http, api)
    assert decision.trace[0].outcome is StageOutcome.ABSTAINED
    assert "watchdog alerts need no action" in decision.trace[0].reason


@APIS
async def test_a_slow_server_times_out(server: LLMServer, http: httpx.AsyncClient, api: str) -> None:
    async def slow(_: web.Request) -> web.Response:
        await asyncio.wait_for(server.release.wait(), timeout=5)
        return await tool_call(api, "pod-restart", GOOD)(_)

    server.reply = slow
    decision = await run(server, http, api, timeoutMs=150)
    assert decision.trace[0].outcome is StageOutcome.TIMEOUT
    assert "150 ms" in decision.trace[0].reason


@APIS
async def test_a_huge_body_is_abandoned_at_the_limit(server: LLMServer, http: httpx.AsyncClient, api: str) -> None:
    async def huge(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        chunk = b" " * 65536
        try:
            for _ in range(4 * MAX_RESPONSE_BYTES // len(chunk)):
                await response.write(chunk)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response

    server.reply = huge
    decision = await run(server, http, api)
    assert decision.trace[0].outcome is StageOutcome.INVALID
    assert f"larger than {MAX_RESPONSE_BYTES} bytes" in decision.trace[0].reason


@APIS
async def test_http_500_is_an_error(server: LLMServer, http: httpx.AsyncClient, api: str) -> None:
    async def fail(_: web.Request) -> web.Response:
        return web.json_response({"error": "model 'functiongemma' not found"}, status=500)

    server.reply = fail
    decision = await run(server, http, api)
    assert decision.trace[0].outcome is StageOutcome.ERROR
    assert "HTTP 500" in decision.trace[0].reason and "not found" in decision.trace[0].reason


@APIS
async def test_a_non_json_body_is_invalid(server: LLMServer, http: httpx.AsyncClient, api: str) -> None:
    async def html(_: web.Request) -> web.Response:
        return web.Response(text="<html>gateway</html>", content_type="text/html")

    server.reply = html
    decision = await run(server, http, api)
    assert decision.trace[0].outcome is StageOutcome.INVALID


@APIS
async def test_a_reply_in_content_goes_through_the_parser(server: LLMServer, http: httpx.AsyncClient, api: str) -> None:
    server.reply = content(
        api,
        'Restarting it: ```json\n{"name": "pod-restart", "parameters": {"name": "cart-7f9", "namespace": "shop"}}\n```',
    )
    decision = await run(server, http, api)
    assert decision.outcome == "trigger" and decision.function == "pod-restart"
    server.reply = content(api, "I am not sure what to do.")
    decision = await run(server, http, api)
    assert decision.trace[0].outcome is StageOutcome.INVALID
    server.reply = content(api, "")
    decision = await run(server, http, api)
    assert decision.trace[0].outcome is StageOutcome.INVALID


@APIS
async def test_min_confidence_cannot_be_met_without_a_confidence(
    server: LLMServer, http: httpx.AsyncClient, api: str
) -> None:
    server.reply = tool_call(api, "pod-restart", GOOD)
    decision = await run(server, http, api, minConfidence=0.5)
    assert decision.trace[0].outcome is StageOutcome.BELOW_THRESHOLD
    assert "report no calibrated confidence" in decision.trace[0].reason
    assert decision.trace[0].function == "pod-restart"


async def test_an_endpoint_ending_in_v1_gets_no_second_v1(server: LLMServer, http: httpx.AsyncClient) -> None:
    server.reply = tool_call("openai", "pod-restart", GOOD)
    decision = await decide(
        event(), fc_policy(server.url + "/v1/", "openai"), CATALOG, StageClients(chat=HttpChatTransport(http))
    )
    assert decision.outcome == "trigger"
    assert server.received[0].path == "/v1/chat/completions"


async def test_a_refused_connection_is_an_error(http: httpx.AsyncClient) -> None:
    decision = await decide(
        event(), fc_policy("http://127.0.0.1:9", "ollama"), CATALOG, StageClients(chat=HttpChatTransport(http))
    )
    assert decision.trace[0].outcome in (StageOutcome.ERROR, StageOutcome.TIMEOUT)


async def test_without_an_http_client_the_stage_is_an_error() -> None:
    decision = await decide(event(), fc_policy("http://127.0.0.1:9", "ollama"), CATALOG, StageClients())
    assert decision.trace[0].outcome is StageOutcome.ERROR


async def test_a_failed_llm_hands_over_to_the_rules(server: LLMServer, http: httpx.AsyncClient) -> None:
    async def fail(_: web.Request) -> web.Response:
        return web.Response(status=503, text="overloaded")

    server.reply = fail
    rule = {
        "match": {},
        "function": "pod-check-status",
        "parameters": {"name": "{{ $labels.pod }}", "namespace": "{{ $labels.namespace }}"},
    }
    p = policy(
        {"functionCalling": {"endpoint": server.url, "timeoutMs": 3000}},
        {"rules": [rule]},
        allowed=ALLOWED,
        scope=("shop",),
    )
    decision = await decide(event(), p, CATALOG, StageClients(chat=HttpChatTransport(http)))
    assert [t.outcome for t in decision.trace] == [StageOutcome.ERROR, StageOutcome.ACCEPTED]
    assert decision.function == "pod-check-status" and decision.stage == "rules"


async def test_a_large_reply_under_the_limit_is_read(server: LLMServer, http: httpx.AsyncClient) -> None:
    async def padded(_: web.Request) -> web.Response:
        call = {"function": {"name": "pod-restart", "arguments": GOOD}}
        message = {"role": "assistant", "content": "", "tool_calls": [call]}
        return web.json_response({"message": message, "padding": "x" * (MAX_RESPONSE_BYTES // 2)})

    server.reply = padded
    decision = await run(server, http, "ollama")
    assert decision.outcome == "trigger"
    assert len(decision.trace[0].raw_output or "") < 5000  # the trace keeps a bounded excerpt
