"""The function-calling client: ask an LLM server to pick a runbook function through tool calling.

Two wire formats, both non-streaming:

- Ollama native: ``POST {endpoint}/api/chat`` with ``{"model", "messages", "tools",
  "stream": false, "options": {"temperature": 0}}``; the answer is
  ``message.tool_calls[0].function.{name, arguments}`` with ``arguments`` a JSON object.
- OpenAI-compatible (vLLM, llama.cpp, Ollama's /v1, hosted APIs):
  ``POST {endpoint}/v1/chat/completions`` with ``tools``, ``tool_choice: "auto"``,
  ``temperature: 0``; the answer is ``choices[0].message.tool_calls[0].function.{name,
  arguments}`` with ``arguments`` a JSON *string*. An endpoint already ending in
  ``/v1`` is not given a second one.

The tools are the catalog's functions restricted to the policy's
``allowedFunctions``, plus `ABSTAIN_TOOL` so a model that sees nothing to do has
a proper way to say so. When the server answers in ``content`` instead of a tool
call (small models often do), the content goes through the common parser.

This module builds requests and decodes replies; it does no I/O. The bytes
travel through an injected `ChatTransport` (the HTTP one is
`controller.engine.llm_http.HttpChatTransport`, which reads at most
`MAX_RESPONSE_BYTES` so a misbehaving server cannot make the controller buffer
an unbounded body). The stage (``stages.py``) owns the time limit, the outcome
and the validation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

from controller.decision.parsing import (
    ABSTAIN_TOOL,
    ParsedCall,
    ParseError,
    call_from_object,
    load_json,
    parse_call,
)
from controller.schemas.alerts import AlertEvent
from controller.schemas.policy import FunctionCallingStage
from runbooks import Catalog

MAX_RESPONSE_BYTES = 1 << 20
# Enough of an error body to tell "model not found" from "overloaded" in the trace.
MAX_ERROR_SNIPPET = 300

SYSTEM_PROMPT = (
    "You choose the automated remediation for one Prometheus alert from a Kubernetes cluster. "
    "Call exactly one tool. Call a runbook function only when the alert clearly matches what that "
    "function is for, and copy every parameter value verbatim from the alert's labels (never invent "
    "names or namespaces). If no function clearly fits, or the alert lacks a value a function needs, "
    f"call {ABSTAIN_TOOL} with a short reason: a human will look at it."
)

ABSTAIN_TOOL_SCHEMA: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": ABSTAIN_TOOL,
        "description": "No runbook function fits this alert, or it lacks the values one needs: escalate to a human.",
        "parameters": {
            "type": "object",
            "properties": {"reason": {"type": "string", "description": "Why nothing fits.", "maxLength": 500}},
            "required": [],
            "additionalProperties": False,
        },
    },
}


class ChatTransport(Protocol):
    """Sends one JSON request to a function-calling server and returns the raw 2xx reply.

    Raises `ReplyError` for anything else (transport failure, HTTP error, oversized reply).
    """

    async def post_json(self, url: str, body: Mapping[str, Any], headers: Mapping[str, str]) -> bytes: ...


class ReplyError(Exception):
    """The server's reply could not be used. `outcome` is "error" (HTTP/transport) or "invalid" (garbage)."""

    def __init__(self, outcome: Literal["error", "invalid"], message: str) -> None:
        super().__init__(message)
        self.outcome = outcome


def build_tools(catalog: Catalog, allowed: Sequence[str]) -> list[dict[str, Any]]:
    """The allowed runbook functions as tools, then the abstain tool."""
    return [*catalog.tool_schemas(allowed), ABSTAIN_TOOL_SCHEMA]


def alert_message(event: AlertEvent) -> str:
    """The alert as compact JSON: labels, annotations (group's merged under its own), status, start."""
    alert = event.alert
    body = {
        "status": alert.status,
        "labels": alert.labels,
        "annotations": event.merged_annotations(),
        "startsAt": alert.startsAt.isoformat(),
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def build_request(
    stage: FunctionCallingStage, event: AlertEvent, tools: list[dict[str, Any]]
) -> tuple[str, dict[str, Any]]:
    """(URL, JSON body) for the stage's API."""
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": alert_message(event)}]
    endpoint = stage.endpoint.rstrip("/")
    if stage.api == "ollama":
        body = {
            "model": stage.model,
            "messages": messages,
            "tools": tools,
            "stream": False,
            "options": {"temperature": 0},
        }
        return f"{endpoint}/api/chat", body
    base = endpoint if endpoint.endswith("/v1") else f"{endpoint}/v1"
    body = {
        "model": stage.model,
        "messages": messages,
        "tools": tools,
        "tool_choice": "auto",
        "stream": False,
        "temperature": 0,
    }
    return f"{base}/chat/completions", body


def _first_tool_call(message: Mapping[str, Any]) -> Mapping[str, Any] | None:
    calls = message.get("tool_calls")
    if not calls:
        return None
    if not isinstance(calls, list) or not isinstance(calls[0], dict):
        raise ParseError("tool_calls is not a list of objects")
    function = calls[0].get("function")
    if not isinstance(function, dict):
        raise ParseError("the tool call has no function object")
    return function


def _message(api: Literal["ollama", "openai"], reply: Any) -> Mapping[str, Any]:
    if not isinstance(reply, dict):
        raise ParseError("the reply is not a JSON object")
    if api == "ollama":
        message = reply.get("message")
    else:
        choices = reply.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise ParseError("the reply has no choices")
        message = choices[0].get("message")
    if not isinstance(message, dict):
        raise ParseError("the reply has no message")
    return message


def read_reply(api: Literal["ollama", "openai"], raw: bytes) -> ParsedCall:
    """Decode the server's reply into a proposed call or an abstention; ParseError if it is neither."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError("the reply is not UTF-8") from None
    # The envelope may be as large as the read limit; what the model wrote inside it is held to the parser's limits.
    message = _message(api, load_json(text, "the reply", max_chars=MAX_RESPONSE_BYTES))
    function = _first_tool_call(message)
    if function is not None:
        name = function.get("name")
        if name == ABSTAIN_TOOL:
            arguments = function.get("arguments")
            if isinstance(arguments, str):
                try:
                    arguments = load_json(arguments, "the arguments string")
                except ParseError:
                    arguments = None
            reason = arguments.get("reason") if isinstance(arguments, dict) else None
            return ParsedCall(None, reasoning=str(reason)[:500] if reason else f"the model called {ABSTAIN_TOOL}")
        if not isinstance(name, str) or not name:
            raise ParseError("the tool call names no function")
        return call_from_object({"function": name, "arguments": function.get("arguments")})
    content = message.get("content")
    if not isinstance(content, str) or not content.strip():
        raise ParseError("the reply has neither a tool call nor content")
    return parse_call(content)
