"""The HTTP transport for function-calling stages (`controller.decision.function_calling.ChatTransport`).

It lives outside the decision core because it does I/O: a streamed POST whose
reply is read up to a cap, so a misbehaving server cannot make the controller
buffer an unbounded body, and whose errors become `ReplyError` with a short
snippet of the server's answer for the decision trace.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from controller.decision.function_calling import MAX_ERROR_SNIPPET, MAX_RESPONSE_BYTES, ReplyError


class HttpChatTransport:
    """`ChatTransport` over a shared `httpx.AsyncClient` (redirects are never followed)."""

    def __init__(self, http: httpx.AsyncClient, limit: int = MAX_RESPONSE_BYTES) -> None:
        self.http = http
        self.limit = limit

    async def post_json(self, url: str, body: Mapping[str, Any], headers: Mapping[str, str]) -> bytes:
        return await post_capped(self.http, url, body, headers, self.limit)


async def post_capped(
    http: httpx.AsyncClient,
    url: str,
    body: Mapping[str, Any],
    headers: Mapping[str, str],
    limit: int = MAX_RESPONSE_BYTES,
) -> bytes:
    """POST JSON and read at most `limit` bytes of a 2xx reply; ReplyError otherwise."""
    try:
        async with http.stream("POST", url, json=body, headers=dict(headers)) as response:
            if response.status_code >= 400:
                snippet = await _read_prefix(response, MAX_ERROR_SNIPPET)
                text = snippet.decode("utf-8", "replace").replace("\n", " ")
                raise ReplyError("error", f"HTTP {response.status_code} from {url}: {text!r}")
            if response.status_code >= 300:
                raise ReplyError("error", f"HTTP {response.status_code} from {url} (redirects are not followed)")
            chunks, size = [], 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > limit:
                    raise ReplyError("invalid", f"the reply is larger than {limit} bytes")
                chunks.append(chunk)
            return b"".join(chunks)
    except httpx.HTTPError as exc:
        raise ReplyError("error", f"{type(exc).__name__} calling {url}: {str(exc)[:200]}") from exc


async def _read_prefix(response: httpx.Response, limit: int) -> bytes:
    data = b""
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) >= limit:
            break
    return data[:limit]
