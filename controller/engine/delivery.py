"""CloudEvents out: building the events a decision emits, and sending them to the sink.

Building happens when the decision is committed: the event's id, time and
data are fixed then and stored in the outbox, so a replay after a crash or an
outage sends byte-for-byte the same event under the same id (consumers can
de-duplicate on source + id). Only the `K_CE_OVERRIDES` extensions are added
at send time, so a changed SinkBinding applies to what is still queued.

Sending follows Knative's delivery semantics: binary content mode (the
`lambda.trigger` consumers read `data` as JSON), retries with exponential
backoff and jitter on 5xx, 404, 408, 409, 429 and transport errors, no retry
on any other answer (the event will not get better by being resent). When no
sink URL is configured at all, events are appended to a JSONL file instead
(one structured CloudEvent per line, fsynced) so a standalone run leaves a
record of what it would have sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import aiohttp
from cloudevents.core.bindings.http import to_binary_event
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from controller.engine.guards import ApprovalRequestData
from controller.engine.store import OutboxEntry
from controller.observability import tracing
from controller.schemas.alerts import AlertEvent
from controller.schemas.decision import (
    APPROVAL_REQUESTED,
    LAMBDA_TRIGGER,
    REMEDIATION_ESCALATED,
    Decision,
    EscalationData,
    TriggerData,
)

log = logging.getLogger(__name__)

# Knative's SelectiveRetry: these answers mean "try again later".
RETRYABLE_STATUS = frozenset({404, 408, 409, 429})
# CloudEvents extension names: lowercase alphanumerics, at most 20 (the SDK refuses anything else).
_EXTENSION_NAME = re.compile(r"^[a-z0-9]{1,20}$")
# Attributes the spec defines: K_CE_OVERRIDES may only add or change extensions.
_SPEC_ATTRIBUTES = frozenset(
    {"id", "source", "specversion", "type", "datacontenttype", "dataschema", "subject", "time", "data", "data_base64"}
)
JSONL_SINK_FILENAME = "triggers.jsonl"


def is_extension_name(name: str) -> bool:
    return bool(_EXTENSION_NAME.fullmatch(name)) and name not in _SPEC_ATTRIBUTES


def event_ids(decision_id: str) -> dict[str, str]:
    """The deterministic CloudEvent ids of everything one decision can emit."""
    return {
        LAMBDA_TRIGGER: f"{decision_id}-trigger",
        REMEDIATION_ESCALATED: f"{decision_id}-escalated",
        APPROVAL_REQUESTED: f"{decision_id}-approval",
    }


def _attributes(decision: Decision, event_type: str, source: str, extra: Mapping[str, str]) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "id": event_ids(decision.id)[event_type],
        "source": source,
        "type": event_type,
        "specversion": "1.0",
        "datacontenttype": "application/json",
        "time": datetime.now(UTC).isoformat(),
        "correlationid": decision.id,
        "policy": decision.policy,
    }
    if decision.alertname:
        attributes["subject"] = decision.alertname
        attributes["alertname"] = decision.alertname
    attributes.update({k: v for k, v in extra.items() if v and is_extension_name(k)})
    if decision.traceparent:  # the CloudEvents distributed-tracing extension: the decision's trace
        attributes["traceparent"] = decision.traceparent
    return attributes


def trigger_entry(decision: Decision, event: AlertEvent, source: str, sink: str | None) -> OutboxEntry:
    """io.homelab.agent-sre.lambda.trigger for an accepted (and, if required, approved) decision."""
    if decision.function is None:
        raise ValueError(f"decision {decision.id} has no function to trigger")
    data = TriggerData(
        lambda_function=decision.function,
        parameters=decision.parameters,
        alert=event.as_alert_dict(),
        correlation_id=decision.id,
        policy=decision.policy,
        triggered_by=f"trm-sre/{decision.stage or 'unknown'}",
        confidence=decision.confidence,
        reasoning=decision.reasoning,
    )
    attributes = _attributes(decision, LAMBDA_TRIGGER, source, {"lambdafunction": decision.function})
    return OutboxEntry(attributes["id"], decision.id, LAMBDA_TRIGGER, sink, attributes, data.model_dump(mode="json"))


def escalation_entry(
    decision: Decision, event: AlertEvent, source: str, sink: str | None, reasons: list[str]
) -> OutboxEntry:
    """io.homelab.agent-sre.remediation.escalated: nothing was (or may be) done automatically."""
    trace_reasons = [f"{t.stage}: {t.outcome.value}: {t.reason}" for t in decision.trace]
    all_reasons = reasons + [r for r in trace_reasons if r not in reasons]
    data = EscalationData(
        alert=event.as_alert_dict(),
        correlation_id=decision.id,
        policy=decision.policy,
        reasons=all_reasons or [decision.reasoning or "no stage yielded a valid decision"],
        trace=list(decision.trace),
    )
    attributes = _attributes(decision, REMEDIATION_ESCALATED, source, {})
    return OutboxEntry(
        attributes["id"], decision.id, REMEDIATION_ESCALATED, sink, attributes, data.model_dump(mode="json")
    )


def approval_entry(
    decision: Decision, event: AlertEvent, source: str, sink: str | None, approval_id: str, expires_at: str
) -> OutboxEntry:
    """io.homelab.agent-sre.approval.requested: a human must approve before the trigger is sent."""
    data = ApprovalRequestData(
        approval_id=approval_id,
        correlation_id=decision.id,
        policy=decision.policy,
        lambda_function=decision.function or "",
        parameters=decision.parameters,
        alert=event.as_alert_dict(),
        confidence=decision.confidence,
        reasoning=decision.reasoning,
        expires_at=expires_at,
    )
    attributes = _attributes(decision, APPROVAL_REQUESTED, source, {"lambdafunction": decision.function or ""})
    return OutboxEntry(
        attributes["id"], decision.id, APPROVAL_REQUESTED, sink, attributes, data.model_dump(mode="json")
    )


def to_cloudevent(entry: OutboxEntry, overrides: Mapping[str, str]) -> CloudEvent:
    """The stored event with the K_CE_OVERRIDES extensions applied (spec attributes are never overridden)."""
    attributes = dict(entry.attributes)
    attributes["time"] = datetime.fromisoformat(attributes["time"])
    for name, value in overrides.items():
        if is_extension_name(name):
            attributes[name] = str(value)
    return CloudEvent(attributes, dict(entry.data))


@dataclass(frozen=True)
class DeliveryResult:
    delivered: bool
    retryable: bool  # False: the sink refused it for good (dead-letter it)
    status: int | None  # the last HTTP status, None for transport errors and the file sink
    error: str
    attempts: int  # how many requests were made

    @property
    def retries(self) -> int:
        return max(self.attempts - 1, 0)


class RetryableDeliveryError(Exception):
    """A transport error or a retryable status (Knative's list); `retry_after` from the answer, if any."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after")
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # an HTTP-date without a zone ("-0000", or none at all) is UTC (RFC 9110)
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


# A short answer is read so the client can keep the connection for the next delivery (an unread body closes
# it: one TCP connection per trigger, a quarter of the event loop's work at 100 alerts/s in BENCHMARKS.md).
# Only a body that says it is short, and only briefly: the status is already known, so a sink that drips
# its answer just loses the connection, never the delivery.
_DRAIN_MAX_BYTES = 64 * 1024
_DRAIN_S = 0.5
_DRAIN_MARGIN_S = 0.05


async def _drain_short_answer(response: aiohttp.ClientResponse, seconds: float) -> None:
    length = response.headers.get("content-length", "")
    if seconds <= 0 or not length.isdigit() or int(length) > _DRAIN_MAX_BYTES:
        return
    with contextlib.suppress(TimeoutError, aiohttp.ClientError):
        async with asyncio.timeout(seconds):
            await response.read()


class SinkClient:
    """Sends outbox entries to their sink (the policy's, else the default), or to the JSONL file."""

    def __init__(
        self,
        *,
        default_sink: str | None,
        jsonl_path: Path,
        overrides: Mapping[str, str] | None = None,
        timeout_s: float = 5.0,
        attempts: int = 6,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 10.0,
    ) -> None:
        self.default_sink = default_sink
        self.jsonl_path = jsonl_path
        self.overrides = {k: v for k, v in (overrides or {}).items() if is_extension_name(k)}
        ignored = sorted(set(overrides or {}) - set(self.overrides))
        if ignored:
            log.warning("K_CE_OVERRIDES names that are not valid extension names are ignored: %s", ignored)
        self._attempts = max(attempts, 1)
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._timeout_s = timeout_s
        # aiohttp, not httpx: a fifth of the CPU per request (bench/analysis.md, change 8). Created on first
        # use, inside the running loop it belongs to; no cookie jar (a sink's cookies must not follow us).
        self._http: aiohttp.ClientSession | None = None
        self._file_lock = threading.Lock()

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(
                cookie_jar=aiohttp.DummyCookieJar(),
                # The deadline in `_post` bounds each exchange; no second, looser total here.
                timeout=aiohttp.ClientTimeout(total=None),
            )
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def sink_for(self, entry: OutboxEntry) -> str | None:
        return entry.sink or self.default_sink

    async def deliver(self, entry: OutboxEntry, attempts: int | None = None) -> DeliveryResult:
        """Send one entry with up to `attempts` requests (default: the configured number)."""
        try:
            event = to_cloudevent(entry, self.overrides)
        except (BaseCloudEventException, ValueError, KeyError) as exc:
            return DeliveryResult(False, False, None, f"cannot encode the CloudEvent: {exc}", 0)
        url = self.sink_for(entry)
        if url is None:
            return await self._append_to_file(event)
        message = to_binary_event(event)
        tries = 0
        status: int | None = None
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(attempts or self._attempts),
                wait=self._wait,
                retry=retry_if_exception_type(RetryableDeliveryError),
                reraise=True,
            ):
                with attempt:
                    tries += 1
                    with tracing.span("delivery.attempt", attributes={"trm_sre.attempt": tries}) as span:
                        headers = {**message.headers, **tracing.carrier()}  # HTTP traceparent: this attempt
                        status = await self._post(url, headers, message.body)
                        if span is not None:
                            span.set_attribute("http.response.status_code", status)
        except RetryableDeliveryError as exc:
            return DeliveryResult(False, True, exc.status, str(exc), tries)
        if status is not None and 200 <= status < 300:
            return DeliveryResult(True, False, status, "", tries)
        return DeliveryResult(False, False, status, f"{url} answered {status}: not retryable", tries)

    async def _post(self, url: str, headers: dict[str, str], body: bytes) -> int:
        # Only the status (and Retry-After) matter: a long answer's body is never read, so a sink that drips
        # or streams one cannot hold a delivery slot. The deadline bounds the whole exchange, a slow trickle
        # included.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                async with self._session().post(url, headers=headers, data=body, allow_redirects=False) as response:
                    status = response.status
                    retry_after = _retry_after(response.headers)
                    await _drain_short_answer(response, min(_DRAIN_S, deadline - loop.time() - _DRAIN_MARGIN_S))
        except TimeoutError as exc:
            raise RetryableDeliveryError(f"{url}: no answer within {self._timeout_s:g}s") from exc
        except aiohttp.ClientError as exc:  # refused, reset, bad URL, protocol errors: the sink may be back soon
            raise RetryableDeliveryError(f"{url}: {type(exc).__name__}: {exc}") from exc
        if status >= 500 or status in RETRYABLE_STATUS:
            raise RetryableDeliveryError(f"{url} answered {status}", status, retry_after)
        return status

    def _wait(self, state: RetryCallState) -> float:
        """Exponential backoff with jitter, stretched to the sink's Retry-After (capped at the maximum).

        "Equal jitter": half the exponential step fixed, half random, so many
        producers retrying after one outage spread out but none retries at once.
        """
        step = min(self._backoff_initial_s * 2 ** min(state.attempt_number - 1, 30), self._backoff_max_s)
        delay = step / 2 + random.uniform(0, step / 2)
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RetryableDeliveryError) and exc.retry_after is not None:
            delay = max(delay, min(exc.retry_after, self._backoff_max_s))
        return delay

    async def _append_to_file(self, event: CloudEvent) -> DeliveryResult:
        line = JSONFormat().write(event).replace(b"\n", b" ") + b"\n"
        try:
            await asyncio.to_thread(self._append_line, line)
        except OSError as exc:
            return DeliveryResult(False, True, None, f"cannot append to {self.jsonl_path}: {exc}", 1)
        return DeliveryResult(True, False, None, "", 1)

    def _append_line(self, line: bytes) -> None:
        with self._file_lock:
            self.jsonl_path.parent.mkdir(parents=True, exist_ok=True)
            with self.jsonl_path.open("ab") as handle:
                handle.write(line)
                handle.flush()
                # Durable like an HTTP 2xx: the outbox entry is marked delivered right after this.
                os.fsync(handle.fileno())
