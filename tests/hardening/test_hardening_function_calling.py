"""A function-calling endpoint that misbehaves: bounded, refused, and the chain goes on.

tests/unit/decision/test_function_calling.py covers a server that is slow to
answer, a huge body, HTTP 500, a non-JSON body and a refused connection. The
gaps filled here:

- a server that answers 200 at once and then drips its body forever (the
  per-read timeout never trips; the stage's `timeoutMs` must);
- a compressed body that inflates far past the read limit (a gzip bomb);
- a redirect, which is never followed (the next hop is never contacted);
- a connection closed half-way through the body;
- any reply envelope at all (property test): a proposed call, an abstention,
  or a clean `ParseError` — never another exception.

Each misbehaviour ends the stage with a non-accepted outcome and the policy's
rules decide instead.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.decision import StageClients, decide
from controller.decision.function_calling import read_reply
from controller.decision.parsing import ParsedCall, ParseError
from controller.engine.llm_http import HttpChatTransport
from controller.schemas.decision import StageOutcome
from runbooks import default_catalog
from tests.support.loopback import serving
from tests.unit.decision.helpers import event, policy

CATALOG = default_catalog()
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Server:
    def __init__(self) -> None:
        self.url = ""
        self.handler: Handler | None = None
        self.hits: list[str] = []


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    state = Server()

    async def handle(request: web.Request) -> web.StreamResponse:
        state.hits.append(request.path)
        assert state.handler is not None
        return await state.handler(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    async with serving(app, shutdown_timeout=0.2) as url:
        state.url = url
        yield state


RULES = {
    "rules": [
        {"function": "pod-restart", "parameters": {"name": "{{ $labels.pod }}", "namespace": "{{ $labels.namespace }}"}}
    ]
}


async def _decide(server: Server, api: str = "ollama", timeout_ms: int = 800) -> Any:
    stage = {"functionCalling": {"endpoint": server.url, "api": api, "model": "m", "timeoutMs": timeout_ms}}
    async with httpx.AsyncClient(trust_env=False) as http:
        return await decide(
            event(), policy(stage, RULES, scope=("shop",)), CATALOG, StageClients(chat=HttpChatTransport(http))
        )


def _assert_handed_over(decision: Any, *outcomes: StageOutcome) -> None:
    llm, rules = decision.trace
    assert llm.stage == "functionCalling" and llm.outcome in outcomes, (llm.outcome, llm.reason)
    assert rules.outcome is StageOutcome.ACCEPTED
    assert decision.outcome == "trigger" and decision.stage == "rules"


async def test_a_body_that_drips_forever_is_cut_off_by_the_stage_timeout(server: Server) -> None:
    async def drip(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(b'{"message": {"role": "assistant", "content": "')
        for _ in range(10_000):
            await response.write(b" ")
            await asyncio.sleep(0.02)
        return response

    server.handler = drip
    _assert_handed_over(await _decide(server, timeout_ms=500), StageOutcome.TIMEOUT)


@pytest.mark.parametrize("api", ["ollama", "openai"])
async def test_a_compressed_body_that_inflates_past_the_limit_is_refused(server: Server, api: str) -> None:
    bomb = gzip.compress(b"{" + b" " * (64 * 1024 * 1024) + b"}", compresslevel=9)
    assert len(bomb) < 200 * 1024

    async def inflate(request: web.Request) -> web.StreamResponse:
        return web.Response(body=bomb, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})

    server.handler = inflate
    decision = await _decide(server, api, timeout_ms=20_000)
    _assert_handed_over(decision, StageOutcome.INVALID, StageOutcome.ERROR)
    assert "larger than" in decision.trace[0].reason


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_a_redirect_is_not_followed(server: Server, status: int) -> None:
    async def redirect(request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/elsewhere"):
            return web.json_response(
                {
                    "message": {
                        "role": "assistant",
                        "content": "",
                        "tool_calls": [
                            {"function": {"name": "pod-restart", "arguments": {"name": "x", "namespace": "shop"}}}
                        ],
                    }
                }
            )
        return web.Response(status=status, headers={"Location": f"{server.url}/elsewhere"})

    server.handler = redirect
    decision = await _decide(server)
    _assert_handed_over(decision, StageOutcome.ERROR)
    assert "redirect" in decision.trace[0].reason
    assert not [h for h in server.hits if h.startswith("/elsewhere")]


async def test_a_connection_closed_mid_body_is_an_error(server: Server) -> None:
    async def cut(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            status=200, headers={"Content-Type": "application/json", "Content-Length": "5000"}
        )
        await response.prepare(request)
        await response.write(b'{"message": {"content": "pod-')
        assert request.transport is not None
        request.transport.close()
        return response

    server.handler = cut
    _assert_handed_over(await _decide(server), StageOutcome.ERROR, StageOutcome.INVALID)


async def test_html_instead_of_json_is_invalid(server: Server) -> None:
    async def html(request: web.Request) -> web.StreamResponse:
        return web.Response(text="<html><body>502 Bad Gateway</body></html>", content_type="text/html")

    server.handler = html
    _assert_handed_over(await _decide(server), StageOutcome.INVALID)


# ----------------------------------------------------------------------------- any reply envelope

scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
)
values = st.recursive(
    scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3), max_leaves=15
)
functions = st.one_of(
    values,
    st.fixed_dictionaries(
        {},
        optional={
            "name": st.sampled_from(["pod-restart", "no_automated_remediation", ""]) | values,
            "arguments": values | values.map(json.dumps) | st.text(max_size=30),
        },
    ),
)
tool_calls = st.one_of(
    values, st.lists(st.one_of(values, st.fixed_dictionaries({}, optional={"function": functions})), max_size=2)
)
messages = st.one_of(
    values,
    st.fixed_dictionaries(
        {}, optional={"role": values, "content": values | st.text(max_size=60), "tool_calls": tool_calls}
    ),
)
replies = st.one_of(
    values,
    st.fixed_dictionaries({}, optional={"message": messages}),
    st.fixed_dictionaries(
        {},
        optional={
            "choices": st.one_of(
                values,
                st.lists(st.one_of(values, st.fixed_dictionaries({}, optional={"message": messages})), max_size=2),
            )
        },
    ),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(
    st.sampled_from(["ollama", "openai"]),
    st.one_of(replies.map(lambda r: json.dumps(r).encode()), st.binary(max_size=80)),
)
def test_any_reply_is_a_call_an_abstention_or_a_parse_error(api: str, raw: bytes) -> None:
    try:
        parsed = read_reply(api, raw)  # type: ignore[arg-type]
    except ParseError:
        return
    assert isinstance(parsed, ParsedCall)
    assert parsed.function is None or isinstance(parsed.function, str)
    assert isinstance(parsed.parameters, dict)
