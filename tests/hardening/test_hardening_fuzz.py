"""Schemathesis against the served `/openapi.json` of a real server on loopback: at least 1,000 requests.

Every operation of the schema is fuzzed with schemathesis' Python API (v4:
`schemathesis.openapi.from_url`, one Hypothesis strategy per operation), with
data that fits the schema and data that does not. The claim (issue #6): no
response is a 5xx other than a deliberate 503 (overload: Retry-After set and the
body saying the server is overloaded; or `/readyz` saying why it is not ready).
A 503 for a store fault ("store unavailable", which is how every sqlite3 error
surfaces) is a failure: the store here is healthy (issue #13), the server never crashes, and `/healthz` is
healthy afterwards. The count of requests actually sent is asserted, so a
schema that silently stopped generating would fail the test.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.support.controllers import controller_in_thread, server_settings

TOKEN = "fuzz-" + "x" * 24
APPROVER = "fuzz-approver-" + "y" * 16
MIN_REQUESTS = 1_000
# Examples per operation and generation mode. Operations without inputs (the probes) yield one or two
# distinct requests whatever is asked; the routes with bodies and path parameters carry the count.
EXAMPLES = {GenerationMode.POSITIVE: 140, GenerationMode.NEGATIVE: 80}


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, threading.Thread, dict[str, Any]]]:
    """A controller in a thread with its own event loop (schemathesis calls it synchronously over HTTP)."""
    settings_ = server_settings(Path(tmp_path_factory.mktemp("fuzz")) / "state", token=TOKEN, approver_token=APPROVER)
    with controller_in_thread(settings_, attempts=6000, join_timeout=60) as target:
        yield target


# What the server says when it sheds load (controller/edge/limits.py, api.py): deliberate, and retried.
_OVERLOAD_DETAILS = ("overloaded", "too many requests in flight")


def _deliberate_unavailable(path: str, response: requests.Response) -> bool:
    """A 503 that is load shedding, not a fault: a store error is also 503 + Retry-After, and must not pass."""
    if response.status_code != 503:
        return False
    if path == "/readyz":
        return True
    if int(response.headers.get("retry-after", "0")) <= 0:
        return False
    try:
        detail = str(response.json().get("detail", ""))
    except ValueError:
        return False
    return detail.startswith(_OVERLOAD_DETAILS)


def test_a_thousand_generated_requests_yield_no_server_error(
    fuzz_target: tuple[str, threading.Thread, dict[str, Any]],
) -> None:
    url, thread, holder = fuzz_target
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    paths = {op.path for op in operations}
    assert {
        "/alertmanager",
        "/events",
        "/reason",
        "/approvals/{approval_id}",
        "/decisions/{decision_id}",
        "/healthz",
        "/readyz",
        "/metrics",
    } <= paths

    sent: collections.Counter[str] = collections.Counter()
    statuses: collections.Counter[int] = collections.Counter()
    server_errors: list[str] = []
    session = requests.Session()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    approver = {"Authorization": f"Bearer {APPROVER}"}  # /approvals takes its own credential

    def fuzz(operation: Any, mode: GenerationMode, examples: int) -> None:
        path = operation.path

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=examples,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            derandomize=True,
        )
        def call(case: schemathesis.Case) -> None:
            headers = approver if path.startswith("/approvals") else auth
            response = case.call(base_url=url, session=session, headers=headers, timeout=30)
            sent[path] += 1
            statuses[response.status_code] += 1
            if response.status_code >= 500 and not _deliberate_unavailable(path, response):
                server_errors.append(
                    f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:200]}"
                )

        try:
            call()
        except Unsatisfiable:
            # Nothing to break in an operation without inputs (the probes): no negative examples exist.
            assert mode is GenerationMode.NEGATIVE, path

    for operation in operations:
        for mode, examples in EXAMPLES.items():
            fuzz(operation, mode, examples)

    total = sum(sent.values())
    print(f"schemathesis sent {total} requests: {dict(sent)}; statuses {dict(sorted(statuses.items()))}")
    assert server_errors == []
    assert total >= MIN_REQUESTS, dict(sent)
    # The server did not crash, still answers, and counted no 500.
    assert thread.is_alive() and "exit" not in holder
    assert httpx.get(f"{url}/healthz", timeout=10).json() == {"status": "ok"}
    ready = httpx.get(f"{url}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    exposition = httpx.get(f"{url}/metrics", timeout=10).text
    served = sum(
        float(line.rsplit(" ", 1)[1])
        for line in exposition.splitlines()
        if line.startswith("agent_sre_http_requests_total{")
    )
    assert served >= total  # every generated request really reached the server
    assert 'code="500"' not in exposition


class _Answer:
    def __init__(self, status: int, detail: str, retry_after: str | None = "5") -> None:
        self.status_code = status
        self.headers = {"retry-after": retry_after} if retry_after else {}
        self._detail = detail

    def json(self) -> dict[str, str]:
        return {"detail": self._detail}


def test_the_check_tells_overload_from_a_store_fault() -> None:
    assert _deliberate_unavailable("/alertmanager", _Answer(503, "overloaded (queue full); retry later"))
    assert _deliberate_unavailable("/reason", _Answer(503, "too many requests in flight; retry later"))
    assert not _deliberate_unavailable("/alertmanager", _Answer(503, "store unavailable; retry later"))
    assert not _deliberate_unavailable("/alertmanager", _Answer(503, "overloaded", retry_after=None))
    assert not _deliberate_unavailable("/alertmanager", _Answer(500, "overloaded"))
    assert _deliberate_unavailable("/readyz", _Answer(503, "", retry_after=None))
