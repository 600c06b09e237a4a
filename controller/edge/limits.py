"""Bounds on what one request may carry and how many are handled at once.

Every limit exists so one sender cannot exhaust the process; every refusal
names the limit it hit (`Limits` field), so a sender can fix its side. "Try
again later" is always 503 + Retry-After, never 429: Alertmanager retries only
5xx (prometheus/alertmanager#2121).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse

from controller.edge.config import Limits
from controller.schemas.alerts import AlertEvent


class LimitExceeded(ValueError):
    """A request is over one of the `Limits`; the message names the limit."""


class Slots:
    """Bounded concurrency: at most `max_in_flight` requests in the handlers; the rest wait briefly, then 503."""

    def __init__(self, limits: Limits) -> None:
        self._semaphore = asyncio.Semaphore(limits.max_in_flight)
        self._wait = limits.queue_wait_s
        self._retry_after = limits.retry_after_s

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        try:
            await asyncio.wait_for(self._semaphore.acquire(), timeout=self._wait)
        except TimeoutError:
            raise unavailable("too many requests in flight", self._retry_after) from None
        try:
            yield
        finally:
            self._semaphore.release()


def unavailable(reason: str, retry_after: int) -> HTTPException:
    return HTTPException(status_code=503, detail=f"{reason}; retry later", headers={"Retry-After": str(retry_after)})


def unavailable_response(reason: str, retry_after: int) -> JSONResponse:
    # 503, never 429: Alertmanager retries only 5xx (prometheus/alertmanager#2121).
    return JSONResponse(
        {"detail": f"{reason}; retry later"}, status_code=503, headers={"Retry-After": str(retry_after)}
    )


async def read_body(request: Request, limit: int, timeout_s: float | None = None) -> bytes:
    """The request body, refusing (413) once it passes `limit` bytes, whatever Content-Length claims.

    With `timeout_s`, the whole body must arrive within it (else 408): routes read it before
    taking a slot, so a sender that stalls mid-body holds no slot and not for long.
    """
    if timeout_s is None:
        return await _read_body(request, limit)
    try:
        async with asyncio.timeout(timeout_s):
            return await _read_body(request, limit)
    except TimeoutError:
        raise HTTPException(
            status_code=408,
            detail=f"the body did not arrive within {timeout_s:g} s (body_timeout_s)",
            headers={"Connection": "close"},
        ) from None


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(status_code=413, detail=f"body of {declared} bytes is over the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(status_code=413, detail=f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HTTPException(status_code=400, detail=f"{what}: body is not valid JSON ({exc})") from exc
    except RecursionError:  # `[[[[...` within the size limit: Python's parser recurses per level
        raise HTTPException(status_code=400, detail=f"{what}: body is nested too deeply") from None
    if not isinstance(doc, dict):
        raise HTTPException(status_code=400, detail=f"{what}: body must be a JSON object")
    return doc


def _check_map(kind: str, where: str, values: dict[str, str], max_count: int, max_value: int, limits: Limits) -> None:
    if len(values) > max_count:
        raise LimitExceeded(f"{where}: {len(values)} {kind}; the limit is {max_count} {kind} per alert (max_labels)")
    for name, value in values.items():
        if len(name) > limits.max_name_length:
            raise LimitExceeded(
                f"{where}: a {kind[:-1]} name is {len(name)} characters; the limit is {limits.max_name_length} "
                "(max_name_length)"
            )
        if len(value) > max_value:
            setting = "max_label_value_length" if kind == "labels" else "max_annotation_value_length"
            raise LimitExceeded(
                f"{where}: {kind[:-1]} {name[:64]!r} is {len(value)} characters; the limit is {max_value} ({setting})"
            )


def check_alert_limits(events: Iterable[AlertEvent], limits: Limits) -> None:
    for i, event in enumerate(events):
        where = f"alerts[{i}]"
        _check_map("labels", where, event.alert.labels, limits.max_labels, limits.max_label_value_length, limits)
        annotations = event.merged_annotations()
        _check_map("annotations", where, annotations, limits.max_labels, limits.max_annotation_value_length, limits)


def check_payload_size(doc: dict[str, Any], limits: Limits) -> None:
    """Count alerts before validating them all: a cheap guard against oversized groups."""
    alerts = doc.get("alerts")
    if isinstance(alerts, list) and len(alerts) > limits.max_alerts:
        raise LimitExceeded(
            f"payload has {len(alerts)} alerts; the limit is {limits.max_alerts} alerts per payload (max_alerts); "
            "set max_alerts in Alertmanager's webhook_config"
        )
