"""A client for other agents: ask a running trm-sre which remediation fits an alert.

`POST /reason` is the same service the homelab's agents were written against
(`{question, context, max_steps, task_type}` → `{answer, steps, confidence,
reasoning_trace, duration_ms}`), with one honest difference: TRM selects
remediations; it does not answer free-form questions, so only
`task_type="remediation"` is served.

The wire models live here (the server imports them) so the contract other
agents see is defined in one place. Calls time out, retry connection errors
and 5xx with backoff, and — because a caller usually has a safe default —
return a caller-supplied fallback instead of raising when every attempt fails.

    async with ReasoningClient("http://trm-sre:8080", token=...) as client:
        result = await client.select(alert, fallback=lambda error: None)  # None: no answer
        if result is not None:
            print(result.decision()["lambda_function"])

`fallback=None` (the default) means "no fallback": the call raises ReasoningError.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Self

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

log = logging.getLogger(__name__)

REMEDIATION_TASK = "remediation"
FREE_FORM_REFUSAL = "TRM selects remediations; it does not answer free-form questions"


class ReasonRequest(BaseModel):
    """Body of `POST /reason` and data of `io.homelab.reasoning.requested`."""

    model_config = ConfigDict(extra="ignore")

    question: str = Field(default="", max_length=8_192)
    # For remediation: {"alert": <Alertmanager alert object>} or {"labels": {...}, "annotations": {...}}.
    context: dict[str, Any] = Field(default_factory=dict)
    # Accepted for compatibility; the matched policy's trm.maxSteps bounds the model's recursion.
    max_steps: int = Field(default=8, ge=1, le=32)
    task_type: str = Field(default=REMEDIATION_TASK, max_length=64)
    conversation_id: str | None = Field(default=None, max_length=256)


class ReasonResult(BaseModel):
    """Answer of `POST /reason` (and data of `io.homelab.reasoning.completed`)."""

    model_config = ConfigDict(extra="ignore")

    # The decision as JSON text: {"lambda_function", "parameters", "outcome", "guard", "guard_reason", "policy",
    # "decision_id", ...}. `outcome` is "trigger" only when the pipeline would really trigger now; otherwise
    # dry_run | approval_required | cooldown | storm_breaker | escalate | no_policy (docs/api.md).
    answer: str
    # Chain stages evaluated to reach the decision.
    steps: int
    confidence: float
    # One entry per chain stage: what it proposed and why it was accepted or passed over.
    reasoning_trace: list[dict[str, Any]] = Field(default_factory=list)
    duration_ms: float
    decision_id: str | None = None
    conversation_id: str | None = None

    def decision(self) -> dict[str, Any]:
        """`answer` parsed."""
        parsed: dict[str, Any] = json.loads(self.answer)
        return parsed

    def would_trigger(self) -> bool:
        """True only when the pipeline would really trigger the chosen function now (every guard passes)."""
        return self.decision().get("outcome") == "trigger"


class ReasoningError(RuntimeError):
    """Every attempt failed; `status` is the last HTTP status, or None when no answer came."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class _Retryable(Exception):
    """A 5xx: worth another attempt."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, (_Retryable, httpx.TransportError))


Fallback = Any | Callable[[ReasoningError], Any] | Callable[[ReasoningError], Awaitable[Any]]


class ReasoningClient:
    """Async client of `POST /reason`. Use as an async context manager, or call `aclose()`."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout_s: float = 5,
        retries: int = 2,
        *,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 2.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s, transport=transport
        )
        self._attempts = max(1, retries + 1)
        self._backoff = (backoff_initial_s, backoff_max_s)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def reason(
        self,
        question: str,
        context: dict[str, Any],
        max_steps: int = 8,
        task_type: str = REMEDIATION_TASK,
        fallback: Fallback = None,
    ) -> ReasonResult | Any:
        """Ask; on failure after all attempts return `fallback` (or its result, if callable), else raise."""
        request = ReasonRequest(question=question, context=context, max_steps=max_steps, task_type=task_type)
        try:
            return await self._post_reason(request)
        except ReasoningError as error:
            if fallback is None:
                raise
            log.warning("reasoning request failed, using the fallback: %s", error)
            return await _resolve_fallback(fallback, error)

    async def select(self, alert: dict[str, Any], fallback: Fallback = None) -> ReasonResult | Any:
        """Which remediation fits this Alertmanager alert object (`labels`, `annotations`, `startsAt`...)."""
        return await self.reason(
            question="Which remediation fits this alert?", context={"alert": alert}, fallback=fallback
        )

    async def _post_reason(self, request: ReasonRequest) -> ReasonResult:
        body = request.model_dump(mode="json", exclude_none=True)
        initial, maximum = self._backoff
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_random_exponential(multiplier=initial, max=maximum),  # "full jitter"
            retry=retry_if_exception(_is_retryable),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    response = await self._http.post("/reason", json=body)
                    if response.status_code >= 500:
                        raise _Retryable(response)
        except _Retryable as exc:
            raise ReasoningError(
                f"trm-sre answered {exc.response.status_code}: {_detail(exc.response)}", exc.response.status_code
            ) from exc
        except httpx.HTTPError as exc:
            raise ReasoningError(f"trm-sre unreachable: {type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise ReasoningError(f"trm-sre answered {response.status_code}: {_detail(response)}", response.status_code)
        try:
            return ReasonResult.model_validate_json(response.content)
        except ValidationError as exc:
            raise ReasoningError(f"trm-sre sent an unexpected answer: {exc}", response.status_code) from exc


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))[:500]
    except ValueError:
        return response.text[:500]


async def _resolve_fallback(fallback: Fallback, error: ReasoningError) -> Any:
    if not callable(fallback):
        return fallback
    value = fallback(error)
    if inspect.isawaitable(value):
        value = await value
    return value
